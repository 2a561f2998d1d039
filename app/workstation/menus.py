"""The workstation's menu entries and keyboard actions, added to the main window by :func:`install`.

File: New/Open workspace, recent workspaces, Import…, Export…; Edit: Findings…; Model: New model…, queue and
retraining settings, queue strategy, activate/roll back; Explain: overlay method/target, faithfulness; View: DICOM
tags; Help: Verify audit log. Every action has a shortcut; actions the main window made without one get one here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMenu

from app.workstation.access import runner_of, workspace_of

logger = logging.getLogger(__name__)

#: shortcuts for main-window actions that were made without one (matched by their text)
MISSING_SHORTCUTS = {"Annotator name…": "Ctrl+Shift+U", "Reader…": "Ctrl+Shift+U", "Evaluate on test split": "Ctrl+Shift+E",
                     "Training": "Ctrl+Alt+T", "Metrics": "Ctrl+Alt+M", "Worklist": "Ctrl+Alt+W",
                     "Reading": "Ctrl+Alt+R", "Import labels CSV…": "Ctrl+Shift+L"}


def _menu(window, title: str) -> QMenu:
    """The window's top-level menu called ``title`` (created before Help when missing)."""
    bar = window.menuBar()
    for action in bar.actions():
        menu = action.menu()
        if menu is not None and action.text().replace("&", "") == title.replace("&", ""):
            return menu
    help_action = next((a for a in bar.actions() if a.text().replace("&", "") == "Help"), None)
    menu = QMenu(title, window)
    bar.insertMenu(help_action, menu) if help_action is not None else bar.addMenu(menu)
    return menu


def _act(window, menu: QMenu, text: str, slot, shortcut: Optional[str] = None, name: str = "",
         tip: str = "", before: Optional[QAction] = None) -> QAction:
    action = QAction(text, window)
    action.setObjectName(name or "ws." + text.lower().replace(" ", "_").replace("…", ""))
    if shortcut:
        action.setShortcut(QKeySequence(shortcut))
    action.setStatusTip(tip)
    action.triggered.connect(lambda _=False: slot())
    menu.insertAction(before, action) if before is not None else menu.addAction(action)
    window.addAction(action)
    return action


