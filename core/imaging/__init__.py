"""Reading and displaying medical images: DICOM and photographs.

Public entry points (see :mod:`core.imaging.loader`)::

    read_image_header(path) -> ImageRecord
    render(path, frame=0, window=None, voi_index=0) -> uint8 array
    model_input(path, frame=0, size=None) -> float32 array in [0, 1]
    window_presets(path), voi_options(path), frame_count(path)
    scan_paths(paths, progress=None, cancel=None) -> ScanResult

The display pipeline itself is pure numpy in :mod:`core.imaging.display`.
"""

from core.imaging.display import DisplayParams, display_params, render_array
from core.imaging.dicom_io import check_decodable, check_transfer_syntax, decode_frame, read_header
from core.imaging.loader import (
    FRAME_CACHE,
    clear_cache,
    frame_count,
    image_kind,
    model_input,
    read_image_header,
    render,
    voi_options,
    window_presets,
)
from core.imaging.scan import ScanResult, scan_paths

__all__ = [
    "DisplayParams",
    "FRAME_CACHE",
    "ScanResult",
    "check_decodable",
    "check_transfer_syntax",
    "clear_cache",
    "decode_frame",
    "display_params",
    "frame_count",
    "image_kind",
    "model_input",
    "read_header",
    "read_image_header",
    "render",
    "render_array",
    "scan_paths",
    "voi_options",
    "window_presets",
]
