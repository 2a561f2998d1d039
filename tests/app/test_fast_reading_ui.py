"""Fast reading from the window: the Model menu's action, the reading and explanation panels, the make dialog."""

from __future__ import annotations

import functools
import os

import pytest
import torch

from app.main_window import MainWindow
from app.settings import Settings
from tests.core.conftest import all_convs, flipped_copy, write_dataset

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def ws(tmp_path):
    from core.importer import import_paths
    from core.models.versions import create_version
    from core.workspace import Workspace

    folder = tmp_path / "photos"
    csv = write_dataset(folder, n=40, splits=["val"] * 16 + ["train"] * 24)
    workspace = Workspace.open(tmp_path / "ws.sqlite")
    import_paths(workspace, [folder], csv)
    pool = tmp_path / "pool"  # unlabelled cases for the queue
    write_dataset(pool, n=6, seed=1)
    (pool / "labels.csv").unlink()
    import_paths(workspace, [pool])
    torch.manual_seed(0)
    create_version(workspace, "resnet18", ["neg", "pos"], pretrained="none", input_size=32)
    yield workspace
    workspace.close()


def _window(qtbot, ws, tmp_path):
    settings = Settings(path=str(tmp_path / "settings.ini"))
    settings.annotator = "dr test"
    win = MainWindow(ws, settings)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: bool(win.rows) and win.loaded_model is not None, timeout=60000)
    return win


def _close(win):
    dialog = getattr(win, "fast_dialog", None)
    if dialog is not None:
        dialog.close()
    win.session.shutdown()


def test_without_a_gated_version_the_action_is_disabled_and_says_why(qtbot, ws, tmp_path):
    win = _window(qtbot, ws, tmp_path)
    try:
        action = win.fast_reading_action
        assert not action.isEnabled() and not action.isChecked()
        assert "no fast reading version of v1 has passed the quality checks" in action.toolTip()
        assert action in win.menuBar().actions()[3].menu().actions() or action.text() == "Fast reading"
        assert not win.prediction.reading_note.isVisible()
    finally:
        _close(win)


def test_fast_reading_predicts_with_the_gated_copy_and_explanations_stay_with_the_teacher(qtbot, ws, tmp_path):
    from core.active.settings import read_settings
    from core.models.fast_mode import predict_pool
    from core.models.fast_reading import quantize_version

    # every convolution kept in float: the INT8 copy reads as its teacher and genuinely passes the gate
    version, _ = quantize_version(ws, keep_float=all_convs(ws), actor="test")
    assert version.version == "v2"
    predict_pool(ws, fast=False)  # the full model has read the pool before fast reading is turned on
    from core.active.loop import refresh_queue

    queued = [item.image_id for item in refresh_queue(ws, n=3)]  # ranked by the full model v1
    win = _window(qtbot, ws, tmp_path)
    try:
        action = win.fast_reading_action
        assert action.isEnabled() and not action.isChecked() and "v2" in action.toolTip()
        with qtbot.waitSignal(win.predictions_refreshed, timeout=120000):
            action.trigger()  # on: stored, then the copy predicts what it has not read
        qtbot.waitUntil(lambda: bool(win.rows) and all(r.prediction is not None and r.prediction.version == "v2"
                                                       for r in win.rows.values()), timeout=60000)
        assert read_settings(ws)["fast_reading"] == "on" and action.isChecked()
        assert win.fast_label.text() == "fast reading: v2"
        image_id = next(i for i in win.rows if i != win.worklist.current_image_id() and i not in queued)
        win.worklist.select(image_id)
        qtbot.waitUntil(lambda: win._shown == image_id, timeout=10000)
        note = win.prediction.reading_note
        assert not note.isHidden() and note.text() == "Fast reading: INT8 v2 of v1"
        assert "Model v2" in win.prediction.title.text()
        # what the full model predicted for the case is looked up off the UI thread; the copy agrees here
        qtbot.waitUntil(lambda: image_id in win.prediction.teacher_reads, timeout=20000)
        assert win.prediction.teacher_reads[image_id] == ws.predictions("v1")[image_id].predicted
        assert note.text() == "Fast reading: INT8 v2 of v1"
        other = next(c for c in ("neg", "pos") if c != win.rows[image_id].prediction.predicted)
        win.prediction.set_teacher_read(image_id, other)  # a case where the two would differ: said plainly
        assert note.text() == f"Fast reading: INT8 v2 of v1 — the full model v1 predicts <b>{other}</b> here"
        win.prediction.teacher_reads.pop(image_id)
        # a queued case: its reason quotes the full model, and says so
        win.worklist.select(queued[0])
        qtbot.waitUntil(lambda: win._shown == queued[0], timeout=10000)
        assert win.banner.why.text().endswith("Ranked by the full model v1; fast reading predicts with v2.")
        win.worklist.select(image_id)
        qtbot.waitUntil(lambda: win._shown == image_id, timeout=10000)
        # the explanation is computed by the full model, and says so
        win.side.setCurrentWidget(win.overlay)
        win.overlay.method.setCurrentIndex(1)  # Grad-CAM
        qtbot.waitUntil(lambda: win.overlay.last is not None, timeout=120000)
        assert win.overlay.last.version == "v1"
        assert win.overlay.last.target == win.rows[image_id].prediction.predicted  # the class the reader sees
        assert win.overlay.state.text().startswith(
            "Explanation from the full model v1 (fast reading predicts with v2)")
        # off again: the full model's predictions, and the panel no longer speaks of fast reading
        action.trigger()
        qtbot.waitUntil(lambda: read_settings(ws)["fast_reading"] == "off", timeout=20000)
        qtbot.waitUntil(lambda: not action.isChecked() and all(
            r.prediction is None or r.prediction.version == "v1" for r in win.rows.values()), timeout=60000)
        qtbot.waitUntil(lambda: note.isHidden(), timeout=10000)
    finally:
        _close(win)


