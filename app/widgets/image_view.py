"""ImageView: a PACS-style viewer of one image with window/level, zoom/pan, view transforms and an overlay.

Decoding and the first render run in the :class:`~app.workers.Runner`
(``kind`` "render" by default; a newer :meth:`ImageView.set_image` supersedes
an older one). The worker also returns the decoded stored frame, so the pixel
readout and window/level changes need no further file access: a new window is
rendered on the UI thread only when the last measured warm render was fast
(≤ ``SYNC_RENDER_MS``), otherwise it goes to the runner too (kind
"render:window", which re-measures); drags are coalesced by a timer either way,
so the UI thread never waits on a decode or a slow render.

Mouse: left or middle drag pans, right drag is window/level (right = wider,
down = higher center, i.e. darker; ``WL_DRAG_PIXELS`` pixels move by the
robust value range), wheel zooms around the cursor, double-click fits.
Zoom is reported per *device* pixel, so "1:1" is one image pixel per screen
pixel on high-DPI screens too. Keys: see :meth:`ImageView.actions`.

Rotate, flip, invert and zoom are *view-only* transforms: they change what is
painted, never the pixels handed to models, the overlay's geometry (it is
painted through the same transform) nor anything stored.

Window presets: the header's Window Center/Width pairs (the same parse as
``core.imaging.window_presets``, taken from the decoded frame's params) come first, then "Full
range", then, for CR/DX, "Lung", "Mediastinum" and "Bone". A radiograph's
values carry no physical unit (unlike CT's HU), so these three are expressed
as fractions of the image's robust value range (0.5th–99.5th percentile of
the modality values) along the density axis: dense tissue is bright, i.e.
high values for MONOCHROME2 and low values for MONOCHROME1 / inverse
presentation. They are heuristics for a first look, not calibrated windows.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QColor, QImage, QKeySequence, QPainter, QPen, QTransform
from PySide6.QtWidgets import QWidget

from app.theme import COLORS
from app.widgets.colormaps import COLORMAPS, colorize, draw_legend, to_qimage
from app.workers import Runner
from core.imaging import loader
from core.imaging.display import DisplayParams, apply_modality_lut, render_array
from core.types import ImageRecord

logger = logging.getLogger(__name__)

#: A new window is rendered synchronously only if the worker's render took at most this long.
SYNC_RENDER_MS = 30.0
#: Drag events are coalesced into one re-render per this many milliseconds.
COALESCE_MS = 25
#: Window/level drag: this many screen pixels move the width/center by the whole robust range.
WL_DRAG_PIXELS = 600.0
ZOOM_STEP = 1.25
CHEST_MODALITIES = ("CR", "DX")
#: (name, center, width) as fractions of the robust range along the density axis.
CHEST_PRESETS = (("Lung", 0.40, 0.80), ("Mediastinum", 0.70, 0.45), ("Bone", 0.80, 0.30))


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
        return self.kind == "dicom" and self.params is not None and not self.params.is_color and self.raw.ndim == 2


def _decoded(path: str, frame: int):
    """(kind, raw, params) from the loader's frame cache (decoding only on a miss)."""
    return loader.decoded_frame(path, frame)  # shared cache: render() and model_input() reuse the decode


def load_frame(path: str, frame: int, window, voi_index: int, record: Optional[ImageRecord]) -> LoadedFrame:
    """Worker job: decode (cached), render and measure one frame. Raises what core.imaging raises."""
    kind, raw, params = _decoded(path, frame)
    if kind == "photo":
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


