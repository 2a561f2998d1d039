"""Queue mode: the active-learning queue, why each case was picked, and "next case"."""

from __future__ import annotations

import logging
from typing import Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QComboBox, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QPushButton, QSpinBox,
                               QVBoxLayout, QWidget)

logger = logging.getLogger(__name__)

STRATEGIES = ("default", "entropy", "margin", "least_confidence", "cost", "bald", "tta", "random")


def why_text(why: dict) -> str:
    """A person-readable account of a queue item's score breakdown (:func:`core.active.why.describe_pick`)."""
    from core.active.why import describe_pick

    return describe_pick(why)


class QueuePanel(QWidget):
    """Lists queued cases in rank order; refreshes the queue in the background.

    Signals ``open_image(str image_id)`` when a queued case is opened.
    """

    open_image = Signal(str)

    def __init__(self, runner, workspace, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.runner = runner
        self.workspace = workspace
        self.items = []
        self.names: dict[str, str] = {}  # image id -> file name, set by the window
        self.strategy = QComboBox()
        self.strategy.addItems(STRATEGIES)
        self.strategy.setToolTip("default = uncertainty + rare-class cost + diversity + audit slice")
        self.size = QSpinBox()
        self.size.setRange(5, 500)
        self.size.setValue(50)
        self.refresh_button = QPushButton("Refresh queue (F5)")
        self.refresh_button.clicked.connect(self.refresh)
        self.next_button = QPushButton("Next case (N)", objectName="primary")
        self.next_button.clicked.connect(lambda: self._open(self.next_id()))
        self.list = QListWidget()
        self.list.itemActivated.connect(lambda item: self._open(item.data(Qt.UserRole)))
        self.reason = QLabel("", objectName="muted")
        self.reason.setWordWrap(True)
        self.state = QLabel("", objectName="muted")
        top = QHBoxLayout()
        top.addWidget(QLabel("Strategy"))
        top.addWidget(self.strategy, 1)
        top.addWidget(self.size)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(top)
        layout.addWidget(self.refresh_button)
        layout.addWidget(self.next_button)
        layout.addWidget(self.state)
        layout.addWidget(self.list, 1)
        layout.addWidget(QLabel("Why this case", objectName="muted"))
        layout.addWidget(self.reason)

    def reload(self) -> None:
        """Re-read the stored queue (labelled images drop out)."""
        self.items = self.workspace.queue()
        self.list.clear()
        for item in self.items:
            reason = item.why.get("reason", "")
            name = self.names.get(item.image_id, item.image_id)
            row = QListWidgetItem(f"#{item.rank}  {name}  ·  {item.score:.2f}" + (f"  ·  {reason}" if reason else ""))
            row.setToolTip(why_text(item.why))
            row.setData(Qt.UserRole, item.image_id)
            self.list.addItem(row)
        strategy = self.items[0].strategy if self.items else ""
        self.state.setText(f"{len(self.items)} cases queued" + (f" by '{strategy}'" if strategy else "")
                           if self.items else "queue empty — refresh it once the model has predicted")

    def refresh(self) -> None:
        """Rebuild the queue with the chosen strategy in the background."""
        from core.active.loop import refresh_queue

        self.state.setText("refreshing the queue…")
        self.refresh_button.setEnabled(False)
        self.runner.submit("queue", refresh_queue, self.workspace, self.strategy.currentText(), self.size.value(),
                           on_done=self._on_refreshed, on_error=self._on_error)

    def _on_refreshed(self, _items) -> None:
        self.refresh_button.setEnabled(True)
        self.reload()

    def _on_error(self, message: str) -> None:
        self.refresh_button.setEnabled(True)
        self.state.setText(f"queue not refreshed: {message}")

    def next_id(self) -> Optional[str]:
        """The highest-ranked case still waiting."""
        return self.items[0].image_id if self.items else None

    def mark_done(self, image_id: str) -> None:
        """Drop a case that was just labelled from the list."""
        self.items = [i for i in self.items if i.image_id != image_id]
        for row in range(self.list.count()):
            if self.list.item(row).data(Qt.UserRole) == image_id:
                self.list.takeItem(row)
                break
        self.state.setText(f"{len(self.items)} cases queued")

    def show_reason(self, image_id: str) -> None:
        """Show why ``image_id`` was queued (empty when it is not in the queue)."""
        item = next((i for i in self.items if i.image_id == image_id), None)
        self.reason.setText(f"#{item.rank} · {why_text(item.why)}" if item else "")

    def _open(self, image_id: Optional[str]) -> None:
        if image_id:
            self.open_image.emit(image_id)
