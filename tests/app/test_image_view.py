"""ImageView: async render, window/level, view transforms, readout, overlay, presets, frames, errors."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("PySide6")
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt, QTimer  # noqa: E402
from PySide6.QtGui import QImage, QMouseEvent  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from app.widgets import image_view  # noqa: E402
from app.widgets.colormaps import colorize, colormap_lut  # noqa: E402
from app.widgets.image_view import ImageView  # noqa: E402
from app.workers import Runner  # noqa: E402
from tests.core.dicom_factory import write_dicom  # noqa: E402

SIZE = (400, 300)  # widget width, height


@pytest.fixture
def runner(qapp):
    r = Runner(qapp)
    yield r
    r.cancel_all()
    assert r.wait(10000), "a render job was still running"
    r.deleteLater()


@pytest.fixture
def view(qtbot, runner):
    v = ImageView(runner)
    qtbot.addWidget(v)
    v.resize(*SIZE)
    v.show()
    return v


def _grab(v: ImageView) -> np.ndarray:
    QApplication.processEvents()
    img = v.grab().toImage().convertToFormat(QImage.Format_RGB888)
    arr = np.frombuffer(img.constBits(), np.uint8).reshape(img.height(), img.bytesPerLine())
    return arr[:, : img.width() * 3].reshape(img.height(), img.width(), 3).copy()


def _show(qtbot, v: ImageView, path, timeout=10000) -> None:
    with qtbot.waitSignal(v.image_loaded, timeout=timeout) as sig:
        v.set_image(str(path))
    assert sig.args == [str(path)]


@pytest.fixture
def png(tmp_path):
    """An asymmetric colour photo: bright red block top-left on a grey ramp."""
    a = np.zeros((60, 80, 3), np.uint8)
    a[..., :] = np.linspace(40, 200, 80, dtype=np.uint8)[None, :, None]
    a[:20, :30] = (250, 10, 10)
    p = tmp_path / "photo.png"
    Image.fromarray(a).save(p)
    return p


@pytest.fixture
def dcm(tmp_path):
    """A 12-bit CR-like ramp with a header window and a rescale (modality = 2·stored − 100)."""
    px = (np.arange(64)[None, :] * 60 + np.arange(48)[:, None] * 4).astype(np.uint16)
    px[5, 7] = 1234
    return write_dicom(tmp_path / "ramp.dcm", px, slope=2, intercept=-100, rescale_type="US",
                       windows=[(2000, 3000, "SOFT"), (1000, 500, "NARROW")], modality="CR")


def test_photo_loads_and_displays_in_colour(qtbot, view, png):
    assert view.current_path is None
    _show(qtbot, view, png)
    assert view.current_path == str(png)
    g = _grab(view)
    assert (g.sum(axis=2) > 30).mean() > 0.3  # the image area is not background
    red = (g[..., 0] > 200) & (g[..., 1] < 60)
    assert red.any()  # photographs keep their colour
    assert view.window() is None and view.presets() == []


def test_window_level_right_drag_changes_pixels(qtbot, view, dcm):
    _show(qtbot, view, dcm)
    assert view.window() == (2000, 3000)
    before, img0 = _grab(view), view._frame.image.copy()

    def send(kind, pos, button, buttons):
        ev = QMouseEvent(kind, QPointF(pos), view.mapToGlobal(QPointF(pos)), button, buttons, Qt.NoModifier)
        QApplication.sendEvent(view, ev)

    send(QEvent.MouseButtonPress, QPoint(100, 100), Qt.RightButton, Qt.RightButton)
    send(QEvent.MouseMove, QPoint(40, 160), Qt.NoButton, Qt.RightButton)  # narrower, higher center
    send(QEvent.MouseButtonRelease, QPoint(40, 160), Qt.RightButton, Qt.NoButton)
    c, w = view.window()
    assert w < 3000 and c > 2000
    qtbot.waitUntil(lambda: not np.array_equal(view._frame.image, img0), timeout=20000)
    assert not np.array_equal(_grab(view), before)
    view.reset_window()
    qtbot.waitUntil(lambda: np.array_equal(view._frame.image, img0), timeout=20000)


def test_window_render_goes_to_runner_when_slow(qtbot, view, dcm, monkeypatch):
    _show(qtbot, view, dcm)
    monkeypatch.setattr(image_view, "SYNC_RENDER_MS", -1.0)  # every render counts as slow
    img0 = view._frame.image.copy()
    for w in (2500, 2000, 1500):  # coalesced; the latest window wins
        view.set_window(1000, w)
    qtbot.waitUntil(lambda: not np.array_equal(view._frame.image, img0), timeout=20000)
    expected = image_view.rerender(view._frame, (1000, 1500), 0)
    qtbot.waitUntil(lambda: np.array_equal(view._frame.image, expected), timeout=20000)


def test_presets_include_header_windows_and_chest_presets(qtbot, view, dcm):
    _show(qtbot, view, dcm)
    presets = view.presets()
    assert presets[:2] == [("SOFT", 2000, 3000), ("NARROW", 1000, 500)]
    names = [p[0] for p in presets]
    assert {"Full range", "Lung", "Mediastinum", "Bone"} <= set(names)
    view.apply_preset(1)
    assert view.window() == (1000, 500)
    with pytest.raises(IndexError):
        view.apply_preset(99)


def test_invert_rotate_flip_change_only_the_view(qtbot, view, png):
    _show(qtbot, view, png)
    base = _grab(view)
    pixels = view._frame.image.copy()
    view.set_inverted(True)
    assert not np.array_equal(_grab(view), base)
    view.set_inverted(False)
    assert np.array_equal(_grab(view), base)
    view.rotate()
    assert view.orientation() == (1, False)
    assert not np.array_equal(_grab(view), base)
    view.rotate(-1)
    view.flip(horizontal=True)
    flipped = _grab(view)
    assert view.orientation()[1] and not np.array_equal(flipped, base)
    view.flip(horizontal=True)
    view.flip(horizontal=False)
    assert not np.array_equal(_grab(view), base)
    view.action("reset_view").trigger()
    assert np.array_equal(_grab(view), base)
    assert np.array_equal(view._frame.image, pixels)  # view-only: the rendered pixels never changed


def _widget_pos(view: ImageView, x: int, y: int) -> QPointF:
    pane = view._panes()[0]
    return view._transform(pane).map(QPointF(x + 0.5, y + 0.5))


def test_pixel_info_reports_stored_and_modality_values(qtbot, view, dcm):
    _show(qtbot, view, dcm)
    view.rotate()
    view.flip(horizontal=True)  # the readout maps back through the view transform
    pos = _widget_pos(view, 7, 5)
    assert view.map_to_image(pos) == (7, 5)
    with qtbot.waitSignal(view.pixel_info, timeout=10000) as sig:
        QApplication.sendEvent(view, QMouseEvent(QEvent.MouseMove, pos, view.mapToGlobal(pos), Qt.NoButton,
                                                 Qt.NoButton, Qt.NoModifier))
    text = sig.args[0]
    assert text.startswith("x 7 y 5")
    assert "stored 1234" in text and "modality 2368 US" in text
    assert f"display {int(view._frame.image[5, 7])}" in text


def test_pixel_info_for_photos_is_rgb(qtbot, view, png):
    _show(qtbot, view, png)
    assert view.pixel_text(3, 4) == "x 3 y 4 · RGB 250,10,10"
    assert view.map_to_image(QPointF(-5, -5)) is None


def test_overlay_composited_and_opacity_zero_is_unchanged(qtbot, view, dcm):
    _show(qtbot, view, dcm)
    base = _grab(view)
    m = np.zeros((48, 64), np.float32)
    m[10:30, 10:40] = 1.0
    view.set_overlay(m, "jet", 0.6)
    pos = _widget_pos(view, 25, 20).toPoint()
    over = _grab(view)
    r, g, b = (int(v) for v in over[pos.y(), pos.x()])
    assert r > g + 40 and r > b + 40  # jet's top is red
    assert np.array_equal(over[pos.y() - 40 :, :5], base[pos.y() - 40 :, :5])  # zero attribution stays clear
    view.set_overlay_opacity(0.0)
    assert np.array_equal(_grab(view)[:200], base[:200])  # (legend strip lies at the bottom)
    view.set_overlay_opacity(0.6)
    view.toggle_overlay()
    assert not view.overlay_visible() and np.array_equal(_grab(view), base)
    view.set_overlay(None)
    assert np.array_equal(_grab(view), base)


def test_side_by_side_doubles_the_content(qtbot, view, png):
    _show(qtbot, view, png)
    single = (_grab(view).sum(axis=2) > 30).sum()
    view.set_overlay(np.full((60, 80), 0.8, np.float32), "inferno")
    view.set_side_by_side(True)
    g = _grab(view)
    left, right = g[:, : SIZE[0] // 2], g[:, SIZE[0] // 2 :]
    assert (left.sum(axis=2) > 30).sum() > 0.2 * single and (right.sum(axis=2) > 30).sum() > 0.2 * single
    assert not np.array_equal(left[:150], right[:150])  # only the right pane carries the overlay
    view.set_zoom(view.zoom() * 2)  # linked zoom: both panes follow
    g2 = _grab(view)
    assert not np.array_equal(g2[:, : SIZE[0] // 2], left)


def test_newer_set_image_supersedes(qtbot, view, png, dcm):
    shown = []
    view.image_loaded.connect(shown.append)
    view.set_image(str(dcm))
    with qtbot.waitSignal(view.image_loaded, timeout=10000):
        view.set_image(str(png))
    view._runner.wait()
    QApplication.processEvents()
    assert shown == [str(png)] and view.current_path == str(png)
    assert view._frame.path == str(png)


def test_corrupt_file_shows_error(qtbot, view, tmp_path):
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"\x00" * 128 + b"DICM" + b"garbage" * 20)
    with qtbot.waitSignal(view.load_failed, timeout=10000) as sig:
        view.set_image(str(bad))
    assert sig.args[0] == str(bad)
    assert "Cannot show this image" in view._status[0]
    assert (_grab(view).sum(axis=2) > 60).any()  # the message is painted
    view.set_image(None)
    assert view.current_path is None


def test_multiframe_page_down(qtbot, view, tmp_path):
    frames = np.stack([np.full((16, 16), v, np.uint16) for v in (100, 900, 1700)])
    frames[:, 0, 0] = 0
    frames[:, 0, 1] = 2000
    path = write_dicom(tmp_path / "mf.dcm", frames)
    _show(qtbot, view, path)
    assert view._frame.frames == 3
    view.action("next_frame").trigger()
    qtbot.waitUntil(lambda: view.frame_index() == 1, timeout=20000)
    assert view.pixel_text(5, 5).startswith("x 5 y 5 · stored 900")
    view.set_frame(10)
    qtbot.waitUntil(lambda: view.frame_index() == 2, timeout=20000)


def test_zoom_keeps_the_point_under_the_cursor(qtbot, view, png):
    _show(qtbot, view, png)
    anchor = QPointF(120, 90)
    before = view._transform(view._panes()[0]).inverted()[0].map(anchor)
    view.set_zoom(view.zoom() * 3, anchor)
    after = view._transform(view._panes()[0]).inverted()[0].map(anchor)
    assert abs(before.x() - after.x()) < 1e-6 and abs(before.y() - after.y()) < 1e-6
    view.action("actual").trigger()
    assert view.zoom() == pytest.approx(1.0)
    view.action("fit").trigger()
    assert view._fitted


def test_ui_keeps_processing_events_during_a_slow_render(qtbot, view, png, monkeypatch):
    original = image_view.load_frame

    def slow(*args):  # 0.6 s of CPU work (not a sleep): on the UI thread it would show in thread_time
        start = time.thread_time()
        while time.thread_time() - start < 0.6:
            pass
        return original(*args)

    monkeypatch.setattr(image_view, "load_frame", slow)
    ticks = []  # UI-thread CPU time at each tick: a loaded machine delays ticks, only UI-thread work is ours
    timer = QTimer(interval=20, timeout=lambda: ticks.append(time.thread_time()))
    timer.start()
    with qtbot.waitSignal(view.image_loaded, timeout=10000):
        view.set_image(str(png))
        assert view._status and "loading" in view._status[0]
    timer.stop()
    # the 0.6 s decode ran off the UI thread: the timer kept ticking, and no tick interval holds it
    assert len(ticks) > 10 and np.diff(ticks).max() < 0.1


def test_busy_badge_and_colormaps(qtbot, view, png):
    _show(qtbot, view, png)
    view.set_busy("computing Grad-CAM…")
    view.set_badge("faithful", "#3fa66b")
    assert view._spinner.isActive()
    _grab(view)
    view.set_busy(None)
    assert not view._spinner.isActive()
    assert colormap_lut("viridis").shape == (256, 3)
    rgba = colorize(np.array([[0.0, 1.0]]), "inferno")
    assert rgba[0, 0, 3] == 0 and rgba[0, 1, 3] == 255
    view.set_overlay(np.zeros((60, 80), np.float32), "jet", 0.5)
    corner = _grab(view)[-45:, -230:].astype(int)  # the legend strip, bottom-right
    assert ((corner[..., 2] > 150) & (corner[..., 0] < 60)).any()  # jet's blue end
    assert ((corner[..., 0] > 150) & (corner[..., 2] < 60)).any()  # ... and its red end
    with pytest.raises(ValueError):
        view.set_overlay(np.zeros((2, 2)), "rainbow")
    assert {a.objectName() for a in view.actions()} >= {"view.fit", "view.invert", "view.rotate", "view.flip_h"}


def test_keyboard_shortcuts_reach_the_view(qtbot, view, png):
    from PySide6.QtTest import QTest

    _show(qtbot, view, png)
    view.activateWindow()
    view.setFocus()
    qtbot.waitUntil(view.hasFocus, timeout=10000)
    QTest.keyClick(view, Qt.Key_I)
    assert view._inverted
    QTest.keyClick(view, Qt.Key_R, Qt.ControlModifier)
    assert view.orientation() == (1, False)
    zoom = view.zoom()
    QTest.keyClick(view, Qt.Key_Plus)
    assert view.zoom() > zoom
    QTest.keyClick(view, Qt.Key_0, Qt.ControlModifier)
    assert view._fitted
