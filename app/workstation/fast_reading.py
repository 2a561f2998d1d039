"""Model → Fast reading and Model → Make fast reading version…, added to the main window by :func:`install`.

"Fast reading" (checkable, stored in the workspace as the ``fast_reading`` setting) predicts the pool with the
active model's newest INT8 or distilled copy that passed the quality checks; it is disabled, its tooltip saying
why, while no such copy exists. The reading panel then says which version predicted and the explanation panel
that its maps come from the full model. "Make fast reading version…" runs the quantization or distillation in
its own process and shows the gate's outcome in words. Nothing here touches SQL or runs model work on the UI
thread.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (QButtonGroup, QComboBox, QDialog, QFormLayout, QHBoxLayout, QLabel, QPushButton,
                               QRadioButton, QSpinBox, QVBoxLayout, QWidget)

from app.theme import COLORS

logger = logging.getLogger(__name__)

STUDENTS = ("mobilenet_v3_large", "mobilenet_v2", "efficientnet_lite0", "resnet18")


# --- jobs (run in workers; no widget) -----------------------------------------------------------------


def store_fast_reading(workspace, on: bool, actor: str):
    """Write the setting; returns the :class:`core.models.fast_mode.ReadingModel` now in effect."""
    from core.models.fast_mode import set_fast_reading

    return set_fast_reading(workspace, on, actor=actor)


def predict_unread(workspace, progress=None, cancel=None) -> str:
    """Predict with the fast reading version the images it has not read yet; returns a one-line summary."""
    from app.jobs import limit_torch_threads
    from core.models.fast_mode import predict_pool

    limit_torch_threads()
    reading, predictions, failed = predict_pool(workspace, only_missing=True, progress=progress, cancel=cancel)
    text = (f"fast reading on: {reading.fast} predicted {len(predictions)} images ({reading.describe()})"
            if reading.fast else f"fast reading off: predictions of {reading.version}")
    return text + (f"; {len(failed)} could not be read" if failed else "")


def teacher_read(workspace, image_id: str) -> tuple[str, Optional[str]]:
    """(image id, the full model's stored predicted class or None) while fast reading is on."""
    from core.models.fast_mode import reading_model

    reading = reading_model(workspace)
    if not reading.fast:
        return image_id, None
    prediction = workspace.predictions(reading.teacher, [image_id]).get(image_id)
    return image_id, prediction.predicted if prediction else None


def fast_build_log(workspace_path: str) -> Optional[str]:
    """Where the child's stderr goes: ``<workspace>.fast_reading.log`` beside a workspace file (None for a server)."""
    text = str(workspace_path)
    if "://" in text:
        return None
    path = Path(text)
    return str(path.with_name(path.name + ".fast_reading.log"))


def make_version(build: Callable, workspace_path: str, kind: str, student: str, epochs: int, cancel=None):
    """Run ``build`` (default :func:`core.models.fast_build.build_fast_version`: a child process) and return its
    :class:`~core.models.fast_build.FastBuildResult`."""
    from core.models.weights import default_torch_cache_dir

    return build(workspace_path, kind, student=student, epochs=epochs, torch_cache_dir=str(default_torch_cache_dir()),
                 cancel=cancel, log_path=fast_build_log(workspace_path))


# --- the dialog ---------------------------------------------------------------------------------------


class FastVersionDialog(QDialog):
    """INT8 or a distilled student of the active model, made in its own process; the gate's verdict in words.

    Emits ``built(FastBuildResult)`` when an attempt ended (registered or not).
    """

    built = Signal(object)

    def __init__(self, window, build: Optional[Callable] = None, parent: Optional[QWidget] = None):
        from app.workers import Runner
        from core.models.fast_build import build_fast_version

        super().__init__(parent or window)
        self.window_ = window
        self.build = build or build_fast_version
        self.runner = Runner(self, max_threads=1)  # its own slot: a distillation never holds up prediction
        self.result = None
        self.setWindowTitle("Make fast reading version")
        model = getattr(window, "loaded_model", None) or {}
        teacher = model.get("version", "the active model")
        intro = QLabel(f"A compressed copy of <b>{teacher}</b> predicts the whole pool faster. It is registered "
                       f"only if, on the validation split, its macro AUC is within 1 point of {teacher}'s, its "
                       f"rare-class sensitivity at the operating threshold is not lower, and it picks the same top "
                       f"class on at least 98 % of images. Explanations always come from {teacher}.")
        intro.setWordWrap(True)
        self.int8 = QRadioButton("INT8 (quantized copy; quick)")
        self.int8.setObjectName("fast_int8")
        self.student_radio = QRadioButton("Distilled student (trains a smaller network; minutes)")
        self.student_radio.setObjectName("fast_distilled")
        self.int8.setChecked(True)
        group = QButtonGroup(self)
        group.addButton(self.int8)
        group.addButton(self.student_radio)
        self.student = QComboBox()
        self.student.addItems(STUDENTS)
        self.epochs = QSpinBox(minimum=1, maximum=200, value=5)
        form = QFormLayout()
        form.addRow("Student", self.student)
        form.addRow("Epochs", self.epochs)
        self.student_radio.toggled.connect(lambda on: (self.student.setEnabled(on), self.epochs.setEnabled(on)))
        self.student.setEnabled(False)
        self.epochs.setEnabled(False)
        self.make_button = QPushButton("Make and check", objectName="primary")
        self.make_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Close")
        self.cancel_button.clicked.connect(self.stop_or_close)
        self.state = QLabel("", objectName="fast_result")
        self.state.setWordWrap(True)
        self.state.setTextInteractionFlags(Qt.TextSelectableByMouse)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.make_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.int8)
        layout.addWidget(self.student_radio)
        layout.addLayout(form)
        layout.addWidget(self.state)
        layout.addLayout(buttons)
        self.setMinimumWidth(560)

    def kind(self) -> str:
        """"int8" or "distilled"."""
        return "int8" if self.int8.isChecked() else "distilled"

    def start(self) -> None:
        """Start the attempt off the UI thread (in a child process)."""
        from app.workstation.access import workspace_of

        kind = self.kind()
        self.make_button.setEnabled(False)
        self.cancel_button.setText("Cancel")
        self.state.setStyleSheet("")
        self.state.setText("quantizing and checking on the validation split…" if kind == "int8"
                           else f"distilling {self.student.currentText()} and checking on the validation split…")
        self.runner.submit("fast-build", make_version, self.build, str(workspace_of(self.window_).path), kind,
                           self.student.currentText(), self.epochs.value(), on_done=self._done,
                           on_error=self._failed)

    def stop_or_close(self) -> None:
        """Cancel a running attempt (its process is killed; nothing is registered), else close."""
        if self.runner.busy():
            self.runner.cancel_all()
            self._reset("cancelled: nothing was registered", COLORS["warn"])
        else:
            self.close()

    def _reset(self, text: str, colour: str = "") -> None:
        self.make_button.setEnabled(True)
        self.cancel_button.setText("Close")
        self.state.setStyleSheet(f"color: {colour}" if colour else "")
        self.state.setText(text)
        self.adjustSize()  # room for the verdict, one check per line

    def _done(self, result) -> None:
        self.result = result
        self._reset(result.summary(lines=True), COLORS["ok"] if result.registered else COLORS["bad"])
        self.built.emit(result)

    def _failed(self, message: str) -> None:
        self._reset(f"not made: {message}", COLORS["bad"])

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt)
        self.runner.cancel_all()
        self.runner.wait(10000)
        super().closeEvent(event)


