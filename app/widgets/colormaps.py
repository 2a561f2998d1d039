"""Colour maps for attribution overlays, numpy → QImage conversion and the legend strip.

Explainers return float maps in [0, 1] (see STYLE.md: colour maps are applied
in ``app`` only); this module turns such a map into an RGBA image whose alpha
is the map value itself, so low-attribution areas stay clear and the viewer
only has to multiply by the chosen opacity when painting.

The maps are built from 17 control points sampled from matplotlib's
``inferno``/``viridis`` (matplotlib is a bench-only dependency, so the points
are embedded) and the classic analytic ``jet``; 256-entry tables are
interpolated linearly between them.
"""

from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QFont, QImage, QLinearGradient, QPainter, QPen

logger = logging.getLogger(__name__)

_POINTS = {
    "inferno": "000004 0b0724 210c4a 3d0965 57106e 71196e 8a226a a32c61 bc3754 d24644 "
    "e45a31 f1731d f98e09 fcac11 f9cb35 f2ea69 fcffa4",
    "viridis": "440154 48186a 472d7b 424086 3b528b 33638d 2c728e 26828e 21918c 1fa088 "
    "28ae80 3fbc73 5ec962 84d44b addc30 d8e219 fde725",
}

#: Names accepted by :func:`colormap_lut` and :meth:`ImageView.set_overlay`.
COLORMAPS = ("jet", "inferno", "viridis")


@lru_cache(maxsize=None)
def colormap_lut(name: str) -> np.ndarray:
    """A (256, 3) uint8 RGB table for ``name`` (one of :data:`COLORMAPS`).

    Raises ValueError for an unknown name.
    """
    t = np.linspace(0.0, 1.0, 256)
    if name == "jet":
        # The classic piecewise-linear MATLAB jet.
        rgb = np.stack([np.clip(1.5 - np.abs(4 * t - k), 0, 1) for k in (3, 2, 1)], axis=1)
    elif name in _POINTS:
        pts = np.array([[int(h[i : i + 2], 16) for i in (0, 2, 4)] for h in _POINTS[name].split()], float) / 255
        xp = np.linspace(0.0, 1.0, len(pts))
        rgb = np.stack([np.interp(t, xp, pts[:, c]) for c in range(3)], axis=1)
    else:
        raise ValueError(f"unknown colour map {name!r}; choose one of {', '.join(COLORMAPS)}")
    lut = np.round(rgb * 255).astype(np.uint8)
    lut.setflags(write=False)
    return lut


def colorize(map01: np.ndarray, name: str = "jet") -> np.ndarray:
    """An attribution map in [0, 1] → (H, W, 4) uint8 RGBA; alpha is the map value.

    NaNs count as 0. Raises ValueError for a map that is not 2-D or an unknown
    colour map.
    """
    m = np.asarray(map01, dtype=np.float32)
    if m.ndim != 2:
        raise ValueError(f"an overlay map must be 2-D (H, W), got shape {m.shape}")
    idx = np.rint(np.nan_to_num(np.clip(m, 0.0, 1.0), nan=0.0) * 255).astype(np.uint8)
    out = np.empty(m.shape + (4,), dtype=np.uint8)
    out[..., :3] = colormap_lut(name)[idx]
    out[..., 3] = idx
    return out


def to_qimage(arr: np.ndarray) -> QImage:
    """(H, W) uint8 gray, (H, W, 3) RGB or (H, W, 4) RGBA → a QImage owning a copy of the pixels."""
    a = np.ascontiguousarray(arr, dtype=np.uint8)
    h, w = a.shape[:2]
    fmt = {2: QImage.Format_Grayscale8}.get(a.ndim) or {3: QImage.Format_RGB888, 4: QImage.Format_RGBA8888}[a.shape[2]]
    # QImage wraps the numpy buffer without owning it; copy() detaches it.
    return QImage(a.data, w, h, a.strides[0], fmt).copy()


def draw_legend(painter: QPainter, rect: QRectF, name: str, text_colour: QColor) -> None:
    """Paint a horizontal 0 → 1 colour bar for ``name`` in ``rect`` (widget coordinates).

    The bar fills the upper part of ``rect``; "0", "1" and "low → high
    attribution" are written beneath it.
    """
    lut = colormap_lut(name)
    bar = QRectF(rect.left(), rect.top(), rect.width(), max(6.0, rect.height() * 0.35))
    grad = QLinearGradient(bar.topLeft(), bar.topRight())
    for i in range(0, 256, 16):
        grad.setColorAt(i / 255, QColor(*(int(v) for v in lut[i])))
    grad.setColorAt(1.0, QColor(*(int(v) for v in lut[255])))
    painter.save()
    painter.fillRect(rect.adjusted(-6, -6, 6, 4), QColor(0, 0, 0, 150))
    # drawRect with the gradient as brush: PySide6 resolves fillRect(rect, gradient-brush) to the
    # painter's current brush once one is set, painting a flat colour.
    painter.setPen(QPen(QColor(255, 255, 255, 90), 1))
    painter.setBrush(QBrush(grad))
    painter.drawRect(bar)
    font = QFont(painter.font())
    font.setPointSizeF(max(7.0, font.pointSizeF() * 0.85))
    painter.setFont(font)
    painter.setPen(text_colour)
    text = QRectF(rect.left(), bar.bottom() + 1, rect.width(), rect.bottom() - bar.bottom())
    painter.drawText(text, Qt.AlignLeft | Qt.AlignTop, "0")
    painter.drawText(text, Qt.AlignRight | Qt.AlignTop, "1")
    painter.drawText(text, Qt.AlignHCenter | Qt.AlignTop, "low → high attribution")
    painter.restore()
