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
    """Lists the queued cases still waiting, in rank order, as the review session knows them.

    The list follows ``session.queue_changed`` (a case leaves once a confirmed
    label for it is committed, in any mode, by any process); refreshing runs in
    the session's background worker. Signals ``open_image(str image_id)`` when a
    queued case is opened.
    """

    open_image = Signal(str)

    def __init__(self, session, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.session = session
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
        self.state.setWordWrap(True)  # a long state line wraps instead of widening the reading dock
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
        session.queue_changed.connect(self.set_items)
        session.error.connect(self._on_error)
        self._refreshing = False

    def reload(self) -> None:
        """Re-read the stored queue in the background (``set_items`` follows)."""
        self.session.reload_queue()

    def set_items(self, items) -> None:
        """Show ``items`` (the cases still waiting; commits in flight are left out)."""
        pending = self.session.pending
        self.items = [i for i in items if i.image_id not in pending]
        if self._refreshing and self.session.background.busy("queue"):
            return
        self._refreshing = False
        self.refresh_button.setEnabled(True)
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
        self.state.setText("refreshing the queue…")
        self.refresh_button.setEnabled(False)
        self._refreshing = True
        self.session.refresh_queue(self.strategy.currentText(), self.size.value())

    def _on_error(self, message: str) -> None:
        if message.startswith("queue not refreshed"):
            self._refreshing = False
            self.refresh_button.setEnabled(True)
            self.state.setText(message)

    def next_id(self) -> Optional[str]:
        """The highest-ranked case still waiting."""
        return self.session.next_queued()

    def show_reason(self, image_id: str) -> None:
        """Show why ``image_id`` was queued (empty when it is not in the queue)."""
        from core.models.fast_mode import ranked_by_note

        item = self.session.queue_item(image_id)
        reading = (self.session.model or {}).get("reading")
        self.reason.setText(f"#{item.rank} · {why_text(item.why)}{ranked_by_note(item.version, reading)}"
                            if item else "")

    def _open(self, image_id: Optional[str]) -> None:
        if image_id:
            self.open_image.emit(image_id)
