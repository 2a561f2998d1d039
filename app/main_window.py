"""The Loupe main window: worklist, viewer, reading panels, queue, training and metrics.

The window wires widgets to the workspace and to background jobs; it decides
nothing clinical. All model, disk and training work runs off the UI thread
(``app.workers.Runner`` for jobs, a separate process for training).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QApplication, QDockWidget, QFileDialog, QInputDialog, QLabel, QMainWindow, QMessageBox,
                               QScrollArea, QTabWidget, QVBoxLayout, QWidget)

from app import jobs
from app import team_actions
from app.dialogs import show_shortcuts
from app.settings import Settings
from app.widgets.image_view import ImageView
from app.widgets.label_panel import LabelPanel
from app.widgets.prediction_panel import PredictionPanel
from app.widgets.worklist import WorklistWidget
from app.workers import Runner
from core.worklist import WorklistRow, worklist_rows

logger = logging.getLogger(__name__)


class MainWindow(QMainWindow):
    """The reading-room workstation window for one workspace."""

    predictions_refreshed = Signal()
    worklist_loaded = Signal()

    def __init__(self, workspace, settings: Optional[Settings] = None, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.workspace = workspace
        self.settings = settings or Settings()
        self.runner = Runner(self)
        self.rows: dict[str, WorklistRow] = {}
        self.loaded_model = None  # summary dict of the active version (classes, thresholds), set by a job
        self.queue_mode = False
        self.new_labels = 0
        self.setWindowTitle(f"Loupe — {Path(workspace.path).name}")
        screen = QApplication.primaryScreen().availableGeometry() if QApplication.primaryScreen() else None
        self.resize(min(1500, screen.width()) if screen else 1500, min(920, screen.height()) if screen else 920)
        self.setAcceptDrops(True)
        self._build()
        self._menus()
        self.runner.busyChanged.connect(self._on_busy)
        QTimer.singleShot(0, self.reload)
        QTimer.singleShot(50, self._probe_device)

    # --- layout ---------------------------------------------------------------------------------

    def _build(self) -> None:
        from app.widgets.overlay_panel import OverlayPanel
        from app.widgets.queue_panel import QueuePanel

        self.viewer = ImageView(self.runner)
        self.setCentralWidget(self.viewer)
        self.worklist = WorklistWidget()
        self.worklist.image_selected.connect(self.show_image)
        self.worklist_dock = self._dock("Worklist", self.worklist, Qt.LeftDockWidgetArea)
        self.prediction = PredictionPanel()
        self.prediction.similar_activated.connect(self.worklist.select)
        self.labels = LabelPanel()
        self.labels.annotator = self.settings.annotator
        self.labels.annotator_needed.connect(self.ask_annotator)
        self.labels.saved.connect(self._on_label_saved)
        self.labels.undone.connect(self._refresh_row)
        self.labels.install_shortcuts(self)
        self.overlay = OverlayPanel(self.runner, self.workspace, self.viewer)
        self.queue = QueuePanel(self.runner, self.workspace)
        self.queue.open_image.connect(self._open_from_queue)
        read = QWidget()
        read_layout = QVBoxLayout(read)
        read_layout.setContentsMargins(0, 0, 0, 0)
        read_layout.addWidget(self.prediction)
        read_layout.addWidget(self.labels, 1)
        self.side = QTabWidget()
        self.side.addTab(read, "Read && label")
        self.side.addTab(self.overlay, "Explain")
        self.side.addTab(self.queue, "Queue")
        self.reading_dock = self._dock("Reading", self.side, Qt.RightDockWidgetArea)
        # the reading panel keeps the full height (its label buttons never go under the training/metrics docks)
        self.setCorner(Qt.BottomRightCorner, Qt.RightDockWidgetArea)
        self.resizeDocks([self.worklist_dock, self.reading_dock], [480, 340], Qt.Horizontal)
        self.labels.activated.connect(lambda: self.side.setCurrentIndex(0) if not self.queue_mode else None)
        self._bottom_docks()
        self.pixel = QLabel()
        self.device = QLabel("device: …")
        self.model_label = QLabel("model: none")
        self.jobs_label = QLabel("")
        self.notice = QLabel("")
        bar = self.statusBar()
        bar.addWidget(self.pixel, 1)
        bar.addWidget(self.notice, 2)
        for w in (self.jobs_label, self.model_label, self.device):
            bar.addPermanentWidget(w)
        self.viewer.pixel_info.connect(self.pixel.setText)
        self.viewer.image_damaged.connect(self._on_image_damaged)

    def _bottom_docks(self) -> None:
        from app.training_controller import TrainingController
        from app.widgets.training_panel import TrainingPanel

        self.training_controller = TrainingController(parent=self)
        self.training = TrainingPanel(self.training_controller, str(self.workspace.path))
        self.training.model_changed.connect(self._on_model_changed)
        self._metrics = None  # built on first use: its plots load matplotlib, which start-up need not pay for
        train_dock = self._dock("Training", self.training, Qt.BottomDockWidgetArea)
        metrics_dock = self._dock("Metrics", QLabel("Metrics appear here: Model → Evaluate on test split"),
                                  Qt.BottomDockWidgetArea)
        self.tabifyDockWidget(train_dock, metrics_dock)
        train_dock.raise_()
        train_dock.hide()
        metrics_dock.hide()
        self.train_dock, self.metrics_dock = train_dock, metrics_dock
        metrics_dock.visibilityChanged.connect(lambda visible: visible and self.metrics)
        for dock in (train_dock, metrics_dock):
            dock.visibilityChanged.connect(lambda visible, d=dock: visible and self.resizeDocks([d], [340], Qt.Vertical))

    @property
    def metrics(self):
        """The metrics panel (created the first time it is needed)."""
        if self._metrics is None:
            from app.widgets.metrics_panel import MetricsPanel

            self._metrics = MetricsPanel(self.runner, str(self.workspace.path))
            self._metrics.thresholds_saved.connect(self._on_thresholds_saved)
            self.metrics_dock.widget().setWidget(self._metrics)
        return self._metrics

    def _dock(self, title: str, widget: QWidget, area) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(title)
        # a scroll area lets a dock shrink on small screens instead of growing the window past the screen
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.NoFrame)
        scroll.setWidget(widget)
        dock.setWidget(scroll)
        self.addDockWidget(area, dock)
        return dock

    def _menus(self) -> None:
        def act(menu, text, slot, shortcut=None, tip=""):
            action = QAction(text, self)
            if shortcut:
                action.setShortcut(QKeySequence(shortcut))
            action.setStatusTip(tip)
            action.triggered.connect(slot)
            menu.addAction(action)
            self.addAction(action)
            return action

        file = self.menuBar().addMenu("&File")
        act(file, "Open folder…", self.open_folder, "Ctrl+O", "Import a folder of DICOM or photographs")
        act(file, "Import labels CSV…", self.import_labels, "Ctrl+Shift+L")
        act(file, "Studies from the PACS…", lambda: team_actions.open_pacs(self), "Ctrl+Alt+P")
        file.addSeparator()
        act(file, "Quit", self.close, "Ctrl+Q")
        edit = self.menuBar().addMenu("&Edit")
        act(edit, "Annotator name…", self.ask_annotator)
        act(edit, "Find", lambda: self.worklist.search.setFocus(), "Ctrl+F")
        view = self.menuBar().addMenu("&View")
        for action in self.viewer.actions():
            view.addAction(action)
            self.addAction(action)
        view.addSeparator()
        view.addAction(self.train_dock.toggleViewAction())
        view.addAction(self.metrics_dock.toggleViewAction())
        read = self.menuBar().addMenu("&Read")
        act(read, "Confirm and next", self.confirm_and_next, "Return")
        act(read, "Next image", lambda: self.worklist.step(1), "Down")
        act(read, "Previous image", lambda: self.worklist.step(-1), "Up")
        act(read, "Next queued case", self.next_queued, "N")
        self.queue_action = act(read, "Queue mode", self.toggle_queue_mode, "Ctrl+Shift+Q")
        self.queue_action.setCheckable(True)
        act(read, "Reading team and adjudication…", lambda: team_actions.open_team(self), "Ctrl+Alt+J")
        model = self.menuBar().addMenu("&Model")
        act(model, "Predict all images", lambda: self.predict_all(), "Ctrl+P")
        act(model, "Refresh queue", self.queue.refresh, "F5")
        act(model, "Train now", self.train_now, "Ctrl+T")
        act(model, "Evaluate on test split", lambda: (self.metrics_dock.show(), self.metrics.evaluate_active("test")))
        help_menu = self.menuBar().addMenu("&Help")
        act(help_menu, "Keyboard shortcuts", lambda: show_shortcuts(self), "F1")
        from app.workstation.menus import install as install_workstation

        install_workstation(self)  # workspaces, findings, import/export, new model, settings, audit, tags

    # --- data ---------------------------------------------------------------------------------------

    def reload(self) -> None:
        """Re-read the worklist, the active model summary and the queue (off the UI thread)."""
        self.runner.submit("worklist", jobs.load_worklist, self.workspace, on_done=self._on_worklist,
                           on_error=self.notify_error)

    def _on_worklist(self, result) -> None:
        rows, model = result
        self.rows = {r.ref.id: r for r in rows}
        self.loaded_model = model
        self.worklist.set_rows(rows)
        if model:
            self.model_label.setText(f"model: {model['version']} ({model['arch']})")
            self.labels.set_workspace(self.workspace, model["classes"], model["multilabel"])
        else:
            self.model_label.setText("model: none")
            self.labels.set_workspace(self.workspace, self.workspace.classes())
        self.overlay.set_model(model)
        self.queue.names = {i: Path(r.ref.path).name for i, r in self.rows.items()}
        self.queue.reload()
        if self.worklist.current_image_id() is None:
            self.worklist.step(0)
        self.worklist_loaded.emit()

    def show_image(self, image_id: str) -> None:
        """Show one image in the viewer and its label, prediction and explanation panels."""
        row = self.rows.get(image_id)
        if row is None:
            return
        self.viewer.set_image(row.ref.path, row.ref.record)
        self.labels.show_image(image_id)
        model = self.loaded_model
        self.prediction.show_prediction(row.prediction, model["thresholds"] if model else None,
                                        model["version"] if model else "",
                                        grade_names=model.get("severity_grades") if model else None)
        self.overlay.show_image(row.ref)
        self.queue.show_reason(image_id)
        if model:
            self.runner.submit("similar", jobs.similar_cases, self.workspace, image_id,
                               on_done=self.prediction.show_similar, on_error=lambda _m: self.prediction.show_similar([]))

    def _on_image_damaged(self, path: str, reason: str) -> None:
        """The viewer found the shown image damaged: persist it (off the UI thread) and refresh its row."""
        image_id = next((i for i, r in self.rows.items() if r.ref.path == path), None)
        if image_id is not None:
            self.runner.submit(f"damaged-{image_id}", jobs.mark_damaged, self.workspace, image_id, reason,
                               on_done=self._on_row)

    def _refresh_row(self, image_id: str) -> None:
        # one slot per image: fast keyboard labelling must not cancel the refresh of the row labelled just before
        self.runner.submit(f"row:{image_id}", jobs.one_row, self.workspace, image_id, on_done=self._on_row)

    def _on_row(self, row: WorklistRow) -> None:
        self.rows[row.ref.id] = row
        self.worklist.update_row(row)

    # --- labelling ----------------------------------------------------------------------------------

    def ask_annotator(self) -> None:
        """Ask once for the annotator's name; it is recorded on every label."""
        name, ok = QInputDialog.getText(self, "Annotator", "Your name (recorded on every label):",
                                        text=self.settings.annotator)
        if ok and name.strip():
            self.settings.annotator = name.strip()
            self.labels.annotator = name.strip()

    def confirm_and_next(self) -> None:
        """Commit the chosen label; on success move on (the queue in queue mode, else the worklist)."""
        self.labels.commit()

    def _on_label_saved(self, image_id: str, _label) -> None:
        self._refresh_row(image_id)
        self.new_labels += 1
        self.notice.setText(f"saved label for {image_id}")
        if self.queue_mode:
            self.queue.mark_done(image_id)
            self.next_queued()
        else:
            self.worklist.step(1)
        if jobs.should_retrain(self.workspace, self.new_labels) and not self.training_controller.running:
            self.new_labels = 0
            self.notify("enough new labels: fine-tuning in the background")
            self.train_now()

    def toggle_queue_mode(self) -> None:
        """Queue mode: Next walks the active-learning queue and shows why each case was picked."""
        self.queue_mode = not self.queue_mode
        self.queue_action.setChecked(self.queue_mode)
        self.side.setCurrentWidget(self.queue if self.queue_mode else self.side.widget(0))
        self.notify("queue mode on: N = next queued case" if self.queue_mode else "queue mode off")
        if self.queue_mode:
            self.next_queued()

    def next_queued(self) -> None:
        """Open the next case of the active-learning queue."""
        image_id = self.queue.next_id()
        if image_id is None:
            self.notify("the queue is empty: refresh it (F5) after predicting")
            return
        self._open_from_queue(image_id)

    def _open_from_queue(self, image_id: str) -> None:
        if not self.worklist.select(image_id):
            self.worklist.status_filter.setCurrentIndex(0)
            self.worklist.search.clear()
            self.worklist.select(image_id)
        self.side.setCurrentIndex(0)

    # --- model work --------------------------------------------------------------------------------

    def predict_all(self, then_refresh_queue: bool = False) -> None:
        """Predict every image with the active model in the background, then refresh the worklist
        (and the active-learning queue, which reuses the outputs just cached, when asked)."""
        self.notify("predicting all images…")
        self.runner.submit("predict", jobs.predict_all, self.workspace,
                           on_done=lambda message: self._on_predicted(message, then_refresh_queue),
                           on_error=self.notify_error, on_progress=self._on_progress)

    def _on_predicted(self, message: str, refresh_queue: bool = False) -> None:
        self.notify(message)
        self.reload()
        self.predictions_refreshed.emit()
        if refresh_queue:
            self.queue.refresh()

    def _on_progress(self, progress) -> None:
        self.jobs_label.setText(f"{progress.message} {progress.done}/{progress.total}")

    def train_now(self) -> None:
        """Start fine-tuning in its own process with the training panel's settings."""
        from core.active.loop import mark_training_started

        self.train_dock.show()
        self.train_dock.raise_()
        if self.training.start():
            mark_training_started(self.workspace)

    def _on_thresholds_saved(self, version: str) -> None:
        active = self.workspace.active_model()
        if active is not None and active.version == version:
            self.notify(f"site threshold saved for {version}: re-deciding the predictions")
            self.runner.submit("predict", jobs.redecide, self.workspace, on_done=self._on_predicted,
                               on_error=self.notify_error)

    def _on_model_changed(self, version: str) -> None:
        self.notify(f"model {version} is active: re-predicting the pool, then refreshing the queue")
        # one after the other: a queue refresh started at once would run the same inference a second time
        self.predict_all(then_refresh_queue=True)

    # --- files --------------------------------------------------------------------------------------

    def open_folder(self) -> None:
        """Import a folder chosen by the person (DICOM and photographs, recursively)."""
        folder = QFileDialog.getExistingDirectory(self, "Open folder of studies", self.settings.get("last_folder", ""))
        if folder:
            self.settings.set("last_folder", folder)
            self.import_paths([folder])

    def import_labels(self) -> None:
        """Apply a labels CSV to already imported images (and import the folder beside it)."""
        path, _ = QFileDialog.getOpenFileName(self, "Labels CSV", self.settings.get("last_folder", ""), "CSV (*.csv)")
        if path:
            self.import_paths([str(Path(path).parent)], labels_csv=path)

    def import_paths(self, paths: list[str], labels_csv: Optional[str] = None) -> None:
        """Import in the background; the report lists every rejected file."""
        self.notify(f"importing {', '.join(Path(p).name for p in paths)}…")
        self.runner.submit("import", jobs.import_files, self.workspace, paths, labels_csv,
                           on_done=self._on_imported, on_error=self.notify_error)

    def _on_imported(self, report) -> None:
        from core.importer import report_details

        text = f"imported {report.imported}, already present {report.skipped}, rejected {len(report.errors)}"
        replaced = getattr(report, "replaced", ())
        if replaced:
            text += f", {len(replaced)} damaged cop{'y' if len(replaced) == 1 else 'ies'} replaced"
        self.notify(text)
        if report.errors or report.skipped or replaced:  # a labels CSV beside the images alone needs no box
            title = "Some files were not imported" if report.errors or report.skipped else "Import report"
            box = QMessageBox(QMessageBox.Warning if report.errors else QMessageBox.Information, title, text,
                              parent=self)
            box.setDetailedText(report_details(report))
            box.setModal(False)
            box.show()
        self.reload()

    def dragEnterEvent(self, event) -> None:  # noqa: N802 (Qt)
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802 (Qt)
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            self.import_paths(paths)

    # --- status ---------------------------------------------------------------------------------------

    def _probe_device(self) -> None:
        self.runner.submit("device", jobs.device_summary, on_done=self.device.setText,
                           on_error=lambda m: self.device.setText("device: unknown"))

    def _on_busy(self, n: int) -> None:
        self.jobs_label.setText(f"{n} background job(s)" if n else "")

    def notify(self, text: str) -> None:
        """A short message in the status bar (also logged)."""
        logger.info(text)
        self.notice.setStyleSheet("")
        self.notice.setText(text)

    def notify_error(self, text: str) -> None:
        """An error in plain words: status bar in red, and the log."""
        logger.warning(text)
        self.notice.setStyleSheet("color: #d05353")
        self.notice.setText(text)

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt)
        """Ask before closing during training; stop background work cleanly."""
        if self.training_controller.running:
            answer = QMessageBox.question(self, "Training is running",
                                          "A model is being fine-tuned. Stop training and close? "
                                          "Nothing is saved from an unfinished run; your labels are safe.")
            if answer != QMessageBox.Yes:
                event.ignore()
                return
            self.training_controller.cancel()
        self.runner.cancel_all()
        self.runner.wait(10000)
        event.accept()