def install(window) -> dict[str, QAction]:
    """Add the workstation menus and actions to ``window`` (a MainWindow); returns the new actions by name."""
    acts: dict[str, QAction] = {}
    path = Path(workspace_of(window).path)
    window.setWindowTitle(f"Loupe — {path.name} ({path.parent})")

    file = _menu(window, "&File")
    first = file.actions()[0] if file.actions() else None
    acts["new_workspace"] = _act(window, file, "New workspace…", lambda: new_workspace(window), "Ctrl+Shift+N",
                                 before=first)
    acts["open_workspace"] = _act(window, file, "Open workspace…", lambda: open_workspace(window), "Ctrl+Shift+O",
                                  before=first)
    recent_menu = QMenu("Recent workspaces", window)
    recent_menu.setObjectName("recent_workspaces")
    recent_menu.aboutToShow.connect(lambda: _fill_recent(window, recent_menu))
    file.insertMenu(first, recent_menu)
    _fill_recent(window, recent_menu)
    file.insertSeparator(first)
    acts["import"] = _act(window, file, "Import…", lambda: open_import(window), "Ctrl+I",
                          tip="Import folders or files, DICOM, radiograph or photograph pictures", before=first)
    quit_action = next((a for a in file.actions() if a.text() == "Quit"), None)
    acts["export"] = _act(window, file, "Export…", lambda: open_export(window), "Ctrl+E",
                          tip="CSV, JSON or DICOM SR with explanation maps, de-identified or not", before=quit_action)

    edit = _menu(window, "&Edit")
    acts["findings"] = _act(window, edit, "Findings…", lambda: open_findings(window), "Ctrl+Shift+F",
                            tip="Classes, rare classes, miss costs, severity scale")

    view = _menu(window, "&View")
    acts["tags"] = _act(window, view, "DICOM tags…", lambda: open_tags(window), "Ctrl+Shift+T",
                        tip="Searchable header of the current image")

    model = _menu(window, "&Model")
    acts["new_model"] = _act(window, model, "New model…", lambda: open_new_model(window), "Ctrl+Shift+M")
    acts["settings"] = _act(window, model, "Queue and retraining settings…", lambda: open_settings(window),
                            "Ctrl+Shift+G")
    strategy_menu = QMenu("Queue strategy", window)
    strategy_menu.setObjectName("queue_strategy_menu")
    model.addMenu(strategy_menu)
    queue = getattr(window, "queue", None)
    if queue is not None and hasattr(queue, "strategy"):
        for i in range(queue.strategy.count()):
            name = queue.strategy.itemText(i)
            a = _act(window, strategy_menu, name, lambda n=name: set_strategy(window, n),
                     f"Ctrl+Alt+{i + 1}" if i < 9 else None, name=f"ws.strategy.{name}")
            a.setCheckable(True)
            acts[f"strategy.{name}"] = a
        strategy_menu.aboutToShow.connect(lambda: [a.setChecked(a.text() == queue.strategy.currentText())
                                                   for a in strategy_menu.actions()])
    training = getattr(window, "training", None)
    if training is not None:
        model.addSeparator()
        acts["activate"] = _act(window, model, "Activate selected version…", training.activate_selected,
                                "Ctrl+Shift+A")
        acts["rollback"] = _act(window, model, "Roll back…", training.rollback, "Ctrl+Shift+B")

    overlay = getattr(window, "overlay", None)
    if overlay is not None:
        explain = _menu(window, "E&xplain")
        acts["method_next"] = _act(window, explain, "Next explanation method", lambda: _step(overlay.method, 1), "M")
        acts["method_prev"] = _act(window, explain, "Previous explanation method", lambda: _step(overlay.method, -1),
                                   "Shift+M")
        acts["target_next"] = _act(window, explain, "Next target class", lambda: _step(overlay.target, 1), "T")
        acts["target_prev"] = _act(window, explain, "Previous target class", lambda: _step(overlay.target, -1),
                                   "Shift+T")
        acts["faithfulness"] = _act(window, explain, "Check faithfulness", overlay.check_faithfulness, "K")

    help_menu = _menu(window, "&Help")
    acts["verify_audit"] = _act(window, help_menu, "Verify audit log", lambda: verify_audit(window), "Ctrl+Shift+V")
    _fill_missing_shortcuts(window)
    _embed_settings(window)
    viewer = getattr(window, "viewer", None)
    if viewer is not None and hasattr(viewer, "frame_shown"):
        viewer.frame_shown.connect(lambda path, frame, frames: on_frame_shown(window, path, frame, frames))
    window.workstation_actions = acts
    return acts


def _step(combo, delta: int) -> None:
    if combo.count():
        combo.setCurrentIndex((combo.currentIndex() + delta) % combo.count())


def _fill_missing_shortcuts(window) -> None:
    taken = {a.shortcut().toString() for a in window.findChildren(QAction) if not a.shortcut().isEmpty()}
    for action in window.findChildren(QAction):
        text = action.text().replace("&", "")
        wanted = MISSING_SHORTCUTS.get(text)
        if action.shortcut().isEmpty() and wanted and wanted not in taken and action.menu() is None:
            action.setShortcut(QKeySequence(wanted))
            if action not in window.actions():
                window.addAction(action)
            taken.add(wanted)


def _fill_recent(window, menu: QMenu) -> None:
    from app.workstation.workspaces import recent

    menu.clear()
    items = recent(window.settings)
    for i, path in enumerate(items):
        a = menu.addAction(f"&{i + 1} {Path(path).name} — {Path(path).parent}")
        a.triggered.connect(lambda _=False, p=path: switch_to(window, p))
    if not items:
        menu.addAction("(none yet)").setEnabled(False)


def _embed_settings(window) -> None:
    """Put the queue and retraining settings into the queue panel, and keep the panel's strategy/size and the
    training panel's settings equal to the stored values."""
    queue = getattr(window, "queue", None)
    if queue is None or queue.layout() is None:
        return
    from PySide6.QtWidgets import QToolButton

    from app.workstation.settings_widget import QueueSettingsWidget

    widget = QueueSettingsWidget(runner_of(window), workspace_of(window),
                                 getattr(window.settings, "annotator", "") or "app")
    widget.setObjectName("queue_settings")
    toggle = QToolButton(text="Queue and retraining settings ▸", checkable=True)
    toggle.setToolButtonStyle(Qt.ToolButtonTextOnly)
    widget.setVisible(False)
    toggle.toggled.connect(widget.setVisible)
    toggle.toggled.connect(lambda on: toggle.setText("Queue and retraining settings " + ("▾" if on else "▸")))
    queue.layout().addWidget(toggle)
    queue.layout().addWidget(widget)
    window.queue_settings = widget
    widget.changed.connect(lambda values: apply_settings_to_panels(window, values))
    widget.reload()