# --- the window's actions ------------------------------------------------------------------------------


def install(window) -> dict[str, QAction]:
    """Add Model → Fast reading and Model → Make fast reading version… to ``window``; returns the actions."""
    from app.workstation.menus import _act, _menu

    model = _menu(window, "&Model")
    model.setToolTipsVisible(True)  # the disabled action's tooltip says why
    model.addSeparator()
    fast = _act(window, model, "Fast reading", lambda: toggle(window, fast.isChecked()), "Ctrl+Alt+F",
                name="ws.fast_reading")
    fast.setCheckable(True)
    fast.setEnabled(False)
    fast.setToolTip("no model is active yet")
    make = _act(window, model, "Make fast reading version…", lambda: open_dialog(window), "Ctrl+Alt+Shift+F",
                name="ws.make_fast_reading",
                tip="An INT8 or distilled copy of the active model, registered only if it reads as well")
    window.fast_reading_action, window.make_fast_action = fast, make
    window.fast_label = QLabel("")  # status bar: "fast reading: v5" while it is on
    window.fast_label.setObjectName("fast_reading_status")
    window.statusBar().addPermanentWidget(window.fast_label)
    window.session.model_changed.connect(lambda summary: show_reading(window, summary))
    window.worklist.image_selected.connect(lambda image_id: ask_teacher_read(window, image_id))
    acts = {"fast_reading": fast, "make_fast_reading": make}
    getattr(window, "workstation_actions", {}).update(acts)
    return acts


