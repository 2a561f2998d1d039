"""The model's view of the current image: calibrated probabilities, threshold flags, version, similar cases."""

from __future__ import annotations

import logging
from typing import Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QLabel, QListWidget, QListWidgetItem, QProgressBar, QVBoxLayout, QWidget

from app.theme import COLORS
from core.types import Prediction

logger = logging.getLogger(__name__)


class PredictionPanel(QWidget):
    """Per-class probability bars with the operating-threshold flag, and similar labelled cases.

    Signals ``similar_activated(str image_id)`` when the person opens a similar case.
    """

    similar_activated = Signal(str)

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.title = QLabel("No model yet", objectName="muted")
        self.title.setWordWrap(True)
        # fast reading: which version predicted ("Fast reading: INT8 v5 of v4"); hidden when it is off
        self.reading_note = QLabel("", objectName="fast_reading")
        self.reading_note.setWordWrap(True)
        self.reading_note.setStyleSheet(f"color: {COLORS['accent']}")
        self.reading_note.setVisible(False)
        self.reading: Optional[dict] = None  # the model summary's "reading" (core.models.fast_mode.ReadingModel)
        self.teacher_reads: dict[str, str] = {}  # image id -> the full model's stored predicted class
        self._current: Optional[Prediction] = None
        self.bars_box = QVBoxLayout()
        self.similar = QListWidget()
        self.similar.setMaximumHeight(110)
        self.similar.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.similar.itemActivated.connect(lambda item: self.similar_activated.emit(item.data(Qt.UserRole)))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.reading_note)
        layout.addWidget(self.title)
        layout.addLayout(self.bars_box)
        layout.addWidget(QLabel("Similar labelled cases", objectName="muted"))
        layout.addWidget(self.similar)
        self._widgets: list[QWidget] = []
        self.severity_label: Optional[QLabel] = None

    def show_prediction(self, prediction: Optional[Prediction], thresholds: Optional[dict] = None,
                        version: str = "", note: str = "", grade_names: Optional[list[str]] = None) -> None:
        """Show ``prediction`` (or a note why there is none) with the version's thresholds.

        With a severity grade in the prediction, the grade (named by ``grade_names``)
        and its probability are shown under the class bars.
        """
        for w in self._widgets:
            w.deleteLater()
        self._widgets = []
        self.severity_label = None
        self._show_reading(prediction)
        if prediction is None:
            self.title.setText(note or ("Not predicted yet by " + version if version else "No model yet"))
            return
        self.title.setText(f"Model {prediction.version}: <b>{prediction.predicted}</b> "
                           f"<span style='color:{COLORS['muted']}'>(calibrated probabilities)</span>")
        thresholds = thresholds or {}
        for name, p in sorted(prediction.probs.items(), key=lambda kv: -kv[1]):
            threshold = thresholds.get(name)
            flagged = threshold is not None and p >= threshold
            text = f"{name}: {p:.1%}"
            if threshold is not None:
                text += f"  (threshold {threshold:.2f}{' — FLAG' if flagged else ''})"
            label = QLabel(text)
            label.setWordWrap(True)
            bar = QProgressBar()
            bar.setRange(0, 1000)
            bar.setValue(int(round(p * 1000)))
            bar.setTextVisible(False)
            bar.setMaximumHeight(8)
            colour = COLORS["bad"] if flagged else COLORS["accent"]
            bar.setStyleSheet(f"QProgressBar::chunk {{ background: {colour}; }}")
            for w in (label, bar):
                self.bars_box.addWidget(w)
                self._widgets.append(w)
        if prediction.severity is not None:
            self._show_severity(prediction, grade_names or [])

    def set_reading(self, reading: Optional[dict]) -> None:
        """Which version predicts for the reader (the model summary's ``reading``); shown above the bars."""
        if (reading or {}).get("teacher") != (self.reading or {}).get("teacher"):
            self.teacher_reads.clear()
        self.reading = reading
        self._show_reading(self._current)

    def set_teacher_read(self, image_id: str, predicted: Optional[str]) -> None:
        """The full model's stored predicted class for ``image_id`` (fast reading says when it differs)."""
        if predicted:
            self.teacher_reads[image_id] = predicted
            if self._current is not None and self._current.image_id == image_id:
                self._show_reading(self._current)

    def _show_reading(self, prediction: Optional[Prediction]) -> None:
        self._current = prediction
        fast = (self.reading or {}).get("fast")
        text = (self.reading or {}).get("describe", "") if fast else ""
        if fast and prediction is not None and prediction.version != fast:
            text += f" — this case was predicted by the full model {prediction.version} ({fast} has not read it yet)"
        elif fast and prediction is not None:
            theirs = self.teacher_reads.get(prediction.image_id)
            if theirs and theirs != prediction.predicted:
                text += f" — the full model {self.reading.get('teacher')} predicts <b>{theirs}</b> here"
        self.reading_note.setText(text)
        self.reading_note.setToolTip(f"Predictions come from {fast}, a compressed copy that passed the quality "
                                     f"checks against {self.reading.get('teacher')}; explanations still come from "
                                     f"{self.reading.get('teacher')}" if fast else "")
        self.reading_note.setVisible(bool(text))

    def _show_severity(self, prediction: Prediction, names: list[str]) -> None:
        k = int(prediction.severity)
        name = names[k] if k < len(names) else f"grade {k}"
        p = prediction.severity_probability
        label = QLabel(f"Severity: <b>{name}</b> (grade {k}"
                       + (f" of {len(names) - 1}" if names else "") + ")"
                       + (f" — probability {p:.1%}" if p is not None else ""))
        label.setObjectName("severity")
        label.setWordWrap(True)
        label.setToolTip("From the ordinal severity head: the grade whose thresholds the case passes, "
                         "and that grade's probability")
        self.severity_label = label
        self.bars_box.addWidget(label)
        self._widgets.append(label)
        if p is not None:
            bar = QProgressBar()
            bar.setRange(0, 1000)
            bar.setValue(int(round(p * 1000)))
            bar.setTextVisible(False)
            bar.setMaximumHeight(8)
            bar.setStyleSheet(f"QProgressBar::chunk {{ background: {COLORS['accent']}; }}")
            self.bars_box.addWidget(bar)
            self._widgets.append(bar)

    def show_similar(self, cases: list[tuple[str, str, float]]) -> None:
        """List similar labelled cases as (image id, label, distance)."""
        self.similar.clear()
        for image_id, label, distance in cases:
            item = QListWidgetItem(f"{label}  ·  distance {distance:.2f}")
            item.setToolTip(f"image {image_id} — double-click or Enter to open")
            item.setData(Qt.UserRole, image_id)
            self.similar.addItem(item)
        if not cases:
            self.similar.addItem("(none yet: needs a model and labelled images)")