def apply_settings_to_panels(window, values: dict) -> None:
    """Show the stored settings in the queue panel's strategy/size and the training panel (which the automatic
    retrain uses), so the window and `loupe` run with the same values."""
    queue = getattr(window, "queue", None)
    if queue is not None:
        if hasattr(queue, "strategy") and values.get("strategy"):
            queue.strategy.setCurrentText(values["strategy"])
        if hasattr(queue, "size") and values.get("batch"):
            queue.size.setValue(int(values["batch"]))
    training = getattr(window, "training", None)
    if training is None:
        return
    for key, attr in (("train.mode", "mode"), ("train.loss", "loss"), ("train.sampler", "sampler"),
                      ("train.device", "device")):
        widget = getattr(training, attr, None)
        if widget is not None and hasattr(widget, "setCurrentText") and values.get(key):
            widget.setCurrentText(str(values[key]))
    spin = getattr(training, "epochs_spin", None)
    if spin is not None and values.get("train.epochs"):
        spin.setValue(int(values["train.epochs"]))
    defaults = getattr(training, "config_defaults", None)
    if isinstance(defaults, dict):
        for key in ("batch_size", "lr"):
            if values.get(f"train.{key}") is not None:
                defaults[key] = values[f"train.{key}"]


def on_frame_shown(window, path: str, frame: int, frames: int) -> None:
    """A multi-frame image paged to another frame: show the model's prediction for that frame (frame 1 shows the
    stored prediction, which is of the first frame)."""
    if frames <= 1:
        return
    image_id = window.worklist.current_image_id() if hasattr(window, "worklist") else None
    row = getattr(window, "rows", {}).get(image_id) if image_id else None
    model = getattr(window, "loaded_model", None)
    panel = getattr(window, "prediction", None)
    if row is None or row.ref.path != path or not model or panel is None:
        return
    thresholds, version = model.get("thresholds"), model.get("version", "")

    def show(prediction) -> None:
        if window.viewer.current_path != path or window.viewer.frame_index() != frame:
            return  # the reader moved on
        panel.show_prediction(prediction, thresholds, version)
        panel.title.setText(panel.title.text() + f" · frame {frame + 1} of {frames}")

    if frame == 0:
        show(row.prediction) if row.prediction is not None else None
        return
    from core.models.frame_predict import predict_frame

    panel.title.setText(f"predicting frame {frame + 1} of {frames}…")
    runner_of(window, background=False).submit("frame_predict", predict_frame, workspace_of(window), image_id, frame,
                                               on_done=show, on_error=window.notify_error)


# --- actions --------------------------------------------------------------------------------------


def new_workspace(window) -> None:
    """File → New workspace…: a new file, opened in place of this one (the Findings dialog follows)."""
    from app.workstation.workspaces import ask_new_path

    path = ask_new_path(window, window.settings)
    if path is not None:
        switch_to(window, path)


def open_workspace(window) -> None:
    """File → Open workspace…"""
    from app.workstation.workspaces import ask_open_path

    path = ask_open_path(window, window.settings)
    if path is not None:
        switch_to(window, path)


def switch_to(window, path):
    """Open ``path`` in place of ``window``; returns the new window (or None)."""
    from app.workstation.workspaces import switch_workspace

    try:
        return switch_workspace(window, path)
    except Exception as exc:  # noqa: BLE001 - a file that is not a workspace: said plainly, this one stays open
        window.notify_error(f"cannot open {path}: {exc}")
        return None