class ImageView(QWidget):
    """Shows one image (DICOM or photograph) the way a radiologist reads it. See the module docstring."""

    image_loaded = Signal(str)  # path, once a set_image() result is on screen
    load_failed = Signal(str, str)  # path, message
    pixel_info = Signal(str)  # readout under the cursor ("" outside the image)
    window_changed = Signal(float, float)  # center, width
    view_changed = Signal()  # zoom/pan/orientation/invert changed

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
        self._actions = self._build_actions()

    # ------------------------------------------------------------------ loading
    @property
    def current_path(self) -> Optional[str]:
        """Path of the image requested last (shown or still loading), or None."""
        return self._path

    def set_image(self, path: Optional[str], record: Optional[ImageRecord] = None) -> None:
        """Show ``path`` (None clears). Renders in the runner; resets window, view, overlay and badge."""
        self._path, self._record = (str(path) if path is not None else None), record
        self._frame = self._qimage = None
        self._pyramid.clear()
        self._window, self._voi_index = None, 0
        self._orient, self._inverted, self._fitted = QTransform(), False, True
        self._overlay_map = self._overlay_qimage = None
        self._badge = None
        self._status = None
        self._gen += 1
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
        logger.debug("shown %s frame %d (render %.1f ms)", frame.path, frame.frame, frame.render_ms)

    def _failed(self, gen: int, path: str, message: str) -> None:
        if gen != self._gen:
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
        f = self._frame
        if f is None or not f.grayscale_dicom:
            return None
        if self._window is not None:
            return self._window
        p = f.params
        if p.voi_luts or p.windows:
            if self._voi_index < len(p.voi_luts):
                return None
            w = p.windows[self._voi_index - len(p.voi_luts)]
            return (w.center, w.width)
        lo, hi = f.value_range  # full range, as the pipeline's fallback maps it
        return ((lo + hi + 1) / 2, hi - lo + 1)

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
        f = self._frame
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

    def apply_preset(self, index: int) -> None:
        """Apply ``presets()[index]``; raises IndexError for an index that is not listed."""
        _, c, w = self.presets()[index]
        self.set_window(c, w)

    def next_preset(self) -> None:
        """Cycle through :meth:`presets`."""
        presets = self.presets()
        if presets:
            current = self.window()
            idx = next((i for i, p in enumerate(presets) if current and (p[1], p[2]) == current), -1)
            self.apply_preset((idx + 1) % len(presets))

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

    def reset_view(self) -> None:
        """Undo rotation, flips, inversion and zoom; reset the window."""
        self._orient = QTransform()
        self.set_inverted(False)
        self.reset_window()
        self.fit()

    def _refit_or_update(self) -> None:
        if self._fitted:
            self.fit()
        else:
            self._view_changed()

    def _view_changed(self) -> None:
        self.update()
        self.view_changed.emit()

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

    def _build_actions(self) -> dict[str, QAction]:
        spec = (
            ("fit", "Fit to window", ("F", "Ctrl+0"), self.fit),
            ("actual", "Actual pixels (1:1)", ("Ctrl+1",), lambda: self.set_zoom(1.0)),
            ("zoom_in", "Zoom in", ("+", "=", "Ctrl++"), self.zoom_in),
            ("zoom_out", "Zoom out", ("-", "Ctrl+-"), self.zoom_out),
            ("reset_window", "Reset window/level", ("R",), self.reset_window),
            ("next_preset", "Next window preset", ("L",), self.next_preset),
            ("invert", "Invert grey levels", ("I",), lambda: self.set_inverted(not self._inverted)),
            ("rotate", "Rotate view 90° clockwise", ("Ctrl+R",), self.rotate),
            ("rotate_ccw", "Rotate view 90° counter-clockwise", ("Ctrl+Shift+R",), lambda: self.rotate(-1)),
            ("flip_h", "Flip view horizontally", ("H",), lambda: self.flip(True)),
            ("flip_v", "Flip view vertically", ("V",), lambda: self.flip(False)),
            ("reset_view", "Reset view", ("Shift+R",), self.reset_view),
            ("overlay", "Show/hide overlay", ("O",), self.toggle_overlay),
            ("side_by_side", "Side by side", ("S",), lambda: self.set_side_by_side(not self._side_by_side)),
            ("prev_frame", "Previous frame", ("PgUp",), lambda: self.set_frame(self.frame_index() - 1)),
            ("next_frame", "Next frame", ("PgDown",), lambda: self.set_frame(self.frame_index() + 1)),
        )
        out = {}
        for name, text, keys, slot in spec:
            act = QAction(text, self)
            act.setObjectName(f"view.{name}")
            act.setShortcuts([QKeySequence(k) for k in keys])
            act.setShortcutContext(Qt.WidgetWithChildrenShortcut)
            act.setToolTip(f"{text} ({keys[0]})")
            act.triggered.connect(lambda _=False, s=slot: s())
            self.addAction(act)
            out[name] = act
        return out

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

    def pixel_text(self, x: int, y: int) -> str:
        """The readout for image pixel (x, y): stored/modality/display for DICOM, RGB for colour."""
        f = self._frame
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

    def _emit_pixel_info(self, pos: QPointF) -> None:
        xy = self.map_to_image(pos)
        self._emit_text(self.pixel_text(*xy) if xy else "")

    def _emit_text(self, text: str) -> None:
        if text != self._last_info:
            self._last_info = text
            self.pixel_info.emit(text)

    # ------------------------------------------------------------------ painting
    def resizeEvent(self, ev) -> None:
        if self._fitted:
            self.fit()

    def _level(self, which: str, img: QImage, scale: float) -> tuple[QImage, float]:
        """A 2^k-downsampled copy for strong zoom-out (area-averaged, so no aliasing)."""
        k = 0
        while scale * (2 ** (k + 1)) <= 1.0 and min(img.width(), img.height()) >> (k + 1) >= 32:
            k += 1
        if k == 0:
            return img, 1.0
        key = (which, k)
        if key not in self._pyramid:
            self._pyramid[key] = img.scaled(img.width() >> k, img.height() >> k, Qt.IgnoreAspectRatio,
                                            Qt.SmoothTransformation)
        small = self._pyramid[key]
        return small, img.width() / small.width()

    def paintEvent(self, ev) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), Qt.black)
        if self._qimage is not None:
            device_scale = self.zoom()
            img, f = self._level("image", self._qimage, device_scale)
            w, h = self._image_size()
            for i, pane in enumerate(self._panes()):
                p.save()
                p.setClipRect(pane)
                p.setTransform(self._transform(pane))
                p.setRenderHint(QPainter.SmoothPixmapTransform, device_scale < 2.0)
                p.drawImage(QRectF(0, 0, w, h), img)
                show = self.overlay_visible() and self._overlay_opacity > 0
                if show and (not self._side_by_side or i == 1):
                    ov, _ = self._level("overlay", self._overlay_qimage, device_scale * w / self._overlay_qimage.width())
                    p.setOpacity(self._overlay_opacity)
                    p.drawImage(QRectF(0, 0, w, h), ov)
                p.restore()
            if self._side_by_side:
                p.fillRect(QRectF(self.width() / 2 - 1, 0, 2, self.height()), QColor("#303338"))
        self._paint_hud(p)
        p.end()

    def _paint_hud(self, p: QPainter) -> None:
        text_colour = QColor("#d6d8dc")
        m = 8
        r = QRectF(self.rect()).adjusted(m, m, -m, -m)
        p.setPen(text_colour)
        lines = []
        win = self.window()
        f = self._frame
        if win is not None:
            lines.append(f"W {win[1]:.0f}  L {win[0]:.0f}")
        elif f is not None and f.grayscale_dicom:
            lines.append("VOI LUT")
        if self._qimage is not None:
            lines.append(f"Zoom {self.zoom() * 100:.0f}%")
        if f is not None and f.frames > 1:
            lines.append(f"Frame {f.frame + 1}/{f.frames}")
        turns, mirrored = self.orientation()
        if turns or mirrored or self._inverted:
            lines.append(" · ".join(filter(None, (f"Rot {turns * 90}°" if turns else "", "Mirrored" if mirrored else "",
                                                   "Inverted" if self._inverted else ""))))
        if lines:
            self._text_box(p, r, Qt.AlignLeft | Qt.AlignTop, "\n".join(lines), text_colour)
        if self._badge:
            text, colour = self._badge
            box = p.fontMetrics().boundingRect(text).adjusted(-8, -4, 8, 4)
            box.moveTopRight(r.topRight().toPoint())
            p.setPen(Qt.NoPen)
            p.setBrush(colour)
            p.drawRoundedRect(QRectF(box), 4, 4)
            p.setPen(QColor("#ffffff"))
            p.drawText(QRectF(box), Qt.AlignCenter, text)
        if self._busy:
            fm = p.fontMetrics()
            d = fm.height()
            y = r.bottom() - d
            p.setPen(QPen(QColor(COLORS["accent"]), 2))
            p.drawArc(QRectF(r.left(), y, d, d), -self._spin * 16, 270 * 16)
            self._text_box(p, QRectF(r.left() + d + 6, y - 4, r.width() / 2, d + 8), Qt.AlignLeft | Qt.AlignVCenter,
                           self._busy, text_colour)
        if self.overlay_visible():
            lw = min(220.0, r.width() * 0.4)
            draw_legend(p, QRectF(r.right() - lw, r.bottom() - 34, lw, 34), self._overlay_cmap, text_colour)
        if self._status:
            text, colour = self._status
            p.setPen(QColor(colour))
            p.drawText(r, Qt.AlignCenter | Qt.TextWordWrap, text)

    @staticmethod
    def _text_box(p: QPainter, r: QRectF, align, text: str, colour: QColor) -> None:
        """Text with a dark halo so it stays readable over bright image areas."""
        p.setPen(QColor(0, 0, 0, 200))
        for dx, dy in ((1, 1), (-1, 1), (1, -1), (-1, -1)):
            p.drawText(r.translated(dx, dy), align, text)
        p.setPen(colour)
        p.drawText(r, align, text)
