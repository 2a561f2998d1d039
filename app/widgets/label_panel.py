"""Labelling: class buttons with number hotkeys, severity, note, "model was wrong", confirm, undo, history.

A label is written to the workspace (committed) before the panel says
"saved"; if the write fails the choice stays on screen, marked unsaved.
"""

from __future__ import annotations

import logging
from typing import Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (QButtonGroup, QCheckBox, QComboBox, QGridLayout, QGroupBox, QHBoxLayout, QLabel,
                               QLineEdit, QListWidget, QPushButton, QVBoxLayout, QWidget)

from core.errors import LoupeError
from core.types import Label

logger = logging.getLogger(__name__)

SEVERITIES = ("—", "0 none", "1 mild", "2 moderate", "3 severe")


class LabelPanel(QWidget):
    """Class choice (1–9), severity, note, flag, Confirm (Enter), Undo (Ctrl+Z) and the label history.

    Signals ``saved(str image_id, Label)`` after the workspace committed a
    label, ``undone(str image_id)``, and ``annotator_needed()`` when no
    annotator name is set yet.
    """

    saved = Signal(str, object)
    undone = Signal(str)
    activated = Signal()  # a labelling key was pressed (the window shows this panel)
    annotator_needed = Signal()

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.workspace = None
        self.annotator = ""
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
        self.set_enabled(False)

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

    def set_workspace(self, workspace, classes: list[str], multilabel: bool = False) -> None:
        """Use ``workspace`` for reads/writes and show buttons for ``classes``."""
        self.workspace = workspace
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

    def set_enabled(self, enabled: bool) -> None:
        """Enable the controls (an image is shown) or grey them out."""
        for w in (self.classes_box, self.severity, self.note, self.flag, self.confirm, self.undo_button):
            w.setEnabled(enabled)

    def show_image(self, image_id: Optional[str]) -> None:
        """Load the current label and history of ``image_id`` into the panel."""
        self.image_id = image_id
        self.set_enabled(image_id is not None and self.workspace is not None)
        self._clear_choice()
        self.history.clear()
        self.state.setText("")
        if image_id is None or self.workspace is None:
            return
        history = self.workspace.visible_history(image_id, self.annotator)  # blinded under double reading
        for label in history:
            text = ";".join(label.classes) or "(unlabelled)"
            extra = f" · severity {label.severity}" if label.severity is not None else ""
            extra += " · model wrong" if label.flag_wrong else ""
            extra += f" · “{label.note}”" if label.note else ""
            self.history.addItem(f"{label.created_at[:19].replace('T', ' ')}  {label.annotator}: {text}{extra}"
                                 f"  [{label.source}]")
        current = history[0] if history else None
        if current is not None and current.classes:
            self._show_label(current)
            self.state.setText(f"labelled by {current.annotator}")

    def _show_label(self, label: Label) -> None:
        names = [b.text().split("  ", 1)[-1] for b in self._buttons]
        for button, name in zip(self._buttons, names):
            button.setChecked(name in label.classes)
        self.severity.setCurrentIndex(0 if label.severity is None else min(label.severity + 1, len(SEVERITIES) - 1))
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
            button = self._buttons[index]
            button.setChecked(not button.isChecked() if self.multilabel else True)

    def chosen(self) -> list[str]:
        """The class names currently chosen."""
        return [b.text().split("  ", 1)[-1] for b in self._buttons if b.isChecked()]

    def commit(self) -> Optional[Label]:
        """Write the chosen label; returns it once committed, or None (nothing chosen, no name, or an error)."""
        if self.image_id is None or self.workspace is None:
            return None
        classes = self.chosen()
        if not classes:
            self.state.setText("choose a finding first (keys 1–9)")
            return None
        if not self.annotator:
            self.annotator_needed.emit()
            if not self.annotator:
                self.state.setText("not saved: set your name first (Edit → Annotator name)")
                return None
        severity = self.severity.currentIndex() - 1
        try:
            label = self.workspace.add_label(self.image_id, classes, self.annotator,
                                             severity=None if severity < 0 else severity,
                                             note=self.note.text().strip(), flag_wrong=self.flag.isChecked())
        except (LoupeError, ValueError) as exc:
            logger.warning("label not saved: %s", exc)
            self.state.setText(f"NOT saved: {exc}")
            self.state.setStyleSheet("color: #d05353")
            return None
        self.state.setStyleSheet("")
        self.state.setText(f"saved: {';'.join(label.classes)}")
        self.saved.emit(self.image_id, label)
        return label

    def undo(self) -> None:
        """Append a row restoring the previous label of the current image."""
        if self.image_id is None or self.workspace is None:
            return
        try:
            self.workspace.undo_label(self.image_id, self.annotator or "unknown")
        except LoupeError as exc:
            self.state.setText(f"nothing to undo: {exc}")
            return
        image_id = self.image_id
        self.show_image(image_id)
        self.state.setText("undone")
        self.undone.emit(image_id)