def open_findings(window, first_run: bool = False):
    """Edit → Findings… (also at first run). Returns the dialog (non-modal)."""
    from app.workstation.findings_dialog import FindingsDialog

    dialog = FindingsDialog(window, first_run=first_run)
    dialog.saved.connect(lambda f: (window.notify(f"findings saved: {', '.join(f.classes)}"), window.reload(),
                                    getattr(window, "queue_settings", None) and window.queue_settings.reload()))
    dialog.widened.connect(lambda v: _model_changed(window, v, f"new model version {v} with a wider head is active"))
    dialog.show()
    window.findings_dialog = dialog
    return dialog


def open_import(window, paths: Optional[list[str]] = None):
    """File → Import…"""
    from app.workstation.import_dialog import ImportDialog

    dialog = ImportDialog(window, paths)
    dialog.imported.connect(lambda report: (window.notify(f"imported {report.imported}, already present "
                                                          f"{report.skipped}, rejected {len(report.errors)}"),
                                            window.reload()))
    dialog.show()
    window.import_dialog = dialog
    return dialog


def open_new_model(window):
    """Model → New model…"""
    from app.workstation.model_dialog import NewModelDialog

    dialog = NewModelDialog(window)
    dialog.created.connect(lambda v: _model_changed(window, v.version, f"model {v.version} ({v.arch}) created; "
                                                                         f"weights: {v.weights}"))
    dialog.show()
    window.new_model_dialog = dialog
    return dialog


def _model_changed(window, version: str, message: str) -> None:
    window.notify(message)
    training = getattr(window, "training", None)
    if training is not None and hasattr(training, "refresh_versions"):
        training.refresh_versions()
    handler = getattr(window, "_on_model_changed", None)
    if handler is not None:
        handler(version)  # re-predict the pool with the new version, then refresh the queue
    else:
        window.reload()


def open_settings(window):
    """Model → Queue and retraining settings…"""
    from app.workstation.settings_widget import SettingsDialog

    dialog = SettingsDialog(runner_of(window), workspace_of(window),
                            getattr(window.settings, "annotator", "") or "app", window)
    dialog.widget.changed.connect(lambda values: apply_settings_to_panels(window, values))
    embedded = getattr(window, "queue_settings", None)
    if embedded is not None:
        dialog.accepted.connect(embedded.reload)
    dialog.show()
    window.settings_dialog = dialog
    return dialog


def set_strategy(window, name: str) -> None:
    """Model → Queue strategy → NAME: store it (the queue and `loupe queue refresh` use it) and show it."""
    from core.active.settings import write_setting

    queue = getattr(window, "queue", None)
    if queue is not None:
        queue.strategy.setCurrentText(name)
    runner_of(window).submit("settings", write_setting, workspace_of(window), "strategy", name,
                             getattr(window.settings, "annotator", "") or "app",
                             on_done=lambda _v: (window.notify(f"queue strategy: {name} (F5 refreshes the queue)"),
                                                 getattr(window, "queue_settings", None)
                                                 and window.queue_settings.reload()),
                             on_error=window.notify_error)


def open_export(window):
    """File → Export…"""
    from app.workstation.export_dialog import ExportDialog

    dialog = ExportDialog(window)
    dialog.exported.connect(lambda report: window.notify(f"exported to {report.out}"))
    dialog.show()
    window.export_dialog = dialog
    return dialog


def verify_audit(window) -> None:
    """Help → Verify audit log: checked off the UI thread, the outcome in a message box."""
    from app.workstation.export_dialog import show_audit_result, verify_audit as check

    window.notify("verifying the audit log…")

    def done(result) -> None:
        window.audit_box = show_audit_result(window, result)
        window.notify("audit log intact" if result[0] else f"audit log broken at entry {result[1]}")

    runner_of(window).submit("audit", check, workspace_of(window), on_done=done, on_error=window.notify_error)


def open_tags(window):
    """View → DICOM tags…: the header of the image on screen."""
    from app.workstation.tags_dialog import TagsDialog

    image_id = window.worklist.current_image_id() if hasattr(window, "worklist") else None
    row = getattr(window, "rows", {}).get(image_id) if image_id else None
    if row is None:
        window.notify("open an image first")
        return None
    if row.ref.record.kind != "dicom":
        window.notify(f"{Path(row.ref.path).name} is a {row.ref.record.modality} picture, not DICOM: it has no tags")
        return None
    dialog = TagsDialog(runner_of(window, background=False), row.ref.path, Path(row.ref.path).name, window)
    dialog.show()
    window.tags_dialog = dialog
    return dialog
