"""The queue and retraining settings as a widget the queue panel (or a dialog) embeds.

It shows and edits exactly the values `loupe settings` shows and sets (``core.active.settings``), plus the miss
costs from the findings (read-only here: Edit → Findings… changes them). Reading and writing run off the UI thread.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout, QGroupBox, QLabel,
                               QPushButton, QSpinBox, QVBoxLayout, QWidget)

logger = logging.getLogger(__name__)


def _load(workspace) -> tuple[dict, dict]:
    from core.active.settings import read_settings

    return read_settings(workspace), workspace.findings().to_json()


def _store(workspace, values: dict, actor: str) -> tuple[dict, dict]:
    from core.active.settings import write_settings

    return write_settings(workspace, values, actor=actor), workspace.findings().to_json()


class QueueSettingsWidget(QWidget):
    """Strategy, batch, rare share, audit share, retrain-after and the automatic retrain's training settings.

    ``QueueSettingsWidget(runner, workspace, actor="app")``; :meth:`reload` reads the stored values, :meth:`apply`
    stores the edited ones. Emits ``changed(dict)`` with the values in effect after every load or save.
    """

    changed = Signal(dict)

    def __init__(self, runner, workspace, actor: str = "app", parent: Optional[QWidget] = None):
        from core.active.settings import BY_KEY

        super().__init__(parent)
        self.runner, self.workspace, self.actor = runner, workspace, actor
        self.values: dict[str, Any] = {}
        self.editors: dict[str, QWidget] = {}
        queue = QGroupBox("Queue")
        qform = QFormLayout(queue)
        train = QGroupBox("Automatic retrain")
        tform = QFormLayout(train)
        labels = {"strategy": "&Strategy", "batch": "Cases per refresh", "rare_share": "Rare share (min)",
                  "audit_share": "Audit share", "retrain_after": "Retrain after N labels",
                  "train.mode": "Mode", "train.epochs": "Epochs", "train.loss": "Loss", "train.sampler": "Sampler",
                  "train.batch_size": "Batch size", "train.lr": "Learning rate", "train.device": "Device"}
        for key, text in labels.items():
            spec = BY_KEY[key]
            if spec.choices:
                editor = QComboBox()
                editor.addItems(list(spec.choices))
            elif isinstance(spec.default, int):
                editor = QSpinBox(minimum=1, maximum=100000)
            else:
                editor = QDoubleSpinBox(minimum=0.0, maximum=1.0, decimals=4 if key == "train.lr" else 2,
                                        singleStep=0.0001 if key == "train.lr" else 0.05)
            editor.setObjectName(f"setting_{key}")
            editor.setToolTip(spec.help)
            self.editors[key] = editor
            (tform if key.startswith("train.") else qform).addRow(text, editor)
        self.costs = QLabel("", objectName="muted", wordWrap=True)
        qform.addRow("Miss costs", self.costs)
        self.apply_button = QPushButton("Save settings")
        self.apply_button.clicked.connect(self.apply)
        self.state = QLabel("", objectName="muted", wordWrap=True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(queue)
        layout.addWidget(train)
        layout.addWidget(self.apply_button)
        layout.addWidget(self.state)

    # --- values ---------------------------------------------------------------------------------

    def edited(self) -> dict[str, Any]:
        """The values the editors show."""
        out: dict[str, Any] = {}
        for key, editor in self.editors.items():
            if isinstance(editor, QComboBox):
                out[key] = editor.currentText()
            else:
                out[key] = editor.value()
        return out

    def _show(self, values: dict, findings: dict) -> None:
        self.values = dict(values)
        for key, editor in self.editors.items():
            value = values.get(key)
            if value is None:
                continue
            editor.blockSignals(True)
            if isinstance(editor, QComboBox):
                editor.setCurrentText(str(value))
            else:
                editor.setValue(value)
            editor.blockSignals(False)
        costs = findings.get("costs") or {}
        rare = findings.get("rare") or []
        self.costs.setText((", ".join(f"{k} {v:g}" for k, v in costs.items()) or "1 for every class")
                           + (f"; rare: {', '.join(rare)}" if rare else "") + "  (Edit → Findings…)")
        self.changed.emit(dict(values))

    def reload(self) -> None:
        """Read the stored settings in the background."""
        self.state.setText("")
        self.runner.submit("settings", _load, self.workspace, on_done=lambda r: self._show(*r),
                           on_error=self._on_error)

    def apply(self) -> None:
        """Store the edited values (audited; only the changed ones) in the background."""
        self.apply_button.setEnabled(False)
        self.state.setText("saving…")
        self.runner.submit("settings", _store, self.workspace, self.edited(), self.actor,
                           on_done=self._on_saved, on_error=self._on_error)

    def _on_saved(self, result) -> None:
        self.apply_button.setEnabled(True)
        self.state.setText("saved")
        self._show(*result)

    def _on_error(self, message: str) -> None:
        self.apply_button.setEnabled(True)
        self.state.setText(f"not saved: {message}")


class SettingsDialog(QDialog):
    """Model → Queue and retraining settings…: the widget in a dialog."""

    def __init__(self, runner, workspace, actor: str = "app", parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.setWindowTitle("Queue and retraining settings")
        self.widget = QueueSettingsWidget(runner, workspace, actor, self)
        self.widget.apply_button.hide()
        buttons = QDialogButtonBox(QDialogButtonBox.Save | QDialogButtonBox.Close)
        buttons.accepted.connect(self.widget.apply)
        buttons.rejected.connect(self.reject)
        self.widget.changed.connect(lambda _v: self.widget.state.text() == "saved" and self.accept())
        layout = QVBoxLayout(self)
        layout.addWidget(self.widget)
        layout.addWidget(buttons)
        self.widget.reload()
