"""Public entry points: one call per question the app or the models ask of an image file.

DICOM and photographs are told apart by content, never by extension. Decoded
frames are kept in a byte-bounded LRU cache (:data:`FRAME_CACHE`) keyed by
path, mtime, size and frame, so paging through images does not decode twice.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from typing import Hashable, Optional, Sequence, Union

import numpy as np
from PIL import Image

from core.errors import ImageReadError
from core.imaging import decode_pool, dicom_io, photo
from core.imaging.cache import FrameCache, frame_key
from core.imaging.display import (
    DisplayParams,
    apply_table,
    display_float,
    display_table,
    table_range,
    to_uint8,
    voi_choices,
)
from core.imaging.scan import ScanResult, scan_paths
from core.imaging.sniff import NOT_AN_IMAGE, image_kind
from core.types import ImageRecord, WindowPreset

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

#: Decoded frames shared by every caller in this process (512 MiB).
FRAME_CACHE = FrameCache()

#: Display lookup tables of recent renders, keyed by (frame key, window,
#: voi_index); each is at most LUT_MAX_ENTRIES bytes, so this stays small.
TABLE_CACHE_SIZE = 64
_TABLES: "OrderedDict[Hashable, Optional[tuple[int, np.ndarray]]]" = OrderedDict()
_TABLES_LOCK = threading.Lock()
#: Each cached frame's table_range (None: the frame takes the float path).
_RANGES: "OrderedDict[Hashable, Optional[tuple[int, int]]]" = OrderedDict()


def read_image_header(path: PathLike) -> ImageRecord:
    """Header record of a DICOM file or photograph, without decoding pixels.

    Takes a path. Returns an :class:`ImageRecord` (kind 'dicom' or 'photo').
    Raises :class:`ImageReadError` (or :class:`~core.errors.DicomReadError`)
    with a plain reason for anything that is not a readable image.
    """
    if image_kind(path) == "photo":
        return photo.read_photo_header(path)
    return dicom_io.read_header(path)


def decoded_frame(path: PathLike, frame: int = 0) -> tuple[str, np.ndarray, Optional[DisplayParams]]:
    """One decoded frame from the shared LRU cache: (kind 'dicom'|'photo', stored pixels (read-only),
    DisplayParams for DICOM else None). The viewer uses it for pixel read-outs and fast re-windowing.
    Raises what :func:`render` raises."""
    return _decoded(path, frame)


def _decoded(path: PathLike, frame: int) -> tuple[str, np.ndarray, Optional[DisplayParams]]:
    return _decoded_keyed(path, frame)[1]


def _decoded_keyed(path: PathLike, frame: int) -> tuple[Hashable, tuple[str, np.ndarray, Optional[DisplayParams]]]:
    kind = image_kind(path)
    try:
        key = frame_key(path, frame)
    except OSError as exc:
        raise ImageReadError(f"cannot read file: {exc.strerror or exc}") from exc
    key = (kind,) + key

    def load() -> tuple[str, np.ndarray, Optional[DisplayParams]]:
        if kind == "photo":
            from core.imaging.integrity import check_photo

            check_photo(path)  # a JPEG cut short decodes without complaint: prove it whole before showing it
            return kind, photo.decode_photo(path, frame), None
        raw, params = decode_pool.decode_frame(path, frame)  # compressed: in a worker process when enabled
        return kind, raw, params

    return key, FRAME_CACHE.get_or_load(key, load)


def _unit(path: PathLike, frame: int, window: Optional[Sequence[float]], voi_index: int) -> np.ndarray:
    kind, raw, params = _decoded(path, frame)
    if kind == "photo":
        return photo.photo_to_unit(raw)
    assert params is not None
    return display_float(raw, params, window=window, voi_index=voi_index)


def render(
    path: PathLike,
    frame: int = 0,
    window: Optional[Sequence[float]] = None,
    voi_index: int = 0,
) -> np.ndarray:
    """What a PACS viewer shows at full resolution, as uint8.

    Takes a path, a 0-based frame, an optional explicit ``(center, width)``
    window (in modality units, overriding the header) and ``voi_index`` into
    :func:`voi_options` (ignored for photographs). Returns (H, W) uint8 for
    grayscale, (H, W, 3) uint8 RGB for colour. Raises
    :class:`ImageReadError` / :class:`~core.errors.DicomReadError` /
    :class:`~core.errors.UnsupportedTransferSyntax` for unreadable files and
    ValueError for a ``voi_index`` the header does not have.
    """
    key, (kind, raw, params) = _decoded_keyed(path, frame)
    if kind == "photo":
        return to_uint8(photo.photo_to_unit(raw))
    assert params is not None
    table = _table(key, raw, params, window, voi_index)
    if table is not None:
        return apply_table(raw, *table)
    return to_uint8(display_float(raw, params, window=window, voi_index=voi_index))


def _remember(cache: OrderedDict, key: Hashable, value: object) -> None:
    with _TABLES_LOCK:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > TABLE_CACHE_SIZE:
            cache.popitem(last=False)


def _table(
    frame: Hashable,
    raw: np.ndarray,
    params: DisplayParams,
    window: Optional[Sequence[float]],
    voi_index: int,
) -> Optional[tuple[int, np.ndarray]]:
    """The display table of a decoded frame at this window/VOI (see
    :func:`~core.imaging.display.display_table`), from :data:`_TABLES` when a
    recent render built it. None: the frame takes the float path."""
    key: Optional[Hashable] = None  # an odd window/voi_index: build uncached and let the pipeline raise as it does
    if isinstance(voi_index, (int, np.integer)):
        try:
            key = (frame, None if window is None else tuple(float(v) for v in window), int(voi_index))
        except (TypeError, ValueError):
            key = None
    if key is not None:
        with _TABLES_LOCK:
            if key in _TABLES:
                _TABLES.move_to_end(key)
                return _TABLES[key]
            known = frame in _RANGES
            rng = _RANGES.get(frame)
    else:
        known, rng = False, None
    if not known:
        rng = table_range(raw, params)
        _remember(_RANGES, frame, rng)
    table = None if rng is None else display_table(raw, params, window=window, voi_index=voi_index, value_range=rng)
    if key is not None:
        _remember(_TABLES, key, table)
    return table


def _resize(x: np.ndarray, size: int) -> np.ndarray:
    def one(channel: np.ndarray) -> np.ndarray:
        im = Image.fromarray(np.ascontiguousarray(channel, dtype=np.float32))
        # Pillow scales the bilinear kernel's support with the reduction
        # factor, so downsizing averages the covered area (antialiased).
        return np.asarray(im.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)

    if x.ndim == 2:
        out = one(x)
    else:
        out = np.stack([one(x[..., c]) for c in range(x.shape[2])], axis=-1)
    return np.clip(out, 0.0, 1.0)


def model_input(path: PathLike, frame: int = 0, size: Optional[int] = None) -> np.ndarray:
    """The model's view of an image: float32 in [0, 1], (H, W) grayscale or (H, W, 3) RGB.

    Training and inference both call exactly this function, so the model
    always sees what it was trained on. DICOM goes through the display
    pipeline's default path (Modality LUT → default VOI, i.e. the same choice
    :func:`render` makes without arguments → MONOCHROME1 inversion) but stays
    in float, never quantised to 8 bits. Photographs: 8-bit / 255, deeper
    grayscale over its min..max. With ``size``, the result is resized to
    ``size × size`` (antialiased bilinear per channel, in float).
    Raises what :func:`render` raises, and ValueError for ``size < 1``.
    """
    if size is not None and int(size) < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    x = _unit(path, frame, None, 0)
    if size is not None:
        x = _resize(x, int(size))
    return np.array(x, dtype=np.float32, copy=True)


def window_presets(path: PathLike) -> tuple[WindowPreset, ...]:
    """The Window Center/Width presets a DICOM header lists (every one, with names).

    Returns an empty tuple for photographs and for DICOM without windows.
    Raises :class:`ImageReadError` for unreadable files.
    """
    if image_kind(path) == "photo":
        return ()
    ds, _ = dicom_io.read_dataset(path, header_only=True)
    return dicom_io.window_presets_from(ds)


def voi_options(path: PathLike) -> list[str]:
    """Names of the VOI choices ``voi_index`` selects in :func:`render` (VOI LUTs, then windows).

    Returns an empty list for photographs and for DICOM with neither.
    Raises :class:`ImageReadError` for unreadable files.
    """
    if image_kind(path) == "photo":
        return []
    from core.imaging.display import display_params

    ds, _ = dicom_io.read_dataset(path)
    return voi_choices(display_params(ds))


def frame_count(path: PathLike) -> int:
    """Number of frames (DICOM Number of Frames, TIFF pages; 1 otherwise).

    Raises :class:`ImageReadError` for unreadable files.
    """
    if image_kind(path) == "photo":
        return photo.photo_frame_count(path)
    return dicom_io.dicom_frame_count(path)


def clear_cache() -> None:
    """Forget every decoded frame held by :data:`FRAME_CACHE` and every display table."""
    FRAME_CACHE.clear()
    with _TABLES_LOCK:
        _TABLES.clear()
        _RANGES.clear()
