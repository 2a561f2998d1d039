"""Off-UI-thread rendering for :class:`~app.widgets.image_view.ImageView`: the frame a job returns and the jobs.

:func:`load_frame` runs in the :class:`~app.workers.Runner`: it decodes (through
the loader's shared frame cache), renders and measures one frame, and hands
back a :class:`LoadedFrame` that also carries the decoded stored values, so
the view's pixel readout and window/level changes need no further file access.
:func:`rerender` / :func:`timed_rerender` render that held frame with another
window, on the UI thread or in the runner; :func:`pixel_readout` is the view's
readout of a held frame (no Qt here, only numpy and core).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from core.errors import DamagedImageError
from core.imaging import loader
from core.imaging.display import DisplayParams, apply_modality_lut, render_array
from core.imaging.photo import radiograph_frame
from core.types import RADIOGRAPH_MODALITIES, ImageRecord

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedFrame:
    """What the worker hands back: the rendered frame plus what the UI needs around it."""

    path: str
    frame: int
    frames: int
    kind: str  # "dicom" | "photo"
    modality: str
    image: np.ndarray  # uint8 (H, W) or (H, W, 3), as core.imaging renders it
    raw: np.ndarray  # the decoded stored values
    params: Optional[DisplayParams]
    value_range: tuple[float, float] = (0.0, 255.0)  # modality min/max
    robust_range: tuple[float, float] = (0.0, 255.0)  # 0.5th..99.5th percentile
    render_ms: float = 0.0

    @property
    def grayscale_dicom(self) -> bool:
        """True when window/level applies."""
        return self.params is not None and not self.params.is_color and self.raw.ndim == 2


def _decoded(path: str, frame: int):
    """(kind, raw, params) from the loader's frame cache (decoding only on a miss)."""
    return loader.decoded_frame(path, frame)  # shared cache: render() and model_input() reuse the decode


#: Prefix of a failure message that means "the pixel data is damaged" (the view shows a blocking banner).
DAMAGED_PREFIX = "DAMAGED: "


def load_frame(path: str, frame: int, window, voi_index: int, record: Optional[ImageRecord]) -> LoadedFrame:
    """Worker job: decode (cached), render and measure one frame. Raises what core.imaging raises;
    damaged pixel data raises DamagedImageError with :data:`DAMAGED_PREFIX` before its reason."""
    try:
        kind, raw, params = _decoded(path, frame)
    except DamagedImageError as exc:
        raise DamagedImageError(DAMAGED_PREFIX + str(exc), key=exc.key) from None
    if kind == "photo" and record is not None and record.modality in RADIOGRAPH_MODALITIES:
        raw, params = radiograph_frame(raw, record)  # a PNG/JPEG radiograph: windowed like a DICOM one
    elif kind == "photo":
        image = loader.render(path, frame)
        return LoadedFrame(path, frame, loader.frame_count(path), kind, "XC", image, raw, None)
    t0 = time.perf_counter()
    image = render_array(raw, params, window=window, voi_index=voi_index)
    render_ms = (time.perf_counter() - t0) * 1000
    record = record or loader.read_image_header(path)
    out = LoadedFrame(path, frame, max(1, record.frames), kind, record.modality or "", image, raw, params,
                      render_ms=render_ms)
    if raw.ndim == 2 and not params.is_color:
        step = max(1, int(math.sqrt(raw.size / 250_000)))
        sample = apply_modality_lut(raw[::step, ::step], params)
        ends = apply_modality_lut(np.array([raw.min(), raw.max()], dtype=raw.dtype), params)
        lo, hi = (float(ends.min()), float(ends.max())) if params.modality_lut is None else \
            (float(sample.min()), float(sample.max()))
        p_lo, p_hi = (float(v) for v in np.percentile(sample, (0.5, 99.5)))
        out = replace(out, value_range=(lo, hi), robust_range=(p_lo, p_hi if p_hi > p_lo else p_lo + 1))
    return out


def rerender(frame: LoadedFrame, window, voi_index: int) -> np.ndarray:
    """Worker/UI job: the held raw frame rendered with another window (no file access)."""
    return render_array(frame.raw, frame.params, window=window, voi_index=voi_index)


def timed_rerender(frame: LoadedFrame, window, voi_index: int) -> tuple[np.ndarray, float]:
    """:func:`rerender` plus its duration in ms, so the view can switch to synchronous renders."""
    t0 = time.perf_counter()
    image = rerender(frame, window, voi_index)
    return image, (time.perf_counter() - t0) * 1000


def pixel_readout(frame: Optional[LoadedFrame], x: int, y: int) -> str:
    """The readout for image pixel (x, y) of ``frame``: stored/modality/display for DICOM, RGB for colour.

    "" when there is no frame; (x, y) must lie inside the image.
    """
    f = frame
    if f is None:
        return ""
    head = f"x {x} y {y}"
    raw = f.raw[y, x]
    if np.ndim(raw) == 1:
        return f"{head} · RGB " + ",".join(str(int(v)) for v in raw[:3])
    if f.kind == "photo":
        return f"{head} · value {raw:g}"
    mod = float(apply_modality_lut(np.asarray([[raw]], dtype=f.raw.dtype), f.params)[0, 0])
    unit = f.params.rescale_type or ("HU" if f.modality.upper() == "CT" else "")
    return f"{head} · stored {raw:g} · modality {mod:g}{' ' + unit if unit else ''} · display {int(f.image[y, x])}"