def test_make_dialog_registers_a_passing_int8_copy_in_its_own_process(qtbot, ws, tmp_path):
    from core.models.fast_build import build_fast_version

    win = _window(qtbot, ws, tmp_path)
    try:
        assert not win.fast_reading_action.isEnabled()
        build = functools.partial(build_fast_version, keep_float=all_convs(ws), nice=0)
        from app.workstation.fast_reading import open_dialog

        dialog = open_dialog(win, build=build)
        assert dialog.kind() == "int8"
        with qtbot.waitSignal(dialog.built, timeout=240000) as blocker:
            dialog.make_button.click()
        result = blocker.args[0]
        assert result.registered and result.teacher == "v1"
        assert f"version {result.version} of v1 registered" in dialog.state.text()
        assert "top-class agreement" in dialog.state.text()  # the figures of every check
        qtbot.waitUntil(lambda: win.fast_reading_action.isEnabled(), timeout=30000)
        assert result.version in win.fast_reading_action.toolTip()
        assert os.path.exists(str(ws.path) + ".fast_reading.log")
    finally:
        _close(win)


def test_make_dialog_names_the_failed_check(qtbot, ws, tmp_path, monkeypatch):
    from app.workstation.fast_reading import open_dialog
    from core.models import fast_reading
    from core.models.fast_build import run_build

    monkeypatch.setattr(fast_reading, "quantize_int8", flipped_copy)

    def in_process(path, kind, cancel=None, **kw):  # the same attempt without a child (the patch applies)
        return run_build(ws, kind)

    win = _window(qtbot, ws, tmp_path)
    try:
        dialog = open_dialog(win, build=in_process)
        with qtbot.waitSignal(dialog.built, timeout=120000) as blocker:
            dialog.make_button.click()
        assert not blocker.args[0].registered
        text = dialog.state.text()
        assert "not registered" in text and "failed macro AUC, top-class agreement" in text
        assert "top-class agreement 0.0000 vs teacher 1.0000 (at least 98% of 16 validation images and 6 unlabelled pool images)" in text
        assert [m.version for m in ws.models()] == ["v1"]
        assert not win.fast_reading_action.isEnabled()
    finally:
        _close(win)
