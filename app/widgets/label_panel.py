"""Labelling: class buttons with number hotkeys, severity, note, "model was wrong", confirm, undo, history.

The panel talks to the workspace only through the review session
(:class:`app.session.ReviewSession`): a commit runs off the UI thread, the panel
says "saving…" at once and "saved" only after the commit returned; if the write
fails the choice stays on screen, marked unsaved. No labelling key ever opens a
dialog: without a reader the label is refused with a line saying what to do.
"""

from __future__ import annotations

import logging
from typing import Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (QButtonGroup, QCheckBox, QComboBox, QGridLayout, QGroupBox, QHBoxLayout, QLabel,
                               QLineEdit, QListWidget, QPushButton, QVBoxLayout, QWidget)

from core.types import Label

logger = logging.getLogger(__name__)

SEVERITIES = ("—", "0 none", "1 mild", "2 moderate", "3 severe")


class LabelPanel(QWidget):
    """Class choice (1–9), severity, note, flag, Confirm (Enter), Undo (Ctrl+Z) and the label history.

    Signals ``committing(str image_id)`` when a commit is sent,
    ``saved(str image_id, Label)`` after the workspace committed it,
    ``undone(str image_id)``, and ``annotator_needed()`` when a label is
    refused because no reader is set (the window says how to set one).
    """

    committing = Signal(str)
    saved = Signal(str, object)
    undone = Signal(str)
    activated = Signal()  # a labelling key was pressed (the window shows this panel)
    annotator_needed = Signal()

    def __init__(self, session=None, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.session = session
        self.image_id: Optional[str] = None
        self.multilabel = False
        self._buttons: list[QPushButton] = []
        self.group = QButtonGroup(self)
        self.classes_box = QGroupBox("Finding")
        self.classes_grid = QGridLayout(self.classes_box)
        self.severity = QComboBox()
        self.severity.addItems(SEVERITIES)
        self.note = QLineEdit(placeholderText="Note (optional)")
        self.note.returnPressed.connect(self.commit)
        self.flag = QCheckBox("Model was wrong (W)")
        self.confirm = QPushButton("Confirm ⏎", objectName="primary")
        self.confirm.setToolTip("Save the label and go to the next case (Enter)")
        self.confirm.clicked.connect(self.commit)
        self.undo_button = QPushButton("Undo")
        self.undo_button.setToolTip("Restore this image's previous label (Ctrl+Z)")
        self.undo_button.clicked.connect(self.undo)
        self.state = QLabel("", objectName="muted")
        self.history = QListWidget()
        self.history.setMaximumHeight(120)
        row = QHBoxLayout()
        row.addWidget(QLabel("Severity"))
        row.addWidget(self.severity, 1)
        buttons = QHBoxLayout()
        buttons.addWidget(self.confirm, 2)
        buttons.addWidget(self.undo_button, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.classes_box)
        layout.addLayout(row)
        layout.addWidget(self.note)
        layout.addWidget(self.flag)
        layout.addLayout(buttons)
        layout.addWidget(self.state)
        layout.addWidget(QLabel("History", objectName="muted"))
        layout.addWidget(self.history)
        self._shortcuts: list[QShortcut] = []
        self._classes: list[str] = []
        self.set_enabled(False)
        if session is not None:
            session.history_loaded.connect(self._on_history)

    def install_shortcuts(self, window: QWidget) -> None:
        """Bind 1–9, W and Ctrl+Z on ``window`` so they work whichever panel is showing.

        (A shortcut owned by this panel would be dead while another tab hides it.)
        """
        bindings = [(str(n), lambda n=n: self.choose(n - 1)) for n in range(1, 10)]
        bindings += [("W", self.flag.toggle), (QKeySequence.Undo, self.undo)]
        for key, slot in bindings:
            shortcut = QShortcut(QKeySequence(key), window)
            shortcut.setContext(Qt.WindowShortcut)
            shortcut.activated.connect(slot)
            shortcut.activated.connect(self.activated)
            self._shortcuts.append(shortcut)

    # --- configuration --------------------------------------------------------------------------

    @property
    def annotator(self) -> str:
        """The session reader's name ("" when none is set)."""
        reader = self.session.reader if self.session is not None else None
        return reader.name if reader else ""

    def set_classes(self, classes: list[str], multilabel: bool = False) -> None:
        """Show buttons for ``classes`` (exclusive, or several allowed)."""
        if list(classes) == self._classes and multilabel == self.multilabel and self._buttons:
            return  # same findings: keep the buttons (and the choice being made)
        self._classes = list(classes)
        self.multilabel = multilabel
        for button in self._buttons:
            self.group.removeButton(button)
            button.deleteLater()
        self._buttons = []
        self.group.setExclusive(not multilabel)
        for i, name in enumerate(classes):
            button = QPushButton(f"{i + 1}  {name}" if i < 9 else name)
            button.setCheckable(True)
            button.setMinimumHeight(30)  # never squeezed into an unreadable sliver on a short screen
            button.setToolTip(f"{name} (key {i + 1})" if i < 9 else name)
            self.group.addButton(button, i)
            self.classes_grid.addWidget(button, i // 2, i % 2)
            self._buttons.append(button)
        self.classes_box.setTitle("Findings (several allowed)" if multilabel else "Finding")

    def set_severity_scale(self, names) -> None:
        """Name the severity choices after the findings' grades ("0 none", "1 mild", …); the generic four-grade
        list when the findings define no scale. A grade being chosen is kept when it still exists."""
        items = ["—"] + [f"{k} {name}" for k, name in enumerate(names)] if names else list(SEVERITIES)
        if items == [self.severity.itemText(i) for i in range(self.severity.count())]:
            return
        current = self.severity.currentIndex()
        self.severity.blockSignals(True)
        self.severity.clear()
        self.severity.addItems(items)
        self.severity.setCurrentIndex(current if 0 <= current < len(items) else 0)
        self.severity.blockSignals(False)
        self.severity.setToolTip("Severity grade of the finding (from Edit → Findings…)" if names else
                                 "Severity grade (the findings define no scale: a generic four-grade list)")

    def set_enabled(self, enabled: bool) -> None:
        """Enable the controls (an image is shown) or grey them out."""
        for w in (self.classes_box, self.severity, self.note, self.flag, self.confirm, self.undo_button):
            w.setEnabled(enabled)

    def show_image(self, image_id: Optional[str]) -> None:
        """Load the current label and history of ``image_id`` into the panel."""
        self.image_id = image_id
        self.set_enabled(image_id is not None and self.session is not None)
        self._clear_choice()
        self.history.clear()
        self.state.setStyleSheet("")
        self.state.setText("")
        if image_id is None or self.session is None:
            return
        self.session.load_history(image_id)

    def _on_history(self, image_id: str, history: list) -> None:
        """The history read in the background arrived: list it and show the current label."""
        if image_id != self.image_id or image_id in self.session.pending:
            return
        self.history.clear()
        for label in history:
            text = ";".join(label.classes) or "(unlabelled)"
            extra = f" · severity {label.severity}" if label.severity is not None else ""
            extra += " · model wrong" if label.flag_wrong else ""
            extra += f" · “{label.note}”" if label.note else ""
            self.history.addItem(f"{label.created_at[:19].replace('T', ' ')}  {label.annotator}: {text}{extra}"
                                 f"  [{label.source}]")
        current = history[0] if history else None
        if current is not None and current.classes and not self.chosen():  # never overwrite a choice being made
            self._show_label(current)
        if current is not None and current.classes and not self.state.text():
            self.state.setText(f"labelled by {current.annotator}")

    def _show_label(self, label: Label) -> None:
        names = [b.text().split("  ", 1)[-1] for b in self._buttons]
        for button, name in zip(self._buttons, names):
            button.setChecked(name in label.classes)
        self.severity.setCurrentIndex(0 if label.severity is None else min(label.severity + 1, self.severity.count() - 1))
        self.note.setText(label.note)
        self.flag.setChecked(label.flag_wrong)

    def _clear_choice(self) -> None:
        exclusive = self.group.exclusive()
        self.group.setExclusive(False)
        for button in self._buttons:
            button.setChecked(False)
        self.group.setExclusive(exclusive)
        self.severity.setCurrentIndex(0)
        self.note.clear()
        self.flag.setChecked(False)

    # --- actions ----------------------------------------------------------------------------------

    def choose(self, index: int) -> None:
        """Toggle class ``index`` (number-key hotkeys)."""
        if 0 <= index < len(self._buttons) and self.confirm.isEnabled():
            from app.session import trace

            trace("choose", image=self.image_id, index=index)
            button = self._buttons[index]
            button.setChecked(not button.isChecked() if self.multilabel else True)

    def chosen(self) -> list[str]:
        """The class names currently chosen."""
        return [b.text().split("  ", 1)[-1] for b in self._buttons if b.isChecked()]

    def commit(self) -> bool:
        """Send the chosen label to the session; True when a commit is on its way.

        The panel says "saving…" now, then "saved" (and emits ``saved``) once the
        workspace committed it, or "NOT saved" with the reason. False when nothing
        is chosen, no image is shown, a commit for this image is still in flight,
        or no reader is set (then ``annotator_needed`` is emitted; no dialog opens).
        """
        if self.image_id is None or self.session is None:
            return False
        classes = self.chosen()
        if not classes:
            self.state.setText("choose a finding first (keys 1–9)")
            return False
        if self.image_id in self.session.pending:
            return False  # Enter pressed twice: one label per act
        if not self.annotator:
            self.state.setText("not saved: say who is labelling first (Edit → Reader…)")
            self.state.setStyleSheet("color: #d05353")
            self.annotator_needed.emit()
            return False
        severity = self.severity.currentIndex() - 1
        image_id = self.image_id
        self.state.setStyleSheet("")
        self.state.setText("saving…")
        self.committing.emit(image_id)
        self.session.commit_label(image_id, classes, severity=None if severity < 0 else severity,
                                  note=self.note.text().strip(), flag_wrong=self.flag.isChecked(),
                                  on_saved=lambda label: self._on_saved(image_id, label),
                                  on_failed=lambda message: self._on_failed(image_id, message))
        return True

    def _on_saved(self, image_id: str, label: Label) -> None:
        if image_id == self.image_id:
            self.state.setStyleSheet("")
            self.state.setText(f"saved: {';'.join(label.classes)}")
        self.saved.emit(image_id, label)

    def _on_failed(self, image_id: str, message: str) -> None:
        logger.warning("label for %s not saved: %s", image_id, message)
        if image_id == self.image_id:
            self.state.setText(f"NOT saved: {message}")
            self.state.setStyleSheet("color: #d05353")

    def undo(self) -> None:
        """Append a row restoring the previous label of the current image (in the background)."""
        if self.image_id is None or self.session is None:
            return
        image_id = self.image_id

        def done(_label) -> None:
            if image_id == self.image_id:
                self.show_image(image_id)
                self.state.setText("undone")
            self.undone.emit(image_id)

        def failed(message: str) -> None:
            if image_id == self.image_id:
                self.state.setText(f"nothing to undo: {message}")

        self.session.undo_label(image_id, on_done=done, on_failed=failed)
