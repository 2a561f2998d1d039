"""The Training panel: start and follow a training run, compare versions, activate or roll back.

Training only ever runs through the :class:`~app.training_controller.TrainingController`
(its own process); this widget shows its events as they arrive: state, progress,
live loss and validation-AUC curves, the device in use, and in plain words the
promotion decision of the finished run. Registry reads and activations are quick
workspace calls made on the UI thread; every activation and rollback asks for a
reason, which the workspace writes to its audit log.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QFormLayout, QGroupBox, QHBoxLayout, QHeaderView,
                               QInputDialog, QLabel, QProgressBar, QPushButton, QSpinBox, QTableWidget,
                               QTableWidgetItem, QVBoxLayout, QWidget)

from app.theme import COLORS, SERIES
from app.widgets.line_chart import LineChart

logger = logging.getLogger(__name__)


def gpu_count() -> int:
    """How many CUDA GPUs this machine has (0 without torch's CUDA); decides whether several ranks are offered."""
    try:
        import torch

        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - no GPU information is no GPU
        return 0

COLUMNS = ("Version", "Status", "Arch", "Macro AUC", "Rare-class sensitivity", "Created", "Reason")
STATE_COLOURS = {"idle": COLORS["muted"], "running": COLORS["accent"], "done": COLORS["ok"],
                 "failed": COLORS["bad"], "cancelled": COLORS["warn"]}


def _fmt(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def rare_sensitivity(model) -> tuple[Optional[str], Optional[float]]:
    """(rare class, its validation sensitivity) recorded with a version, or (None, None)."""
    rare = model.params.get("rare_class") if model.params else None
    per_class = (model.metrics or {}).get("per_class", {})
    if rare and rare in per_class:
        return rare, per_class[rare].get("sensitivity")
    return rare, None


def read_versions(workspace_path: str) -> list:
    """Background job: the registry's versions (opening the workspace may wait for another writer)."""
    from core.workspace import Workspace

    with Workspace.open(workspace_path) as ws:
        return ws.models()


def activate_version(workspace_path: str, version: str, actor: str, reason: str) -> str:
    """Background job: make ``version`` the active model (audited with ``reason``); returns it."""
    from core.workspace import Workspace

    with Workspace.open(workspace_path) as ws:
        ws.activate_model(version, actor=actor, reason=reason)
    return version


def rollback_version(workspace_path: str, actor: str, reason: str) -> str:
    """Background job: re-activate the previously active version; returns it."""
    from core.workspace import Workspace

    with Workspace.open(workspace_path) as ws:
        return ws.rollback(actor=actor, reason=reason).version


class TrainingPanel(QWidget):
    """Settings, Start/Cancel, live progress and curves, the versions table, Activate / Roll back.

    ``TrainingPanel(controller, workspace_path, actor="app", config_defaults=None)``;
    ``config_defaults`` are extra TrainConfig fields (batch size, bootstrap count, ...)
    applied to every run. Emits ``model_changed(version)`` when the active version changes
    (a promoted run, an activation or a rollback).
    """

    model_changed = Signal(str)
    versions_loaded = Signal()  # the versions table was re-read

    def __init__(self, controller, workspace_path: str | Path, actor: str = "app",
                 config_defaults: Optional[dict] = None, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.controller = controller
        self.workspace_path = str(workspace_path)
        self.actor = actor
        self.config_defaults = dict(config_defaults or {})
        self.state = "idle"
        self.epochs = 1
        self.curves: dict[str, list] = {"step_loss": [], "train_loss": [], "val_loss": [], "val_auc": []}
        self.last_decision = ""
        from app.workers import Runner

        #: the registry is read and written here, never on the UI thread
        self.runner = Runner(self, max_threads=1)
        self.versions: list = []
        self.active_version: Optional[str] = None
        self._versions_loaded = False
        self._redraw_timer = QTimer(self, singleShot=True, interval=150)
        self._redraw_timer.timeout.connect(self._draw_curves)
        self._build()
        controller.typed_event.connect(self.on_event)
        controller.finished.connect(self.on_finished)
        controller.refused.connect(self._on_refused)
        self._set_state("running" if controller.running else "idle", "")
        self.refresh_versions()
        self._draw_curves()

    # --- layout ----------------------------------------------------------------------------

    def _build(self) -> None:
        settings = QGroupBox("Training settings")
        form = QFormLayout(settings)
        self.mode = QComboBox()
        self.mode.addItems(["frozen", "finetune", "gradual"])
        self.mode.setToolTip("frozen: train the classifier head only (fast); finetune: the whole network; "
                             "gradual: unfreeze the backbone block by block")
        self.epochs_spin = QSpinBox(minimum=1, maximum=500, value=10)
        self.loss = QComboBox()
        self.loss.addItems(["weighted", "ce", "focal"])
        self.sampler = QComboBox()
        self.sampler.addItems(["none", "balanced"])
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda"])
        for label, widget in (("Mode", self.mode), ("Epochs", self.epochs_spin), ("Loss", self.loss),
                              ("Sampler", self.sampler), ("Device", self.device)):
            form.addRow(label, widget)
        gpus = gpu_count()
        # several GPUs: one data-parallel rank per GPU (NCCL), offered only where there is more than one
        self.ranks = QSpinBox(minimum=1, maximum=max(1, gpus), value=max(1, gpus))
        self.ranks.setToolTip("data-parallel ranks, one per GPU; cancel stops them all")
        if gpus > 1:
            form.addRow("GPUs", self.ranks)
        else:
            self.ranks.hide()
        self.start_button = QPushButton("Start training", objectName="primary")
        self.cancel_button = QPushButton("Cancel")
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)

        self.state_label = QLabel(wordWrap=True)
        self.progress = QProgressBar(minimum=0, maximum=1000, value=0, textVisible=True)
        self.progress.setFormat("")
        self.detail_label = QLabel(wordWrap=True, objectName="muted")
        self.device_label = QLabel("Device: —", wordWrap=True, objectName="muted")
        self.data_label = QLabel("", wordWrap=True, objectName="muted")

        left = QVBoxLayout()
        left.addWidget(settings)
        left.addLayout(buttons)
        for widget in (self.state_label, self.progress, self.detail_label, self.device_label, self.data_label):
            left.addWidget(widget)
        left.addStretch(1)
        left_box = QWidget()
        left_box.setLayout(left)
        left_box.setFixedWidth(300)

        self.loss_chart = LineChart("Loss", "Epoch", "Loss")
        self.auc_chart = LineChart("Validation ROC-AUC", "Epoch", "Macro AUC")
        top = QHBoxLayout()
        top.addWidget(left_box)
        top.addWidget(self.loss_chart, 1)
        top.addWidget(self.auc_chart, 1)

        versions = QGroupBox("Model versions")
        vbox = QVBoxLayout(versions)
        self.decision_label = QLabel("No training run yet.", wordWrap=True)
        self.decision_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeToContents)
        header.setSectionResizeMode(len(COLUMNS) - 1, QHeaderView.Stretch)
        self.refresh_button = QPushButton("Refresh")
        self.activate_button = QPushButton("Activate selected…")
        self.rollback_button = QPushButton("Roll back…")
        self.refresh_button.clicked.connect(self.refresh_versions)
        self.activate_button.clicked.connect(self.activate_selected)
        self.rollback_button.clicked.connect(self.rollback)
        row = QHBoxLayout()
        row.addWidget(self.decision_label, 1)
        for b in (self.refresh_button, self.activate_button, self.rollback_button):
            row.addWidget(b)
        vbox.addLayout(row)
        vbox.addWidget(self.table)

        outer = QVBoxLayout(self)
        outer.addLayout(top, 3)
        outer.addWidget(versions, 2)

    # --- training --------------------------------------------------------------------------

    def config(self):
        """The TrainConfig the settings describe (plus ``config_defaults``)."""
        from core.models.config import TrainConfig

        values = dict(self.config_defaults)
        values.update(epochs=self.epochs_spin.value(), mode=self.mode.currentText(), loss=self.loss.currentText(),
                      sampler=self.sampler.currentText(), device=self.device.currentText())
        return TrainConfig(**values)

    def start(self) -> bool:
        """Start a run through the controller; False (with the reason shown) when it is refused.

        The active model is known from the versions read in the background; the
        training process itself refuses plainly if the registry changed since.
        """
        if self.controller.running:
            self._on_refused("a training run is already in progress")
            return False
        if self._versions_loaded and self.active_version is None:
            self._set_state("failed", "no model is active; create or activate one before training")
            return False
        config = self.config()
        self.epochs = config.epochs
        self._reset_run()
        nproc = self.ranks.value() if self.ranks.isVisibleTo(self) and config.device != "cpu" else 1
        if not self.controller.start(self.workspace_path, config, nproc=nproc):
            return False
        self._set_state("running", f"fine-tuning {self.active_version or 'the active model'} "
                                   f"({config.mode}, {config.epochs} epochs)")
        return True

    def cancel(self) -> None:
        """Ask the running training to stop."""
        if self.controller.cancel():
            self.detail_label.setText("Cancelling: the run stops after the current batch; nothing is saved.")
            self.cancel_button.setEnabled(False)

    def _reset_run(self) -> None:
        for series in self.curves.values():
            series.clear()
        self.progress.setValue(0)
        self.progress.setFormat("")
        self.detail_label.setText("")
        self.data_label.setText("")
        self._draw_curves()

    def on_event(self, ev) -> None:
        """Show one typed training event (:mod:`core.models.events`; called on the UI thread by the controller)."""
        from core.models import events as E

        if isinstance(ev, E.Start):
            self.epochs = int((ev.config or {}).get("epochs", self.epochs) or 1)
            self.device_label.setText(f"{ev.device or '?'}: {ev.device_reason}")
            counts = ev.counts
            if isinstance(counts, dict):
                counts = ", ".join(f"{k} {v}" for k, v in counts.items())
            elif isinstance(counts, (list, tuple)):
                counts = ", ".join(str(v) for v in counts)
            self.data_label.setText(f"{ev.n_train} training images ({counts}), {ev.n_val} validation; "
                                    f"rare class: {ev.rare_class or '—'}")
            self.detail_label.setText(f"Starting from {ev.parent or '?'}")
        elif isinstance(ev, E.Decode):
            done, total = int(ev.done), max(int(ev.total), 1)
            self._progress(0.0, f"decoding images {done}/{total}")
            self.detail_label.setText(f"Decoding images: {done} of {total}")
        elif isinstance(ev, E.Embed):
            self.detail_label.setText(str(ev.message or "computing embeddings").capitalize())
        elif isinstance(ev, E.Step) and ev.loss is not None:
            epoch, step, steps = int(ev.epoch), int(ev.step), max(int(ev.steps), 1)
            self.curves["step_loss"].append((epoch - 1 + step / steps, float(ev.loss)))
            self._progress(((epoch - 1) + step / steps) / self.epochs,
                           f"epoch {epoch}/{self.epochs} · step {step}/{steps}")
            self.detail_label.setText(f"Batch loss {float(ev.loss):.4f}")
            self._redraw_timer.start()
        elif isinstance(ev, E.Epoch):
            epoch = int(ev.epoch)
            self.epochs = int(ev.epochs or self.epochs)
            for key in ("train_loss", "val_loss", "val_auc"):
                if getattr(ev, key) is not None:
                    self.curves[key].append((float(epoch), float(getattr(ev, key))))
            self._progress(epoch / self.epochs, f"epoch {epoch}/{self.epochs}")
            self.detail_label.setText(f"Epoch {epoch}: train loss {_fmt(ev.train_loss, 4)}, "
                                      f"validation loss {_fmt(ev.val_loss, 4)}, "
                                      f"validation AUC {_fmt(ev.val_auc)} (batch size {ev.batch_size or '?'})")
            self._redraw_timer.start()
        elif isinstance(ev, E.Oom):
            self.detail_label.setText(f"Out of memory: batch size lowered to {ev.batch_size}.")
        elif isinstance(ev, E.EarlyStop):
            self.detail_label.setText(f"Stopped early after epoch {ev.epoch}: validation stopped "
                                      f"improving (best epoch {ev.best_epoch}).")
        elif isinstance(ev, E.Evaluate):
            self._progress(1.0, "evaluating")
            self.detail_label.setText("Calibrating and comparing with the active model on the validation images…")
        elif isinstance(ev, (E.Error, E.Cancelled)):
            self.detail_label.setText(str(ev.message))

    def on_finished(self, result, state: str) -> None:
        """The run ended: show the outcome, refresh the versions, announce a new active model."""
        self._draw_curves()
        message = self.controller.message
        if state == "done" and result:
            version, promoted = result.get("version", "?"), bool(result.get("promoted"))
            reason = result.get("reason", "")
            self._progress(1.0, "done")
            if promoted:
                self.last_decision = f"{version} was promoted and is now the active model. Why: {reason}"
            else:
                self.last_decision = (f"{version} was kept as a candidate; the active model is unchanged. "
                                      f"Why: {reason}")
            self.decision_label.setText(self.last_decision)
            self.detail_label.setText("Finished: " + ("promoted." if promoted else "kept as a candidate."))
            secs = result.get("seconds")
            self._set_state("done", f"{version} trained" + (f" in {secs:.0f} s" if secs is not None else "")
                            + (f" on {result.get('device')}" if result.get("device") else ""))
            self.refresh_versions()
            if promoted:
                self.model_changed.emit(str(version))
            return
        self.progress.setFormat(state)
        self._set_state(state, message)
        self.refresh_versions()

    def _on_refused(self, message: str) -> None:
        self.detail_label.setText(f"Not started: {message}.")

    def _progress(self, fraction: float, text: str) -> None:
        self.progress.setValue(int(round(1000 * min(max(fraction, 0.0), 1.0))))
        self.progress.setFormat(text)

    def _set_state(self, state: str, message: str) -> None:
        self.state = state
        text = {"idle": "Idle", "running": "Running", "done": "Done", "failed": "Failed",
                "cancelled": "Cancelled"}[state]
        self.state_label.setText(f"<b style='color:{STATE_COLOURS[state]}'>{text}</b>"
                                 + (f" — {message}" if message else ""))
        running = state == "running"
        self.start_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        for w in (self.mode, self.epochs_spin, self.loss, self.sampler, self.device, self.ranks,
                  self.activate_button, self.rollback_button):
            w.setEnabled(not running)  # a run compares itself with the active version: keep it still

    def _draw_curves(self) -> None:
        """Repaint the live curves (QPainter: cheap enough to run on every event)."""
        c = self.curves
        self.loss_chart.set_series("train (batch)", c["step_loss"], SERIES[0], markers=False, alpha=0.35)
        self.loss_chart.set_series("train (epoch)", c["train_loss"], SERIES[0])
        self.loss_chart.set_series("validation", c["val_loss"], SERIES[1])
        self.auc_chart.set_series("validation AUC", c["val_auc"], SERIES[2])
        last = max([x for series in c.values() for x, _ in series], default=0.0)
        x_range = (0.0, max(float(self.epochs), last, 1.0))
        aucs = [y for _, y in c["val_auc"]]
        y_auc = (max(0.0, min(min(aucs), 0.9) - 0.05), min(1.005, max(max(aucs), 0.95) + 0.02)) if aucs else (0.4, 1.0)
        self.loss_chart.set_ranges(x_range, None)
        self.auc_chart.set_ranges(x_range, y_auc)

    # --- versions --------------------------------------------------------------------------

    def refresh_versions(self) -> None:
        """Reload the versions table from the workspace in the background (``versions_loaded`` follows)."""
        self.runner.submit("versions", read_versions, self.workspace_path, on_done=self._show_versions,
                           on_error=self._versions_failed)

    def _versions_failed(self, message: str) -> None:
        logger.warning("could not read the model registry: %s", message)
        self.decision_label.setText(f"Could not read the model versions: {message}")

    def _show_versions(self, models: list) -> None:
        self._versions_loaded = True
        self.versions = [m.version for m in models]
        self.active_version = next((m.version for m in models if m.status == "active"), None)
        self.table.setRowCount(len(models))
        bold = QFont()
        bold.setBold(True)
        for r, m in enumerate(models):
            rare, sens = rare_sensitivity(m)
            cells = (m.version, m.status, m.arch, _fmt((m.metrics or {}).get("macro_auc")),
                     f"{rare}: {_fmt(sens)}" if rare else "—", (m.created_at or "")[:16].replace("T", " "),
                     m.reason or "")
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setData(Qt.UserRole, m.version)
                if c == len(cells) - 1:
                    item.setToolTip(text)
                if m.status == "active":
                    item.setFont(bold)
                    if c == 1:
                        item.setForeground(QColor(COLORS["ok"]))
                elif m.status == "rejected" and c == 1:
                    item.setForeground(QColor(COLORS["bad"]))
                self.table.setItem(r, c, item)
        self.versions_loaded.emit()

    def selected_version(self) -> Optional[str]:
        """The version of the selected row, or None."""
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        return self.table.item(rows[0].row(), 0).data(Qt.UserRole)

    def _ask_reason(self, title: str, prompt: str) -> Optional[str]:
        text, ok = QInputDialog.getText(self, title, prompt)
        if not ok:
            return None
        text = text.strip()
        if not text:
            self.decision_label.setText("A reason is required so the audit log says why the model changed.")
            return None
        return text

    def activate_selected(self) -> Optional[str]:
        """Ask why, then activate the selected version in the background; returns the version asked for, or None.

        ``model_changed(version)`` follows once the workspace committed it.
        """
        version = self.selected_version()
        if version is None:
            self.decision_label.setText("Select a version in the table to activate it.")
            return None
        reason = self._ask_reason("Activate model", f"Why should {version} become the active model?")
        if reason is None:
            return None

        def done(v: str) -> None:
            self.decision_label.setText(f"{v} is now the active model (activated by {self.actor}: {reason}).")
            self.refresh_versions()
            self.model_changed.emit(v)

        self.decision_label.setText(f"activating {version}…")
        self.runner.submit("registry", activate_version, self.workspace_path, version, self.actor, reason,
                           on_done=done, on_error=lambda m: self.decision_label.setText(
                               f"Could not activate {version}: {m}"))
        return version

    def rollback(self) -> bool:
        """Ask why, then re-activate the previously active version in the background; False when not asked.

        ``model_changed(version)`` follows once the workspace committed it; a refusal is shown in words.
        """
        reason = self._ask_reason("Roll back model", "Why roll back to the previously active model?")
        if reason is None:
            return False

        def done(v: str) -> None:
            self.decision_label.setText(f"Rolled back: {v} is the active model again ({reason}).")
            self.refresh_versions()
            self.model_changed.emit(v)

        self.decision_label.setText("rolling back…")
        self.runner.submit("registry", rollback_version, self.workspace_path, self.actor, reason, on_done=done,
                           on_error=lambda m: self.decision_label.setText(f"Could not roll back: {m}"))
        return True
