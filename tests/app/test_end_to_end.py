"""One reading session end to end, as a person would do it in the window.

import → predict → switch overlays → label with hotkeys → next queued case →
train in the background → the new version is promoted → predictions refreshed.
"""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from app.main_window import MainWindow
from app.settings import Settings
from core.models.versions import create_version
from core.workspace import Workspace
from tests.app.conftest import write_dataset


@pytest.fixture
def session(qtbot, tmp_path):
    ws = Workspace.open(tmp_path / "ws.sqlite")
    create_version(ws, "resnet18", ["neg", "pos"], pretrained="none", input_size=32)
    # the 20 imported labels already reach the default "retrain after 20": this test starts training itself
    ws.set_setting("retrain_after_labels", 1000)
    settings = Settings(path=str(tmp_path / "settings.ini"))
    settings.annotator = "annotator one"
    win = MainWindow(ws, settings)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: win.device.text() != "device: …", timeout=60000)
    yield win, ws, tmp_path
    win.session.shutdown(5)
    ws.close()


def test_reading_session(qtbot, session):
    win, ws, tmp_path = session
    data = write_dataset(tmp_path / "study", n=30, easy=True)

    win.import_paths([str(data)], labels_csv=str(data / "labels.csv"))
    qtbot.waitUntil(lambda: len(win.rows) == 30, timeout=30000)
    assert sum(r.status == "labelled" for r in win.rows.values()) == 20

    with qtbot.waitSignal(win.predictions_refreshed, timeout=120000):
        win.predict_all()
    qtbot.waitUntil(lambda: all(r.prediction is not None for r in win.rows.values()), timeout=30000)
    assert {r.prediction.version for r in win.rows.values()} == {"v1"}

    # overlays: Grad-CAM, then occlusion; each map lands in the viewer with the image's geometry
    win.worklist.select(next(iter(win.rows)))
    qtbot.waitUntil(lambda: win.viewer.current_path is not None, timeout=10000)
    win.side.setCurrentWidget(win.overlay)
    win.overlay.method.setCurrentIndex(1)
    qtbot.waitUntil(lambda: win.overlay.last is not None and win.overlay.last.method == "gradcam", timeout=60000)
    assert win.overlay.last.map.shape == (32, 32)
    win.overlay.method.setCurrentIndex(5)
    qtbot.waitUntil(lambda: win.overlay.last is not None and win.overlay.last.method == "occlusion", timeout=60000)

    # label an unlabelled case with the keyboard
    win.worklist.status_filter.setCurrentText("Unlabelled")
    target = win.worklist.visible_ids()[0]
    win.worklist.select(target)
    qtbot.waitUntil(lambda: win.labels.image_id == target, timeout=20000)
    qtbot.keyClick(win, Qt.Key_1)
    assert win.labels.chosen() == ["neg"], win.focusWidget()
    qtbot.keyClick(win, Qt.Key_Return)
    qtbot.waitUntil(lambda: win.rows[target].status != "unlabelled", timeout=20000)  # committed off the UI thread
    assert ws.current_label(target).classes == ("neg",)
    win.worklist.status_filter.setCurrentIndex(0)

    # the active-learning queue: refresh, then N opens the top case and shows why it was picked
    win.queue.refresh()
    qtbot.waitUntil(lambda: len(win.queue.items) > 0, timeout=60000)
    top = win.queue.items[0]
    qtbot.keyClick(win, Qt.Key_N)
    qtbot.waitUntil(lambda: win.labels.image_id == top.image_id, timeout=20000)
    assert win.queue.reason.text().startswith(f"#{top.rank}")

    # fine-tune in the background; the promoted version re-predicts the pool
    win.training.mode.setCurrentText("frozen")
    win.training.epochs_spin.setValue(15)
    with qtbot.waitSignal(win.predictions_refreshed, timeout=300000):
        win.train_now()
    assert ws.active_model().version == "v2", ws.model("v2").reason
    qtbot.waitUntil(lambda: {r.prediction.version for r in win.rows.values() if r.prediction} == {"v2"},
                    timeout=30000)
    # then, and only then, the queue is rebuilt from the new version's cached outputs
    qtbot.waitUntil(lambda: bool(win.queue.items) and {i.version for i in win.queue.items} == {"v2"}, timeout=60000)
    assert ws.current_label(target).annotator == "annotator one"
