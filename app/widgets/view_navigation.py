"""Zoom, pan, rotate/flip/invert and mouse interaction for :class:`~app.widgets.image_view.ImageView`.

Mouse: left or middle drag pans, right drag is window/level (right = wider,
down = higher center, i.e. darker; ``WL_DRAG_PIXELS`` pixels move by the
robust value range), wheel zooms around the cursor, double-click fits.
Zoom is reported per *device* pixel, so "1:1" is one image pixel per screen
pixel on high-DPI screens too.

Rotate, flip, invert and zoom are *view-only* transforms: they change what is
painted, never the pixels handed to models, the overlay's geometry (it is
painted through the same transform) nor anything stored.

:class:`ViewNavigationMixin` is written for ImageView only: it uses the view's
state (``_qimage``, ``_frame``, ``_scale``, ``_focus``, ``_orient``, ``_fitted``,
``_inverted``, ``_side_by_side``, ``_pyramid``, ``_drag``, ``_last_info``), its
signals ``view_changed`` and ``pixel_info``, and its :meth:`window`,
:meth:`set_window` and :meth:`pixel_text`.
"""

from __future__ import annotations

import logging
import math
from typing import Optional

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QTransform

logger = logging.getLogger(__name__)

#: Window/level drag: this many screen pixels move the width/center by the whole robust range.
WL_DRAG_PIXELS = 600.0
ZOOM_STEP = 1.25


