"""Small dialogs: the keyboard-shortcut sheet (F1)."""

from __future__ import annotations

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QVBoxLayout, QWidget

SHORTCUTS = (
    ("Reading", [("↑ / ↓", "previous / next image"), ("1 … 9", "choose a finding"), ("Enter", "confirm label, go on"),
                 ("Ctrl+Z", "undo the last label of this image"), ("W", "toggle “model was wrong”"),
                 ("N", "next queued case"), ("Ctrl+Shift+Q", "queue mode"), ("Ctrl+F", "search the worklist")]),
    ("Viewer", [("Right-drag", "window / level"), ("Left-drag", "pan"), ("Wheel, + / −", "zoom"),
                ("Ctrl+0 / Ctrl+1", "fit / 1:1"), ("L / R", "next window preset / reset window"), ("I", "invert"), ("Ctrl+R", "rotate 90°"),
                ("H / V", "flip (view only)"), ("O / S", "toggle overlay / side by side"), ("PgUp / PgDn", "previous / next frame")]),
    ("Model", [("Ctrl+P", "predict all images"), ("F5", "refresh the queue"), ("Ctrl+T", "train now"),
               ("F1", "this sheet")]),
)


def shortcuts_html() -> str:
    """The shortcut sheet as an HTML table."""
    parts = []
    for title, rows in SHORTCUTS:
        parts.append(f"<h3>{title}</h3><table cellspacing='4'>")
        parts += [f"<tr><td><b>{key}</b></td><td>{what}</td></tr>" for key, what in rows]
        parts.append("</table>")
    return "".join(parts)


def show_shortcuts(parent: QWidget) -> QDialog:
    """Show the shortcut sheet (non-modal) and return the dialog."""
    dialog = QDialog(parent)
    dialog.setWindowTitle("Keyboard shortcuts")
    layout = QVBoxLayout(dialog)
    label = QLabel(shortcuts_html())
    layout.addWidget(label)
    buttons = QDialogButtonBox(QDialogButtonBox.Close)
    buttons.rejected.connect(dialog.close)
    layout.addWidget(buttons)
    dialog.show()
    return dialog
