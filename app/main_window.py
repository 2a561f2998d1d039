"""The Loupe main window: worklist, viewer, reading panels, queue, training and metrics.

The window keeps the layout and the menus; everything it knows about the
workspace comes through one :class:`app.session.ReviewSession` (``window.session``),
which owns the workspace, the workers and the training controller. No SQLite
call, model or disk work runs on the UI thread; training runs in its own process.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QApplication, QDockWidget, QFileDialog, QInputDialog, QLabel, QLineEdit, QMainWindow,
                               QMessageBox, QScrollArea, QTabWidget, QVBoxLayout, QWidget)

from app import jobs
from app import team_actions
from app.dialogs import show_shortcuts
from app.session import Reader, ReviewSession, resolve_reader, trace
from app.settings import Settings
from app.widgets.case_banner import CaseBanner
from app.widgets.image_view import ImageView
from app.widgets.label_panel import LabelPanel
from app.widgets.prediction_panel import PredictionPanel
from app.widgets.worklist import WorklistWidget
from core.worklist import WorklistRow

logger = logging.getLogger(__name__)


class MainWindow(QMainWindow):
    """The reading-room workstation window for one workspace."""

    predictions_refreshed = Signal()
    worklist_loaded = Signal()

    def __init__(self, workspace, settings: Optional[Settings] = None, parent: Optional[QWidget] = None,
                 reader: Optional[str] = None, ask_reader: bool = True):
        super().__init__(parent)
        self.workspace = workspace
        self.settings = settings or Settings()
        # who labels is settled now, before any key: --reader / LOUPE_READER / the remembered name, else asked below
        self.session = ReviewSession(workspace, resolve_reader(reader, self.settings.annotator), parent=self)
        self.runner = self.session.interactive
        self.queue_mode = False
        self._shown: Optional[str] = None  # the case on screen
        self._from_queue: Optional[str] = None  # the case on screen when it was opened from the queue (N, queue panel)
        self._awaiting_queue: Optional[str] = None  # the case on screen when the next queued case was asked for
        # and the queue was empty: the top case opens once the queue has been refilled (unless the reader moved)
        self._clock: Optional[tuple[str, float, str]] = None  # (key, time, image) of the last Enter/N, for the trace
        self._labelled_since_check = False
        self.setWindowTitle(f"Loupe — {Path(workspace.path).name}")
        screen = QApplication.primaryScreen().availableGeometry() if QApplication.primaryScreen() else None
        self.resize(min(1500, screen.width()) if screen else 1500, min(920, screen.height()) if screen else 920)
        self.setAcceptDrops(True)
        self._build()
        self._menus()
        for runner in (self.session.interactive, self.session.background):
            runner.busyChanged.connect(self._on_busy)
        self._connect_session()
        QTimer.singleShot(0, self.reload)
        QTimer.singleShot(50, self._probe_device)
        if self.session.reader is None and ask_reader:
            QTimer.singleShot(0, self.ask_reader)

    # --- the session ------------------------------------------------------------------------------

    @property
    def rows(self) -> dict[str, WorklistRow]:
        """``{image id: worklist row}`` as the session last read them."""
        return self.session.rows

    @property
    def loaded_model(self) -> Optional[dict]:
        """Summary of the active model (version, arch, classes, thresholds), or None."""
        return self.session.model

    @property
    def training_controller(self):
        """The session's training controller (one run at a time, in its own process)."""
        return self.session.training

    @property
    def new_labels(self) -> int:
        """Confirmed labels since the last training started (read from the workspace)."""
        progress = self.session.progress
        return progress.new_labels if progress is not None else 0

    def _connect_session(self) -> None:
        s = self.session
        s.rows_changed.connect(self._on_rows)
        s.queue_changed.connect(self._on_queue_changed)
        s.row_changed.connect(self._on_row)
        s.model_changed.connect(self._on_model)
        s.progress_changed.connect(self.worklist.show_progress)
        s.progress_changed.connect(self._check_retrain)
        s.label_failed.connect(self._on_label_failed)
        s.error.connect(self.notify_error)
        s.training_event.connect(lambda _ev: None)  # the training panel follows the controller itself

    # --- layout ---------------------------------------------------------------------------------

    def _build(self) -> None:
        from app.widgets.overlay_panel import OverlayPanel
        from app.widgets.queue_panel import QueuePanel

        self.viewer = ImageView(self.runner)
        self.setCentralWidget(self.viewer)
        self.worklist = WorklistWidget()
        self.worklist.image_selected.connect(self.show_image)
        self.viewer.image_loaded.connect(self._on_image_loaded)
        self._ready_pending = None
        self.viewer.painted.connect(self._on_viewer_painted)
        self.worklist_dock = self._dock("Worklist", self.worklist, Qt.LeftDockWidgetArea)
        self.prediction = PredictionPanel()
        self.prediction.similar_activated.connect(self.worklist.select)
        self.labels = LabelPanel(self.session)
        self.labels.annotator_needed.connect(
            lambda: self.notify_error("not saved: say who is labelling first — Edit → Reader… "
                                      "(or start Loupe with --reader NAME or LOUPE_READER)"))
        self.labels.saved.connect(self._on_label_saved)
        self.labels.install_shortcuts(self)
        self.overlay = OverlayPanel(self.runner, self.workspace, self.viewer)
        self.queue = QueuePanel(self.session)
        self.queue.open_image.connect(self._open_from_queue)
        self.banner = CaseBanner(self.session)
        read = QWidget()
        read_layout = QVBoxLayout(read)
        read_layout.setContentsMargins(0, 0, 0, 0)
        read_layout.addWidget(self.banner)
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
        self.reader_label = QLabel("")
        self.jobs_label = QLabel("")
        self.notice = QLabel("")
        bar = self.statusBar()
        bar.addWidget(self.pixel, 1)
        bar.addWidget(self.notice, 2)
        for w in (self.jobs_label, self.reader_label, self.model_label, self.device):
            bar.addPermanentWidget(w)
        self.viewer.pixel_info.connect(self.pixel.setText)
        self.viewer.image_damaged.connect(self._on_image_damaged)
        self._show_reader()

    def _bottom_docks(self) -> None:
        from app.widgets.training_panel import TrainingPanel

        self.training = TrainingPanel(self.session.training, str(self.workspace.path))
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

            self._metrics = MetricsPanel(self.session.background, str(self.workspace.path))
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
        act(edit, "Reader…", self.ask_reader, tip="Who is labelling (recorded on every label)")
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
        act(read, "Next queued case", lambda: self.next_queued(), "N")
        self.queue_action = act(read, "Queue mode", self.toggle_queue_mode, "Ctrl+Shift+Q")
        self.queue_action.setCheckable(True)
        act(read, "Reading team and adjudication…", lambda: team_actions.open_team(self), "Ctrl+Alt+J")
        model = self.menuBar().addMenu("&Model")
        act(model, "Predict all images", lambda: self.predict_all(), "Ctrl+P")
        act(model, "Refresh queue", lambda: self.queue.refresh(), "F5")
        act(model, "Train now", self.train_now, "Ctrl+T")
        act(model, "Evaluate on test split", lambda: (self.metrics_dock.show(), self.metrics.evaluate_active("test")))
        help_menu = self.menuBar().addMenu("&Help")
        act(help_menu, "Keyboard shortcuts", lambda: show_shortcuts(self), "F1")
        from app.workstation.menus import install as install_workstation

        install_workstation(self)  # workspaces, findings, import/export, new model, settings, audit, tags
        from app.workstation.fast_reading import install as install_fast_reading

        install_fast_reading(self)  # Model → Fast reading, Make fast reading version…

    # --- data ---------------------------------------------------------------------------------------

    def reload(self) -> None:
        """Re-read the worklist, the active model summary, the queue and the counters (off the UI thread)."""
        self.session.reload()

    def _on_rows(self, rows) -> None:
        self.worklist.set_rows(rows)
        self.queue.names = {r.ref.id: Path(r.ref.path).name for r in rows}
        self.queue.set_items(self.session.queue)
        if self.worklist.current_image_id() is None:
            self.worklist.step(0)
        elif self._shown is not None:
            self.show_image(self._shown)  # a fresh prediction, same case: the reader's choice stays
        trace("rows", n=len(rows), queued=len(self.session.queue))
        self.worklist_loaded.emit()

    def _on_model(self, model) -> None:
        self.labels.set_severity_scale(self.session.severity)
        if model:
            self.model_label.setText(f"model: {model['version']} ({model['arch']})")
            self.labels.set_classes(model["classes"], model["multilabel"])
        else:
            self.model_label.setText("model: none")
            self.labels.set_classes(self.session.classes)
        self.overlay.set_model(model)

    def show_image(self, image_id: str) -> None:
        """Show one image in the viewer and its label, prediction and explanation panels.

        Showing the case already on screen again (a re-read worklist) only refreshes
        the prediction and the reason: the view and the label being chosen stay.
        """
        row = self.rows.get(image_id)
        if row is None:
            return
        same = image_id == self._shown and self.viewer.current_path == row.ref.path
        if image_id != self._shown:
            self._from_queue = None  # set again by _open_from_queue when the queue opened it
            self._awaiting_queue = None
        self._shown = image_id
        model = self.loaded_model
        if not same:
            self.viewer.set_image(row.ref.path, row.ref.record, frame=self.session.take_prefetched(row.ref.path))
            self.labels.show_image(image_id)
            self.overlay.show_image(row.ref)
            if model:
                self.runner.submit("similar", jobs.similar_cases, self.workspace, image_id,
                                   on_done=self.prediction.show_similar,
                                   on_error=lambda _m: self.prediction.show_similar([]))
        self.prediction.show_prediction(row.prediction, model["thresholds"] if model else None,
                                        model["version"] if model else "",
                                        grade_names=model.get("severity_grades") if model else None)
        self.banner.show_case(image_id)
        self.queue.show_reason(image_id)
        if not same:  # while this case is read, decode the one N will open next
            self.session.prefetch(self.session.next_queued(after=image_id))

    def _on_image_damaged(self, path: str, reason: str) -> None:
        """The viewer found the shown image damaged: persist it (off the UI thread) and refresh its row."""
        image_id = next((i for i, r in self.rows.items() if r.ref.path == path), None)
        if image_id is not None:
            self.runner.submit(f"damaged-{image_id}", jobs.mark_damaged, self.workspace, image_id, reason,
                               on_done=self._on_row)

    def _on_image_loaded(self, path: str) -> None:
        """A case's frame is in the viewer (its prediction is set in the same turn): the benchmark's trace line
        is written once the viewer has painted it, with the time since the Enter/N that led here."""
        row = self.rows.get(self._shown) if self._shown else None
        if row is None or row.ref.path != path:
            return
        image_id, clock = self._shown, self._clock
        if clock is not None and clock[2] != image_id:
            self._clock = None
        else:
            clock = None
        self._ready_pending = (image_id, clock, int(self.session.queue_item(image_id) is not None))
        self.viewer.update()

    def _on_viewer_painted(self) -> None:
        """The viewer has drawn the case (the window flushes it to the screen in the same turn): trace it.

        Written here, at the end of the paint, not from a zero-delay timer queued by it: under X such a timer
        could wait for the next input or worker event, which made a case look hundreds of ms slower than it
        was on screen.
        """
        if self._ready_pending is None:
            return
        image_id, clock, queued = self._ready_pending
        self._ready_pending = None
        since = (f"{clock[0]}_ms", f"{(time.perf_counter() - clock[1]) * 1000:.1f}") if clock else ("after", "none")
        trace("case_ready", image=image_id, queued=queued, **{since[0]: since[1]})

    def _on_row(self, row: WorklistRow) -> None:
        self.worklist.update_row(row)
        if row.ref.id == self._shown:
            self.banner.show_case(row.ref.id)

    # --- labelling ----------------------------------------------------------------------------------

    def ask_reader(self) -> None:
        """Ask who is labelling (at start-up, or from Edit → Reader…); never as a side effect of a labelling key.

        The dialog is window-modal but does not block the event loop; the name is remembered.
        """
        dialog = QInputDialog(self)
        dialog.setWindowTitle("Reader")
        dialog.setLabelText("Who is labelling? (recorded on every label)")
        dialog.setTextEchoMode(QLineEdit.Normal)
        dialog.setTextValue(self.session.reader.name if self.session.reader else self.settings.annotator)
        dialog.setWindowModality(Qt.WindowModal)
        dialog.textValueSelected.connect(self.set_reader)
        dialog.open()
        self._reader_dialog = dialog

    def set_reader(self, name: str, role: str = "") -> None:
        """Label as ``name`` from now on (remembered in the app settings)."""
        if not name.strip():
            return
        self.session.reader = Reader(name.strip(), role)
        self.settings.annotator = name.strip()
        self._show_reader()

    ask_annotator = ask_reader  # the older name (Edit → Annotator name…)

    def _show_reader(self) -> None:
        reader = self.session.reader
        self.reader_label.setText(f"reader: {reader.name}" if reader else "reader: not set (Edit → Reader…)")

    def confirm_and_next(self) -> None:
        """Commit the chosen label and move on: to the next queued case at once when working the queue (queue
        mode, or a case opened from the queue with ``N``), else to the next worklist row once it is saved.

        The next case is decided here, at the key, never by when the save returns: ``Enter`` then ``N`` typed
        at once lead to the same case whatever the commit's speed (a case opened with ``N`` is followed by the
        next queued case, and the ``N`` after it finds that case already open).
        """
        image_id = self.labels.image_id
        working_queue = self.queue_mode or (image_id is not None and image_id == self._from_queue)
        if self.labels.commit():
            self._clock = ("enter", time.perf_counter(), image_id)
            trace("enter", image=image_id)
            if working_queue:
                # the fast path: the next case opens while the commit runs (the one being saved is skipped);
                # a commit that fails is said in red and its case stays first in the queue
                name = Path(self.rows[image_id].ref.path).name if image_id in self.rows else image_id
                self.notify(f"saving label for {name}…")
                self.next_queued(clock=False)

    def _on_label_saved(self, image_id: str, _label) -> None:
        name = Path(self.rows[image_id].ref.path).name if image_id in self.rows else image_id
        trace("saved", image=image_id)
        self.notify(f"saved label for {name}")
        if self._shown == image_id:  # still on the case just labelled (the reader did not move on meanwhile)
            if self.queue_mode or self._from_queue == image_id:
                self.next_queued(clock=False)  # e.g. the queue was empty at Enter and has been topped up since
            else:
                self.worklist.step(1)
        self._labelled_since_check = True  # the counters re-read after this commit decide about retraining

    def _check_retrain(self, progress) -> None:
        """After new labels, start the automatic retrain once the workspace's count reaches the setting."""
        if not self._labelled_since_check or progress is None:
            return
        self._labelled_since_check = False
        if progress.retrain_due and not self.training_controller.running:
            self.notify("enough new labels: fine-tuning in the background")
            self.train_now()

    def _on_label_failed(self, image_id: str, message: str) -> None:
        name = Path(self.rows[image_id].ref.path).name if image_id in self.rows else image_id
        self.notify_error(f"label for {name} NOT saved: {message}"
                          + ("; it stays in the queue" if self.session.queue_item(image_id) else ""))

    def toggle_queue_mode(self) -> None:
        """Queue mode: Enter saves and opens the next queued case; the reading panel says why it was picked."""
        self.queue_mode = not self.queue_mode
        self.queue_action.setChecked(self.queue_mode)
        self.side.setCurrentIndex(0)
        self.notify("queue mode on: Enter saves and opens the next queued case" if self.queue_mode
                    else "queue mode off")
        if self.queue_mode:
            self.next_queued()

    def next_queued(self, clock: bool = True) -> None:
        """Open the highest-ranked case still waiting in the active-learning queue."""
        image_id = self.session.next_queued()
        if image_id is None:
            refilling = self.session.background.busy("queue")
            if self.session.model is not None and not refilling:
                self.session.refresh_queue()
                refilling = True
            if refilling:  # the reader asked for the next case: it opens as soon as the queue is refilled
                self._awaiting_queue = self._shown or ""
                self.notify("the queue is empty: refilling it in the background; the next case opens when ready")
            else:
                self.notify("the queue is empty: refresh it (F5) after predicting")
            return
        if clock:
            trace("n", image=image_id)
            if self._clock is None:
                self._clock = ("n", time.perf_counter(), self._shown)
        else:
            trace("open", image=image_id)  # the case Enter moves on to (the benchmark waits for this one)
        self._open_from_queue(image_id)

    def _on_queue_changed(self, _items) -> None:
        """The queue was re-read: if the reader is waiting for the next queued case (the queue ran dry), open it;
        else make sure the case that comes next (a top-up re-ranks the queue) is being prefetched."""
        following = self.session.next_queued(after=self._shown)
        if self._awaiting_queue is not None and self._awaiting_queue == (self._shown or "") and following:
            self._awaiting_queue = None
            self.next_queued(clock=False)
        elif self._shown is not None:
            self.session.prefetch(following)

    def _open_from_queue(self, image_id: str) -> None:
        if not self.worklist.select(image_id):
            self.worklist.status_filter.setCurrentIndex(0)
            self.worklist.search.clear()
            self.worklist.select(image_id)
        if self._shown == image_id:
            self._from_queue = image_id
        self.side.setCurrentIndex(0)

    # --- model work --------------------------------------------------------------------------------

    def predict_all(self, then_refresh_queue: bool = False) -> None:
        """Predict every image with the active model in the background, then refresh the worklist
        (and the active-learning queue, which reuses the outputs just cached, when asked)."""
        self.notify("predicting all images…")
        self.session.background.submit("predict", jobs.predict_all, self.workspace,
                           on_done=lambda message: self._on_predicted(message, then_refresh_queue),
                           on_error=self.notify_error, on_progress=self._on_progress)

    def _on_predicted(self, message: str, refresh_queue: bool = False) -> None:
        self.notify(message)
        self.reload()
        self.predictions_refreshed.emit()
        if refresh_queue:
            self.session.refresh_queue()

    def _on_progress(self, progress) -> None:
        self.jobs_label.setText(f"{progress.message} {progress.done}/{progress.total}")

    def train_now(self) -> None:
        """Start fine-tuning in its own process with the training panel's settings."""
        from core.active.loop import mark_training_started

        self.train_dock.show()
        self.train_dock.raise_()
        if self.training.start():
            # labels written from now on count towards the next round (the counters re-read it)
            self.session.db.submit("mark-training", mark_training_started, self.workspace,
                                   on_done=lambda _r: self.session.reload_queue(), on_error=self.notify_error)

    def _on_thresholds_saved(self, version: str) -> None:
        active = self.session.model
        if active is not None and active["version"] == version:
            self.notify(f"site threshold saved for {version}: re-deciding the predictions")
            self.session.background.submit("predict", jobs.redecide, self.workspace, on_done=self._on_predicted,
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
        self.session.background.submit("import", jobs.import_files, self.workspace, paths, labels_csv,
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
        self.runner.submit("device", jobs.device_summary,
                           on_done=lambda text: (self.device.setText(text), trace("device", ready=1)),
                           on_error=lambda m: self.device.setText("device: unknown"))

    def _on_busy(self, _n: int) -> None:
        n = len(self.session.interactive._slots) + len(self.session.background._slots)
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
        self.session.shutdown()
        event.accept()