class ViewNavigationMixin:
    """View geometry (image ↔ widget), zoom/pan/orientation and the mouse handlers of ImageView."""

    # ------------------------------------------------------------------ view transform
    def _image_size(self) -> tuple[int, int]:
        return (self._qimage.width(), self._qimage.height()) if self._qimage else (1, 1)

    def _panes(self) -> list[QRectF]:
        r = QRectF(self.rect())
        if not self._side_by_side:
            return [r]
        half = r.width() / 2
        return [QRectF(r.left(), r.top(), half - 1, r.height()), QRectF(r.left() + half + 1, r.top(), half - 1, r.height())]

    def _transform(self, pane: QRectF) -> QTransform:
        """Image pixel coordinates → widget coordinates inside ``pane``."""
        c = pane.center()
        return (QTransform.fromTranslate(-self._focus.x(), -self._focus.y()) * self._orient
                * QTransform.fromScale(self._scale, self._scale) * QTransform.fromTranslate(c.x(), c.y()))

    def map_to_image(self, pos: QPointF) -> Optional[tuple[int, int]]:
        """Widget position → (x, y) image pixel, or None outside the image (or with no image)."""
        if self._qimage is None:
            return None
        pane = next((p for p in self._panes() if p.contains(pos)), None)
        if pane is None:
            return None
        inv, ok = self._transform(pane).inverted()
        pt = inv.map(QPointF(pos))
        x, y = math.floor(pt.x()), math.floor(pt.y())
        w, h = self._image_size()
        return (x, y) if ok and 0 <= x < w and 0 <= y < h else None

    def zoom(self) -> float:
        """Image pixels per *device* pixel (1.0 = 1:1 on a high-DPI screen too)."""
        return self._scale * self.devicePixelRatioF()

    def fit(self) -> None:
        """Fit the whole (rotated) image into the pane, centred."""
        w, h = self._image_size()
        box = self._orient.mapRect(QRectF(0, 0, w, h))
        pane = self._panes()[0]
        self._scale = max(1e-3, min(pane.width() / box.width(), pane.height() / box.height()))
        self._focus, self._fitted = QPointF(w / 2, h / 2), True
        self._view_changed()

    def set_zoom(self, zoom: float, anchor: Optional[QPointF] = None) -> None:
        """Set :meth:`zoom`, keeping the image point under ``anchor`` (widget coords) still."""
        zoom = max(0.02, min(64.0, float(zoom)))
        new_scale = zoom / self.devicePixelRatioF()
        if anchor is not None and self._qimage is not None:
            pane = next((p for p in self._panes() if p.contains(anchor)), self._panes()[0])
            p_img = self._transform(pane).inverted()[0].map(anchor)
            # widget = centre + scale·orient·(p − focus): keep p_img under the anchor
            self._focus = p_img - (p_img - self._focus) * (self._scale / new_scale)
        self._scale, self._fitted = new_scale, False
        self._view_changed()

    def zoom_in(self, anchor: Optional[QPointF] = None) -> None:
        """Zoom in one step (around ``anchor`` when given)."""
        self.set_zoom(self.zoom() * ZOOM_STEP, anchor)

    def zoom_out(self, anchor: Optional[QPointF] = None) -> None:
        """Zoom out one step."""
        self.set_zoom(self.zoom() / ZOOM_STEP, anchor)

    def rotate(self, quarter_turns: int = 1) -> None:
        """Rotate the *view* clockwise by 90° steps (view-only; pixels and overlay geometry unchanged)."""
        self._orient = self._orient * QTransform().rotate(90 * quarter_turns)
        self._refit_or_update()

    def flip(self, horizontal: bool = True) -> None:
        """Mirror the *view* left-right (or top-bottom) as currently displayed (view-only)."""
        self._orient = self._orient * QTransform.fromScale(-1 if horizontal else 1, 1 if horizontal else -1)
        self._refit_or_update()

    def set_inverted(self, on: bool) -> None:
        """Invert the displayed grey levels (view-only; readout reports the pipeline's display value)."""
        if bool(on) != self._inverted:
            self._inverted = bool(on)
            if self._qimage is not None:
                self._qimage.invertPixels()
                self._pyramid = {k: v for k, v in self._pyramid.items() if k[0] != "image"}
            self._view_changed()

    def orientation(self) -> tuple[int, bool]:
        """(clockwise quarter turns 0..3, mirrored) of the current view."""
        o = self._orient
        det = o.m11() * o.m22() - o.m12() * o.m21()
        mirrored = det < 0
        m = o * QTransform.fromScale(-1, 1) if mirrored else o  # undo one mirror to read the rotation
        turns = {(1, 0): 0, (0, 1): 1, (-1, 0): 2, (0, -1): 3}[(round(m.m11()), round(m.m12()))]
        return turns, mirrored

    def _refit_or_update(self) -> None:
        if self._fitted:
            self.fit()
        else:
            self._view_changed()

    def _view_changed(self) -> None:
        self.update()
        self.view_changed.emit()

    # ------------------------------------------------------------------ mouse
    def mousePressEvent(self, ev) -> None:
        pos, b = ev.position(), ev.button()
        if b in (Qt.LeftButton, Qt.MiddleButton):
            self._drag = ("pan", pos, QPointF(self._focus))
        elif b == Qt.RightButton and self.window() is not None:
            self._drag = ("wl", pos, self.window())
        ev.accept()

    def mouseMoveEvent(self, ev) -> None:
        pos = ev.position()
        if self._drag is not None:
            mode, start, origin = self._drag
            d = pos - start
            if mode == "pan":
                inv, _ = (self._orient * QTransform.fromScale(self._scale, self._scale)).inverted()
                self._focus, self._fitted = origin - inv.map(d), False
                self._view_changed()
            else:
                span = self._frame.robust_range[1] - self._frame.robust_range[0]
                k = span / WL_DRAG_PIXELS  # right = wider, down = higher center (darker)
                self.set_window(origin[0] + d.y() * k, origin[1] + d.x() * k)
        self._emit_pixel_info(pos)

    def mouseReleaseEvent(self, ev) -> None:
        self._drag = None

    def mouseDoubleClickEvent(self, ev) -> None:
        self.fit()

    def wheelEvent(self, ev) -> None:
        steps = ev.angleDelta().y() / 120.0
        if steps:
            self.set_zoom(self.zoom() * ZOOM_STEP ** steps, ev.position())
        ev.accept()

    def leaveEvent(self, ev) -> None:
        self._emit_text("")

    def resizeEvent(self, ev) -> None:
        if self._fitted:
            self.fit()

    def _emit_pixel_info(self, pos: QPointF) -> None:
        xy = self.map_to_image(pos)
        self._emit_text(self.pixel_text(*xy) if xy else "")

    def _emit_text(self, text: str) -> None:
        if text != self._last_info:
            self._last_info = text
            self.pixel_info.emit(text)
