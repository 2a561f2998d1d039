"""The reading team panel: inter-reader kappa, each reader against the truth (and the model), adjudication.

``TeamPanel(runner, workspace, adjudicator=NAME)`` loads
:func:`core.readers.team_report` and the adjudication queue in the background
and shows them; an adjudicator picks a disputed case, sees both reads and
decides with one button per class (the decision is stored by
:meth:`~core.workspace.Workspace.adjudicate` off the UI thread).
"""

from __future__ import annotations

import logging
from typing import Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QHeaderView, QLabel, QListWidget, QListWidgetItem,
                               QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

logger = logging.getLogger(__name__)

COLUMNS = ("Reader", "Role", "Class", "Settled cases", "Sensitivity [95% CI]", "Specificity [95% CI]",
           "Model sensitivity", "Model specificity")


def load_team(workspace) -> dict:
    """Everything the panel shows (runs in the Runner's pool)."""
    from core.readers import disputed, team_report

    try:
        report = team_report(workspace).to_json()
        cases = [c.to_json() for c in disputed(workspace)]
        setting = workspace.double_reading().to_json()
        roles = {r.name: r.role for r in workspace.readers()}
        return {"report": report, "disputed": cases, "double_reading": setting, "roles": roles,
                "classes": workspace.classes()}
    finally:
        workspace.release_thread()


def decide(workspace, image_id: str, classes: str, adjudicator: str) -> str:
    """Store an adjudication (runs in the Runner's pool); returns the line to show."""
    try:
        workspace.adjudicate(image_id, classes, adjudicator)
        return f"adjudicated {image_id}: {classes}"
    finally:
        workspace.release_thread()


def _rate(value, ci) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}  [{ci[0]:.3f}–{ci[1]:.3f}]" if ci else f"{value:.3f}"


def kappa_text(agreement: dict) -> str:
    """'Inter-reader κ 0.500 (95% CI 0.122–0.878) on 20 double-read cases', or why there is none."""
    if agreement.get("kappa") is None:
        n = agreement.get("n", 0)
        return ("Inter-reader κ: no double-read cases yet" if not n
                else f"Inter-reader κ undefined on {n} cases (both readers used one class only)")
    ci = agreement.get("ci95")
    interval = f" (95% CI {ci[0]:.3f}–{ci[1]:.3f})" if ci else ""
    return f"Inter-reader κ {agreement['kappa']:.3f}{interval} on {agreement['n']} double-read cases"


class TeamPanel(QWidget):
    """Agreement, per-reader accuracy against the truth, and the adjudication queue."""

    adjudicated = Signal(str)  # image id

    def __init__(self, runner, workspace, adjudicator: str = "", parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.runner, self.workspace, self.adjudicator = runner, workspace, adjudicator
        self.data: dict = {}
        self.status = QLabel("")
        self.kappa = QLabel("")
        self.kappa.setObjectName("kappa")
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.verticalHeader().hide()
        self.cases = QListWidget()
        self.cases.currentItemChanged.connect(lambda *_: self._update_buttons())
        self.reads = QLabel("")
        self.reads.setWordWrap(True)
        self.buttons = QHBoxLayout()
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        top = QHBoxLayout()
        top.addWidget(self.kappa, 1)
        top.addWidget(self.refresh_button)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.status)
        layout.addWidget(self.table, 1)
        layout.addWidget(QLabel("Disputed double reads (adjudication queue):"))
        self.cases.setMaximumHeight(160)
        layout.addWidget(self.cases)
        self.reads.setMinimumHeight(self.reads.fontMetrics().lineSpacing() * 3)
        layout.addWidget(self.reads)
        layout.addLayout(self.buttons)
        self.decision_buttons: list[QPushButton] = []

    def refresh(self) -> None:
        """Reload agreement, accuracy and the adjudication queue in the background."""
        self.status.setText("loading…")
        self.runner.submit("team", load_team, self.workspace, on_done=self.show_data, on_error=self.status.setText)

    def show_data(self, data: dict) -> None:
        """Show what :func:`load_team` returned (UI thread)."""
        self.data = data
        report = data["report"]
        self.kappa.setText(kappa_text(report["agreement"]))
        setting = data["double_reading"]
        counts = ", ".join(f"{n} {status}" for status, n in sorted(report["cases"].items())) or "no reads yet"
        self.status.setText(f"Double reading {'on' if setting['enabled'] else 'off'}"
                            + (", blind to the model" if setting["blind_model"] else "") + f" — {counts}")
        rows = [(name, stats, cls) for name, stats in report["per_reader"].items() for cls in report["classes"]]
        self.table.setRowCount(len(rows))
        for r, (name, stats, cls) in enumerate(rows):
            rates, model = stats["per_class"][cls], stats["model"]["per_class"][cls]
            values = (name, stats["role"], cls, str(stats["cases"]),
                      _rate(rates["sensitivity"], rates["ci95"]["sensitivity"]),
                      _rate(rates["specificity"], rates["ci95"]["specificity"]),
                      _rate(model["sensitivity"], None), _rate(model["specificity"], None))
            for c, value in enumerate(values):
                self.table.setItem(r, c, QTableWidgetItem(value))
        self.cases.clear()
        for case in data["disputed"]:
            text = f"{case['id']}: " + " · ".join(f"{r['reader']} says {';'.join(r['classes'])}"
                                                  for r in case["reads"])
            item = QListWidgetItem(text)
            item.setData(Qt.UserRole, case)
            self.cases.addItem(item)
        for button in self.decision_buttons:
            self.buttons.removeWidget(button)
            button.deleteLater()
        self.decision_buttons = []
        for cls in data["classes"]:
            button = QPushButton(f"Decide: {cls}")
            button.clicked.connect(lambda _=False, c=cls: self.decide(c))
            self.buttons.addWidget(button)
            self.decision_buttons.append(button)
        self._update_buttons()

    def _is_adjudicator(self) -> bool:
        return self.data.get("roles", {}).get(self.adjudicator) == "adjudicator"

    def _update_buttons(self) -> None:
        item = self.cases.currentItem()
        case = item.data(Qt.UserRole) if item is not None else None
        if case is None:
            self.reads.setText("Pick a disputed case to see both reads." if self.cases.count() else "")
        else:
            self.reads.setText("\n".join(f"{r['reader']} ({r['role'] or 'no role'}): {';'.join(r['classes'])}"
                                         + (f" — {r['note']}" if r.get("note") else "") for r in case["reads"]))
        allowed = case is not None and self._is_adjudicator()
        for button in self.decision_buttons:
            button.setEnabled(allowed)
            button.setToolTip("" if self._is_adjudicator() else
                              f"only a reader with the adjudicator role decides (you are '{self.adjudicator}')")

    def decide(self, cls: str) -> None:
        """Store the adjudicator's decision for the selected case in the background."""
        item = self.cases.currentItem()
        if item is None:
            return
        image_id = item.data(Qt.UserRole)["id"]
        for button in self.decision_buttons:
            button.setEnabled(False)
        self.status.setText("saving…")

        def done(line: str) -> None:
            self.status.setText(line)
            self.adjudicated.emit(image_id)
            self.refresh()

        self.runner.submit("adjudicate", decide, self.workspace, image_id, cls, self.adjudicator,
                           on_done=done, on_error=self.status.setText)
