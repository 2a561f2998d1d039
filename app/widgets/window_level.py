"""Window/level choices for a :class:`~app.widgets.render_job.LoadedFrame`: the window in effect, the presets.

Window presets: the header's Window Center/Width pairs (the same parse as
``core.imaging.window_presets``, taken from the decoded frame's params) come first, then "Full
range", then, for CR/DX, "Lung", "Mediastinum" and "Bone". A radiograph's
values carry no physical unit (unlike CT's HU), so these three are expressed
as fractions of the image's robust value range (0.5th–99.5th percentile of
the modality values) along the density axis: dense tissue is bright, i.e.
high values for MONOCHROME2 and low values for MONOCHROME1 / inverse
presentation. They are heuristics for a first look, not calibrated windows.

Pure functions (no Qt), used by :class:`~app.widgets.image_view.ImageView`.
"""

from __future__ import annotations

import logging
from typing import Optional

from app.widgets.render_job import LoadedFrame

logger = logging.getLogger(__name__)

CHEST_MODALITIES = ("CR", "DX")
#: (name, center, width) as fractions of the robust range along the density axis.
CHEST_PRESETS = (("Lung", 0.40, 0.80), ("Mediastinum", 0.70, 0.45), ("Bone", 0.80, 0.30))


def effective_window(f: Optional[LoadedFrame], window: Optional[tuple[float, float]],
                     voi_index: int) -> Optional[tuple[float, float]]:
    """The (center, width) in effect for frame ``f``, in modality units.

    ``window`` is an explicit choice (or None for the header's VOI choice ``voi_index``).
    Returns None for no frame, photos, colour or a VOI LUT.
    """
    if f is None or not f.grayscale_dicom:
        return None
    if window is not None:
        return window
    p = f.params
    if p.voi_luts or p.windows:
        if voi_index < len(p.voi_luts):
            return None
        w = p.windows[voi_index - len(p.voi_luts)]
        return (w.center, w.width)
    lo, hi = f.value_range  # full range, as the pipeline's fallback maps it
    return ((lo + hi + 1) / 2, hi - lo + 1)


def window_presets(f: Optional[LoadedFrame]) -> list[tuple[str, float, float]]:
    """(name, center, width) choices for ``f``: header windows, "Full range", then chest presets for CR/DX.

    Empty for no frame or a frame window/level does not apply to.
    """
    if f is None or not f.grayscale_dicom:
        return []
    out = [(w.name or f"Header {i + 1}", w.center, w.width) for i, w in enumerate(f.params.windows)]
    lo, hi = f.value_range
    out.append(("Full range", (lo + hi + 1) / 2, hi - lo + 1))
    if f.modality.upper() in CHEST_MODALITIES:
        p_lo, p_hi = f.robust_range
        span = p_hi - p_lo
        for name, c, w in CHEST_PRESETS:
            center = p_hi - c * span if f.params.inverted else p_lo + c * span
            out.append((name, center, w * span))
    return out


def next_preset_index(presets: list[tuple[str, float, float]], current: Optional[tuple[float, float]]) -> int:
    """Index of the preset after the one matching ``current`` (the first when none matches); presets non-empty."""
    idx = next((i for i, p in enumerate(presets) if current and (p[1], p[2]) == current), -1)
    return (idx + 1) % len(presets)
