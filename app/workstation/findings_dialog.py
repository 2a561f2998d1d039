"""Findings setup: classes, exclusive or multi-label, rare classes, miss costs and a severity scale.

Opened from Edit → Findings… and, on a new workspace, at first run. Saving stores the findings (audited) off the UI
thread; when classes were added and a model is active, the dialog offers a new model version with a wider head.
"""

from __future__ import annotations

import logging
from typing import Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QButtonGroup, QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout,
                               QLabel, QLineEdit, QListWidget, QListWidgetItem, QMessageBox, QRadioButton,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from app.workstation.access import runner_of, workspace_of

logger = logging.getLogger(__name__)


def _names(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


class FindingsDialog(QDialog):
    """Edit the workspace's findings. Emits ``saved(findings)`` once stored, ``widened(version)`` after a wider head."""

    saved = Signal(object)
    widened = Signal(str)

    def __init__(self, window, first_run: bool = False, parent: Optional[QWidget] = None):
        super().__init__(parent or window)
        self.window = window
        self.workspace = workspace_of(window)
        self.runner = runner_of(window)
        self.setWindowTitle("Findings")
        self.setObjectName("findings_dialog")
        self.before = None
        intro = QLabel("What does a reader decide about each image? Name the findings (one label button each), "
                       "say which are rare (the queue looks for them first) and what missing one costs."
                       + ("\n\nThis workspace has no findings yet: set them now, or later under Edit → Findings…"
                          if first_run else ""), wordWrap=True)
        self.classes = QLineEdit(placeholderText="e.g. normal, pneumonia, effusion")
        self.classes.setObjectName("findings_classes")
        self.exclusive = QRadioButton("Exclusive: one finding per image")
        self.multilabel = QRadioButton("Multi-label: several findings may be present")
        self.exclusive.setChecked(True)
        kind = QButtonGroup(self)
        kind.addButton(self.exclusive)
        kind.addButton(self.multilabel)
        self.rare = QListWidget()
        self.rare.setObjectName("findings_rare")
        self.rare.setMaximumHeight(110)
        self.rare.setToolTip("Tick the rare classes (Space ticks the selected one)")
        self.costs = QTableWidget(0, 2)
        self.costs.setHorizontalHeaderLabels(["Finding", "Miss cost"])
        self.costs.verticalHeader().setVisible(False)
        self.costs.horizontalHeader().setStretchLastSection(True)
        self.costs.setMaximumHeight(150)
        self.costs.setToolTip("How much worse missing a case of this finding is than another mistake (1 = the same)")
        self.severity = QLineEdit(placeholderText="optional, mildest first: none, mild, moderate, severe")
        self.severity.setObjectName("findings_severity")
        self.state = QLabel("", objectName="muted", wordWrap=True)
        form = QFormLayout()
        form.addRow("&Classes", self.classes)
        kinds = QVBoxLayout()
        kinds.addWidget(self.exclusive)
        kinds.addWidget(self.multilabel)
        form.addRow("Kind", kinds)
        form.addRow("&Rare classes", self.rare)
        form.addRow("&Miss costs", self.costs)
        form.addRow("&Severity grades", self.severity)
        self.buttons = QDialogButtonBox(QDialogButtonBox.Save | QDialogButtonBox.Cancel)
        self.buttons.accepted.connect(self.save)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(form)
        layout.addWidget(self.state)
        layout.addWidget(self.buttons)
        self.classes.textChanged.connect(self._sync_classes)
        self.resize(560, 520)
        self._load()

    # --- contents --------------------------------------------------------------------------------

    def _load(self) -> None:
        findings = self.workspace.findings()
        self.before = findings
        self.classes.setText(", ".join(findings.classes))
        (self.multilabel if findings.multilabel else self.exclusive).setChecked(True)
        self._sync_classes()
        for i in range(self.rare.count()):
            item = self.rare.item(i)
            item.setCheckState(Qt.Checked if item.text() in findings.rare else Qt.Unchecked)
        for row in range(self.costs.rowCount()):
            name = self.costs.item(row, 0).text()
            self.costs.cellWidget(row, 1).setValue(float(findings.costs.get(name, 1.0)))
        self.severity.setText(", ".join(findings.severity))

    def _sync_classes(self) -> None:
        """Keep the rare list and the cost table in step with the class names typed."""
        names = _names(self.classes.text())
        ticked = {self.rare.item(i).text() for i in range(self.rare.count())
                  if self.rare.item(i).checkState() == Qt.Checked}
        costs = {self.costs.item(r, 0).text(): self.costs.cellWidget(r, 1).value() for r in range(self.costs.rowCount())}
        self.rare.clear()
        self.costs.setRowCount(0)
        for name in dict.fromkeys(names):
            item = QListWidgetItem(name)
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
            item.setCheckState(Qt.Checked if name in ticked else Qt.Unchecked)
            self.rare.addItem(item)
            row = self.costs.rowCount()
            self.costs.insertRow(row)
            label = QTableWidgetItem(name)
            label.setFlags(Qt.ItemIsEnabled)
            self.costs.setItem(row, 0, label)
            spin = QDoubleSpinBox(minimum=0.1, maximum=1000.0, singleStep=0.5, decimals=1)
            spin.setValue(costs.get(name, 1.0))
            self.costs.setCellWidget(row, 1, spin)

    def set_rare(self, names: list[str]) -> None:
        """Tick exactly ``names`` as rare (keyboard users: Space on the list does the same)."""
        for i in range(self.rare.count()):
            item = self.rare.item(i)
            item.setCheckState(Qt.Checked if item.text() in names else Qt.Unchecked)

    def set_cost(self, name: str, value: float) -> None:
        """Set one class's miss cost."""
        for row in range(self.costs.rowCount()):
            if self.costs.item(row, 0).text() == name:
                self.costs.cellWidget(row, 1).setValue(value)

    def findings(self):
        """The :class:`~core.workspace.findings.Findings` the form describes (not yet validated)."""
        from core.workspace.findings import Findings

        classes = tuple(dict.fromkeys(_names(self.classes.text())))
        rare = tuple(self.rare.item(i).text() for i in range(self.rare.count())
                     if self.rare.item(i).checkState() == Qt.Checked)
        costs = {self.costs.item(r, 0).text(): self.costs.cellWidget(r, 1).value()
                 for r in range(self.costs.rowCount())}
        costs = {k: v for k, v in costs.items() if abs(v - 1.0) > 1e-9}
        return Findings(classes, self.multilabel.isChecked(), rare, costs, tuple(_names(self.severity.text())))

    # --- saving ----------------------------------------------------------------------------------

    def save(self) -> None:
        """Validate here (a clear message, nothing lost), then store off the UI thread."""
        from core.workspace.findings import FindingsError

        wanted = self.findings()
        try:
            wanted = wanted.validated()
        except FindingsError as error:
            self.state.setStyleSheet("color: #d05353")
            self.state.setText(str(error))
            return
        self.buttons.setEnabled(False)
        self.state.setStyleSheet("")
        self.state.setText("saving…")
        self.runner.submit("findings", _store_findings, self.workspace, wanted, self._actor(),
                           on_done=self._on_saved, on_error=self._on_error)

    def _actor(self) -> str:
        settings = getattr(self.window, "settings", None)
        return (getattr(settings, "annotator", "") or "app") if settings is not None else "app"

    def _on_error(self, message: str) -> None:
        self.buttons.setEnabled(True)
        self.state.setStyleSheet("color: #d05353")
        self.state.setText(message)

    def _on_saved(self, result) -> None:
        stored, new_for_model, active_version = result
        self.state.setText("saved")
        self.saved.emit(stored)
        if new_for_model and active_version:
            answer = QMessageBox.question(
                self, "New findings",
                f"The active model {active_version} does not know {', '.join(new_for_model)}.\n\n"
                f"Create a new model version with a wider head? It keeps everything the model has learnt and "
                f"learns the new finding{'s' if len(new_for_model) > 1 else ''} at the next training.",
                QMessageBox.Yes | QMessageBox.No, QMessageBox.Yes)
            if answer == QMessageBox.Yes:
                from core.models.widen import widen_active_model

                self.state.setText("creating a model version with a wider head…")
                self.runner.submit("widen", widen_active_model, self.workspace, list(stored.classes), self._actor(),
                                   on_done=self._on_widened, on_error=self._on_error)
                return
        self.accept()

    def _on_widened(self, record) -> None:
        self.widened.emit(record.version)
        self.accept()


def _store_findings(workspace, findings, actor: str):
    """Background job: store the findings; returns ``(stored, classes the active model lacks, active version)``."""
    from core.workspace.findings import added_classes

    stored = workspace.set_findings(findings, actor=actor)
    active = workspace.active_model()
    if active is None:
        return stored, [], None
    return stored, added_classes(active.classes, stored), active.version