def show_reading(window, summary: Optional[dict]) -> None:
    """Follow the model summary: the action's state and tooltip, the reading panel's and status bar's note."""
    reading = (summary or {}).get("reading") or {}
    action = window.fast_reading_action
    available = reading.get("available")
    action.blockSignals(True)
    action.setChecked(bool(reading.get("requested")) and bool(available))
    action.blockSignals(False)
    action.setEnabled(bool(available))
    if available:
        tip = (f"Predict the whole pool with {available} ({reading.get('kind')} copy of {reading.get('teacher')}, "
               f"passed the quality checks); explanations still come from {reading.get('teacher')}")
    else:
        tip = "Fast reading is unavailable: " + (reading.get("unavailable") or "no model is active yet")
    action.setToolTip(tip)
    action.setStatusTip(tip)
    window.prediction.set_reading(reading if reading.get("fast") else None)
    window.fast_label.setText(f"fast reading: {reading['fast']}" if reading.get("fast") else "")


def ask_teacher_read(window, image_id: str) -> None:
    """Under fast reading, look up (off the UI thread) what the full model predicted for the case on screen."""
    if not ((window.loaded_model or {}).get("reading") or {}).get("fast"):
        return
    window.session.db.submit("teacher-read", teacher_read, window.session.workspace, image_id,
                             on_done=lambda pair: window.prediction.set_teacher_read(*pair),
                             on_error=lambda message: logger.debug("teacher read: %s", message))


def toggle(window, on: bool) -> None:
    """Store the choice (off the UI thread); turning it on predicts the images the fast version has not read."""
    from app.workstation.access import workspace_of

    actor = window.session.reader.name if window.session.reader else "app"

    def stored(reading) -> None:
        if on and reading.fast:
            window.notify(f"{reading.describe()}: predicting the images it has not read yet…")
            window.session.background.submit("predict", predict_unread, workspace_of(window),
                                             on_done=window._on_predicted, on_error=window.notify_error,
                                             on_progress=window._on_progress)
        else:
            window.notify(f"fast reading off: predictions of the full model {reading.version}")
            window.reload()

    def refused(message: str) -> None:
        window.notify_error(message)
        window.reload()  # the action goes back to what the workspace says

    window.session.db.submit("fast-reading", store_fast_reading, workspace_of(window), on, actor,
                             on_done=stored, on_error=refused)


def open_dialog(window, build: Optional[Callable] = None) -> FastVersionDialog:
    """Model → Make fast reading version…; returns the (non-modal) dialog."""
    if not getattr(window, "loaded_model", None):
        window.notify_error("no model is active yet: create or train one first")
    dialog = FastVersionDialog(window, build=build)

    def built(result) -> None:
        if result.registered:
            window.notify(f"fast reading version {result.version} of {result.teacher} registered: "
                          "Model → Fast reading predicts with it")
            training = getattr(window, "training", None)
            if training is not None and hasattr(training, "refresh_versions"):
                training.refresh_versions()
            window.reload()
        else:
            window.notify_error(result.summary())

    dialog.built.connect(built)
    dialog.show()
    window.fast_dialog = dialog
    return dialog
