"""The top of the reading panel: why the open case was queued, where it stands, and the annotator's counters.

"Queued #3 · 3 of 30 in the queue" with the sentence from
:func:`core.active.why.describe_pick` under it, while the case is open; and the
live counters ("118 labelled · 30 queued · 4 disagreement · 7 labels since the
last training (retrain at 20)"), updated on every commit.
"""

from __future__ import annotations

import logging
from typing import Optional

from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from app.widgets.queue_panel import why_text

logger = logging.getLogger(__name__)


class CaseBanner(QWidget):
    """Why this case, its place in the queue, and the counters; follows the review session."""

    def __init__(self, session, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.session = session
        self.image_id: Optional[str] = None
        self.position = QLabel("", objectName="muted")
        self.why = QLabel("")
        self.why.setWordWrap(True)
        self.counters = QLabel("", objectName="muted")
        self.counters.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 2, 4, 2)
        layout.setSpacing(2)
        layout.addWidget(self.counters)
        layout.addWidget(self.position)
        layout.addWidget(self.why)
        session.queue_changed.connect(lambda _items: self._update_case())
        session.progress_changed.connect(self.show_progress)

    def show_case(self, image_id: Optional[str]) -> None:
        """The case now open (None: nothing open)."""
        self.image_id = image_id
        self._update_case()

    def _update_case(self) -> None:
        item = self.session.queue_item(self.image_id) if self.image_id else None
        where = self.session.queue_position(self.image_id) if item is not None else None
        if item is None:
            self.position.setText("Not in the queue" if self.image_id else "")
            self.why.setText("")
            self.why.setVisible(False)
            return
        place = f" · {where[0]} of {where[1]} in the queue" if where else " · being saved"
        self.position.setText(f"Queued #{item.rank}{place}")
        from core.models.fast_mode import ranked_by_note

        self.why.setText(why_text(item.why) + ranked_by_note(item.version, (self.session.model or {}).get("reading")))
        self.why.setVisible(True)

    def show_progress(self, progress) -> None:
        """The counters (a :class:`core.active.counters.LabellingProgress`)."""
        if progress is None:
            return
        self.counters.setText(progress.text())
        self.counters.setStyleSheet("color: #e0a84b" if progress.retrain_due else "")
