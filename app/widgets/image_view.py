"""ImageView: a PACS-style viewer of one image with window/level, zoom/pan, view transforms and an overlay.

Decoding and the first render run in the :class:`~app.workers.Runner`
(``kind`` "render" by default; a newer :meth:`ImageView.set_image` supersedes
an older one). The worker also returns the decoded stored frame, so the pixel
readout and window/level changes need no further file access: a new window is
rendered on the UI thread only when the last measured warm render was fast
(≤ ``SYNC_RENDER_MS``), otherwise it goes to the runner too (kind
"render:window", which re-measures); drags are coalesced by a timer either way,
so the UI thread never waits on a decode or a slow render.

The view is split over a few modules next to this one; the names other code
uses are re-exported here:

- :mod:`app.widgets.render_job`: :class:`LoadedFrame` and the worker jobs
  :func:`load_frame`, :func:`rerender` and :func:`timed_rerender`;
- :mod:`app.widgets.window_level`: the window in effect and the window
  presets (header windows, "Full range", chest presets for CR/DX);
- :mod:`app.widgets.view_navigation`: zoom, pan, rotate/flip/invert (all
  view-only: never the pixels handed to models, the overlay's geometry nor
  anything stored) and the mouse (left/middle drag pans, right drag is
  window/level, wheel zooms around the cursor, double-click fits);
- :mod:`app.widgets.view_hud`: corner annotations, badge, spinner, legend;
- :mod:`app.widgets.view_actions`: the keys, see :meth:`ImageView.actions`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Optional

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QColor, QImage, QPainter, QTransform
from PySide6.QtWidgets import QWidget

from app.theme import COLORS
from app.widgets.colormaps import COLORMAPS, colorize, to_qimage
from app.widgets.render_job import DAMAGED_PREFIX, LoadedFrame, load_frame, pixel_readout, rerender, timed_rerender
from app.widgets.view_actions import build_view_actions
from app.widgets.view_hud import hud_lines, paint_hud, pyramid_level
from app.widgets.view_navigation import WL_DRAG_PIXELS, ZOOM_STEP, ViewNavigationMixin
from app.widgets.window_level import (CHEST_MODALITIES, CHEST_PRESETS, effective_window, next_preset_index,
                                      window_presets)
from app.workers import Runner
from core.types import ImageRecord

__all__ = [
    "CHEST_MODALITIES", "CHEST_PRESETS", "COALESCE_MS", "ImageView", "LoadedFrame", "SYNC_RENDER_MS",
    "WL_DRAG_PIXELS", "ZOOM_STEP", "load_frame", "rerender", "timed_rerender",
]

logger = logging.getLogger(__name__)

#: A new window is rendered synchronously only if the worker's render took at most this long.
SYNC_RENDER_MS = 30.0
#: Drag events are coalesced into one re-render per this many milliseconds.
COALESCE_MS = 25


class ImageView(ViewNavigationMixin, QWidget):
    """Shows one image (DICOM or photograph) the way a radiologist reads it. See the module docstring."""

    image_loaded = Signal(str)  # path, once a set_image() result is on screen
    load_failed = Signal(str, str)  # path, message
    image_damaged = Signal(str, str)  # path, reason: the pixel data is incomplete or broken (nothing is shown)
    pixel_info = Signal(str)  # readout under the cursor ("" outside the image)
    window_changed = Signal(float, float)  # center, width
    view_changed = Signal()  # zoom/pan/orientation/invert changed
    frame_shown = Signal(str, int, int)  # path, 0-based frame, number of frames: every loaded frame once on screen
    painted = Signal()  # a paint of the view has just been drawn (the window flushes it to the screen right after)

    def __init__(self, runner: Runner, parent: Optional[QWidget] = None, kind: str = "render"):
        super().__init__(parent)
        self._runner, self._kind = runner, kind
        self._path: Optional[str] = None
        self._record: Optional[ImageRecord] = None
        self._frame: Optional[LoadedFrame] = None
        self._gen = 0
        self._qimage: Optional[QImage] = None
        self._pyramid: dict[tuple[str, int], QImage] = {}
        self._window: Optional[tuple[float, float]] = None  # None: the header's VOI choice
        self._voi_index = 0
        self._scale, self._focus, self._fitted = 1.0, QPointF(), True
        self._orient = QTransform()
        self._inverted = self._side_by_side = False
        self._overlay_map: Optional[np.ndarray] = None
        self._overlay_qimage: Optional[QImage] = None
        self._overlay_cmap, self._overlay_opacity, self._overlay_visible = "jet", 0.45, True
        self._badge: Optional[tuple[str, QColor]] = None
        self._busy: Optional[str] = None
        self._status: Optional[tuple[str, str]] = None  # (text, colour) in the centre: loading / error
        self._drag: Optional[tuple] = None
        self._window_job_running = self._window_dirty = False
        self._last_info = ""
        self._spin = 0
        self._spinner = QTimer(self, interval=80, timeout=self._tick)
        self._wl_timer = QTimer(self, singleShot=True, interval=COALESCE_MS, timeout=self._render_window)
        self.setFocusPolicy(Qt.StrongFocus)
        self.setMouseTracking(True)
        self.setContextMenuPolicy(Qt.PreventContextMenu)  # right-drag is window/level
        self.setAttribute(Qt.WA_OpaquePaintEvent)
        self.setMinimumSize(160, 160)
        self._actions = build_view_actions(self)

    # ------------------------------------------------------------------ loading
    @property
    def current_path(self) -> Optional[str]:
        """Path of the image requested last (shown or still loading), or None."""
        return self._path

    def set_image(self, path: Optional[str], record: Optional[ImageRecord] = None, frame=None) -> None:
        """Show ``path`` (None clears). Renders in the runner; resets window, view, overlay and badge.

        ``frame``: the image's first frame already rendered in the background with its default window
        (a :class:`LoadedFrame` from :func:`load_frame`, e.g. prefetched while the previous case was read):
        shown at once, without a render job.
        """
        self._path, self._record = (str(path) if path is not None else None), record
        self._frame = self._qimage = None
        self._pyramid.clear()
        self._window, self._voi_index = None, 0
        self._orient, self._inverted, self._fitted = QTransform(), False, True
        self._overlay_map = self._overlay_qimage = None
        self._badge = None
        self._status = None
        self._gen += 1
        if self._path is not None and frame is not None and frame.path == self._path and frame.frame == 0:
            self._loaded(self._gen, frame, True, None)
            return
        if self._path is not None:
            self._status = ("loading…", COLORS["muted"])
            self._submit_load(0, fresh=True)
        self.update()

    def _submit_load(self, frame: int, fresh: bool) -> None:
        gen, path, window = self._gen, self._path, self._window
        self._runner.submit(self._kind, load_frame, path, frame, window, self._voi_index, self._record,
                            on_done=lambda r: self._loaded(gen, r, fresh, window),
                            on_error=lambda m: self._failed(gen, path, m))

    def _loaded(self, gen: int, frame: LoadedFrame, fresh: bool, window=None) -> None:
        if gen != self._gen:
            return
        self._frame, self._status = frame, None
        self._set_pixels(frame.image)
        if self._window != window:  # window/level moved while this frame was loading
            self._wl_timer.start()
        if fresh:
            self.fit()
            self.image_loaded.emit(frame.path)
        self.frame_shown.emit(frame.path, frame.frame, frame.frames)
        logger.debug("shown %s frame %d (render %.1f ms)", frame.path, frame.frame, frame.render_ms)

    def _failed(self, gen: int, path: str, message: str) -> None:
        if gen != self._gen:
            return
        if message.startswith(DAMAGED_PREFIX):
            reason = message[len(DAMAGED_PREFIX):]
            logger.warning("damaged image %s: %s", path, reason)
            self._frame = self._qimage = None  # no earlier frame of this image stays on screen either
            self._overlay_map = self._overlay_qimage = None
            self._pyramid.clear()
            # A blocking banner in place of the picture: a partial decode is never shown as if whole.
            self._status = (f"DAMAGED IMAGE — NOT SHOWN\n{reason}\n\nIt is left out of prediction, the queue and "
                            f"training. Import an intact copy of the file to replace it.", COLORS["bad"])
            self.update()
            self.image_damaged.emit(path, reason)
            self.load_failed.emit(path, reason)
            return
        logger.warning("cannot show %s: %s", path, message)
        self._status = (f"Cannot show this image:\n{message}", COLORS["bad"])
        self.update()
        self.load_failed.emit(path, message)

    def _set_pixels(self, image: np.ndarray) -> None:
        self._qimage = to_qimage(image)
        if self._inverted:
            self._qimage.invertPixels()
        self._pyramid = {k: v for k, v in self._pyramid.items() if k[0] != "image"}
        self.update()

    # ------------------------------------------------------------------ window / level
    def window(self) -> Optional[tuple[float, float]]:
        """The (center, width) in effect, in modality units; None for photos, colour or a VOI LUT."""
        return effective_window(self._frame, self._window, self._voi_index)

    def set_window(self, center: float, width: float) -> None:
        """Apply an explicit window (modality units); re-renders coalesced, off the UI thread when slow."""
        if self._frame is None or not self._frame.grayscale_dicom:
            return
        self._window = (float(center), max(1.0, float(width)))
        self.window_changed.emit(*self._window)
        self.update()
        if not self._wl_timer.isActive():
            self._wl_timer.start()

    def reset_window(self) -> None:
        """Back to the header's first VOI choice (or the full range)."""
        if self._frame is not None and self._frame.grayscale_dicom:
            self._window, self._voi_index = None, 0
            if self.window() is not None:
                self.window_changed.emit(*self.window())
            self._wl_timer.start()

    def presets(self) -> list[tuple[str, float, float]]:
        """(name, center, width) choices: header windows, "Full range", then chest presets for CR/DX."""
        return window_presets(self._frame)

    def apply_preset(self, index: int) -> None:
        """Apply ``presets()[index]``; raises IndexError for an index that is not listed."""
        _, c, w = self.presets()[index]
        self.set_window(c, w)

    def next_preset(self) -> None:
        """Cycle through :meth:`presets`."""
        presets = self.presets()
        if presets:
            self.apply_preset(next_preset_index(presets, self.window()))

    def _render_window(self) -> None:
        f, gen = self._frame, self._gen
        if f is None:
            return
        if f.render_ms <= SYNC_RENDER_MS:  # warm and measured fast: render here, no round trip
            t0 = time.perf_counter()
            image = rerender(f, self._window, self._voi_index)
            ms = (time.perf_counter() - t0) * 1000
            self._frame = replace(f, image=image, render_ms=max(ms, f.render_ms * 0.5))
            self._set_pixels(image)
            return
        if self._window_job_running:
            self._window_dirty = True
            return
        self._window_job_running = True
        window, voi = self._window, self._voi_index
        self._runner.submit(f"{self._kind}:window", timed_rerender, f, window, voi,
                            on_done=lambda result: self._window_rendered(gen, result),
                            on_error=lambda m: self._window_rendered(gen, None, m))

    def _window_rendered(self, gen: int, result: Optional[tuple], message: str = "") -> None:
        self._window_job_running = False
        if gen != self._gen or self._frame is None:
            return
        if result is None:
            logger.warning("window render failed: %s", message)
        else:
            # The load's timing included decoding contention; this one is a pure warm render.
            image, ms = result
            self._frame = replace(self._frame, image=image, render_ms=ms)
            self._set_pixels(image)
        if self._window_dirty:
            self._window_dirty = False
            self._render_window()

    # ------------------------------------------------------------------ frames
    def frame_index(self) -> int:
        """The 0-based frame shown."""
        return self._frame.frame if self._frame else 0

    def set_frame(self, index: int) -> None:
        """Show another frame of a multi-frame image (clamped), keeping window and view."""
        f = self._frame
        if f is None or f.frames <= 1:
            return
        index = max(0, min(f.frames - 1, int(index)))
        if index != f.frame:
            self._gen += 1
            self._submit_load(index, fresh=False)

    def reset_view(self) -> None:
        """Undo rotation, flips, inversion and zoom; reset the window."""
        self._orient = QTransform()
        self.set_inverted(False)
        self.reset_window()
        self.fit()

    def pixel_text(self, x: int, y: int) -> str:
        """The readout for image pixel (x, y): stored/modality/display for DICOM, RGB for colour."""
        return pixel_readout(self._frame, x, y)

    # ------------------------------------------------------------------ overlay and decorations
    def set_overlay(self, map01: Optional[np.ndarray], colormap: str = "jet", opacity: float = 0.45) -> None:
        """Overlay an attribution map in [0, 1] in the rendered image's geometry (None removes it).

        Coloured with ``colormap`` (one of :data:`~app.widgets.colormaps.COLORMAPS`); the alpha is
        ``opacity × value``. A map of another size is stretched over the image (and logged).
        """
        if colormap not in COLORMAPS:
            raise ValueError(f"unknown colour map {colormap!r}; choose one of {', '.join(COLORMAPS)}")
        self._overlay_map, self._overlay_cmap = (None if map01 is None else np.asarray(map01)), colormap
        self._overlay_qimage = None if map01 is None else to_qimage(colorize(self._overlay_map, colormap))
        if map01 is not None and self._frame is not None and self._overlay_map.shape[:2] != self._frame.image.shape[:2]:
            logger.warning("overlay %s stretched over image %s", self._overlay_map.shape, self._frame.image.shape[:2])
        self._pyramid = {k: v for k, v in self._pyramid.items() if k[0] != "overlay"}
        self._overlay_visible = True
        self.set_overlay_opacity(opacity)

    def set_overlay_opacity(self, opacity: float) -> None:
        """Overall overlay opacity, clamped to [0, 1]."""
        self._overlay_opacity = min(1.0, max(0.0, float(opacity)))
        self.update()

    def set_overlay_visible(self, visible: bool) -> None:
        """Show or hide the overlay (keeps it)."""
        self._overlay_visible = bool(visible)
        self.update()

    def toggle_overlay(self) -> None:
        """Flip :meth:`set_overlay_visible`."""
        self.set_overlay_visible(not self._overlay_visible)

    def overlay_visible(self) -> bool:
        """True when an overlay is set and shown."""
        return self._overlay_qimage is not None and self._overlay_visible

    def set_side_by_side(self, on: bool) -> None:
        """Original | overlay side by side, sharing zoom and pan."""
        self._side_by_side = bool(on)
        self._refit_or_update()

    def set_badge(self, text: Optional[str], colour: str | QColor = COLORS["accent"]) -> None:
        """A short label drawn top-right (e.g. the faithfulness indicator); None removes it."""
        self._badge = None if not text else (text, QColor(colour))
        self.update()

    def set_busy(self, text: Optional[str]) -> None:
        """A non-blocking spinner with ``text`` bottom-left (e.g. "computing Grad-CAM…"); None hides it."""
        self._busy = text or None
        self._spinner.start() if self._busy else self._spinner.stop()
        self.update()

    def _tick(self) -> None:
        self._spin = (self._spin + 30) % 360
        self.update()

    # ------------------------------------------------------------------ actions
    def actions(self) -> list[QAction]:  # noqa: D401 - overrides QWidget.actions on purpose
        """The viewer's QActions (with shortcuts) for the main window's toolbar and menus.

        Their shortcut context is the view and its children, so single-letter keys never fire while
        the person types elsewhere; call ``setShortcutContext`` to widen one.
        """
        return list(self._actions.values())

    def action(self, name: str) -> QAction:
        """One action by name (fit, actual, zoom_in, zoom_out, reset_window, next_preset, invert,
        rotate, rotate_ccw, flip_h, flip_v, reset_view, overlay, side_by_side, prev_frame, next_frame)."""
        return self._actions[name]

    # ------------------------------------------------------------------ painting
    def paintEvent(self, ev) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), Qt.black)
        if self._qimage is not None:
            device_scale = self.zoom()
            img, f = pyramid_level(self._pyramid, "image", self._qimage, device_scale)
            w, h = self._image_size()
            for i, pane in enumerate(self._panes()):
                p.save()
                p.setClipRect(pane)
                p.setTransform(self._transform(pane))
                p.setRenderHint(QPainter.SmoothPixmapTransform, device_scale < 2.0)
                p.drawImage(QRectF(0, 0, w, h), img)
                show = self.overlay_visible() and self._overlay_opacity > 0
                if show and (not self._side_by_side or i == 1):
                    ov, _ = pyramid_level(self._pyramid, "overlay", self._overlay_qimage,
                                          device_scale * w / self._overlay_qimage.width())
                    p.setOpacity(self._overlay_opacity)
                    p.drawImage(QRectF(0, 0, w, h), ov)
                p.restore()
            if self._side_by_side:
                p.fillRect(QRectF(self.width() / 2 - 1, 0, 2, self.height()), QColor("#303338"))
        self._paint_hud(p)
        p.end()
        self.painted.emit()

    def _paint_hud(self, p: QPainter) -> None:
        lines = hud_lines(self.window(), self._frame, self.zoom() if self._qimage is not None else None,
                          self.orientation(), self._inverted)
        paint_hud(p, QRectF(self.rect()), lines, badge=self._badge, busy=self._busy, spin=self._spin,
                  legend_cmap=self._overlay_cmap if self.overlay_visible() else None, status=self._status)
