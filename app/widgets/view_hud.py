"""Painting helpers for :class:`~app.widgets.image_view.ImageView`: corner annotations, badge, spinner, pyramid.

The head-up display is drawn over the image in widget coordinates: the
window/zoom/frame/orientation lines top-left, an optional badge top-right, a
busy spinner with its text bottom-left, the overlay's legend bottom-right and
a loading / error message in the centre. Text gets a dark halo so it stays
readable over bright image areas. :func:`pyramid_level` keeps strong
zoom-out free of aliasing by painting from area-averaged 2^k copies.
"""

from __future__ import annotations

import logging
from typing import Optional

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QImage, QPainter, QPen

from app.theme import COLORS
from app.widgets.colormaps import draw_legend
from app.widgets.render_job import LoadedFrame

logger = logging.getLogger(__name__)

#: Colour of the corner annotations.
TEXT_COLOUR = "#d6d8dc"
#: Margin between the widget's edge and the annotations, in pixels.
MARGIN = 8


def pyramid_level(cache: dict[tuple[str, int], QImage], which: str, img: QImage,
                  scale: float) -> tuple[QImage, float]:
    """A 2^k-downsampled copy of ``img`` for strong zoom-out (area-averaged, so no aliasing).

    ``scale`` is device pixels per image pixel; copies are kept in ``cache`` under ``(which, k)``.
    Returns (image to draw, image pixels per pixel of that image).
    """
    k = 0
    while scale * (2 ** (k + 1)) <= 1.0 and min(img.width(), img.height()) >> (k + 1) >= 32:
        k += 1
    if k == 0:
        return img, 1.0
    key = (which, k)
    if key not in cache:
        cache[key] = img.scaled(img.width() >> k, img.height() >> k, Qt.IgnoreAspectRatio,
                                Qt.SmoothTransformation)
    small = cache[key]
    return small, img.width() / small.width()


def hud_lines(window: Optional[tuple[float, float]], frame: Optional[LoadedFrame], zoom: Optional[float],
              orientation: tuple[int, bool], inverted: bool) -> list[str]:
    """The top-left annotation lines: window (or "VOI LUT"), zoom (None: no image), frame, orientation."""
    lines = []
    if window is not None:
        lines.append(f"W {window[1]:.0f}  L {window[0]:.0f}")
    elif frame is not None and frame.grayscale_dicom:
        lines.append("VOI LUT")
    if zoom is not None:
        lines.append(f"Zoom {zoom * 100:.0f}%")
    if frame is not None and frame.frames > 1:
        lines.append(f"Frame {frame.frame + 1}/{frame.frames}")
    turns, mirrored = orientation
    if turns or mirrored or inverted:
        lines.append(" · ".join(filter(None, (f"Rot {turns * 90}°" if turns else "", "Mirrored" if mirrored else "",
                                               "Inverted" if inverted else ""))))
    return lines


def paint_hud(p: QPainter, rect: QRectF, lines: list[str], badge: Optional[tuple[str, QColor]] = None,
              busy: Optional[str] = None, spin: int = 0, legend_cmap: Optional[str] = None,
              status: Optional[tuple[str, str]] = None) -> None:
    """Paint the annotations inside widget rectangle ``rect`` (the margin is applied here).

    ``badge`` is (text, colour) top-right; ``busy`` the spinner's text (``spin`` its angle in degrees);
    ``legend_cmap`` the overlay colour map whose legend is shown; ``status`` (text, colour) centred.
    """
    text_colour = QColor(TEXT_COLOUR)
    m = MARGIN
    r = QRectF(rect).adjusted(m, m, -m, -m)
    p.setPen(text_colour)
    if lines:
        text_box(p, r, Qt.AlignLeft | Qt.AlignTop, "\n".join(lines), text_colour)
    if badge:
        text, colour = badge
        box = p.fontMetrics().boundingRect(text).adjusted(-8, -4, 8, 4)
        box.moveTopRight(r.topRight().toPoint())
        p.setPen(Qt.NoPen)
        p.setBrush(colour)
        p.drawRoundedRect(QRectF(box), 4, 4)
        p.setPen(QColor("#ffffff"))
        p.drawText(QRectF(box), Qt.AlignCenter, text)
    if busy:
        fm = p.fontMetrics()
        d = fm.height()
        y = r.bottom() - d
        p.setPen(QPen(QColor(COLORS["accent"]), 2))
        p.drawArc(QRectF(r.left(), y, d, d), -spin * 16, 270 * 16)
        text_box(p, QRectF(r.left() + d + 6, y - 4, r.width() / 2, d + 8), Qt.AlignLeft | Qt.AlignVCenter,
                 busy, text_colour)
    if legend_cmap is not None:
        lw = min(220.0, r.width() * 0.4)
        draw_legend(p, QRectF(r.right() - lw, r.bottom() - 34, lw, 34), legend_cmap, text_colour)
    if status:
        text, colour = status
        p.setPen(QColor(colour))
        p.drawText(r, Qt.AlignCenter | Qt.TextWordWrap, text)


def text_box(p: QPainter, r: QRectF, align, text: str, colour: QColor) -> None:
    """Text with a dark halo so it stays readable over bright image areas."""
    p.setPen(QColor(0, 0, 0, 200))
    for dx, dy in ((1, 1), (-1, 1), (1, -1), (-1, -1)):
        p.drawText(r.translated(dx, dy), align, text)
    p.setPen(colour)
    p.drawText(r, align, text)
