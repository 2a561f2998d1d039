"""Small dialogs: the keyboard-shortcut sheet (F1), generated from the window's live actions so it never drifts."""

from __future__ import annotations

from typing import Optional

from PySide6.QtGui import QAction, QKeySequence, QShortcut
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QScrollArea, QVBoxLayout, QWidget

#: what the mouse does (not actions, so listed by hand)
MOUSE = ("Mouse", [("Right-drag", "window / level"), ("Left-drag", "pan"), ("Wheel", "zoom")])
#: names of the label panel's shortcuts (QShortcut objects carry no text)
SHORTCUT_NAMES = {"W": "toggle “model was wrong”", "Ctrl+Z": "undo the last label of this image"}


def _keys(action) -> str:
    seqs = action.shortcuts() if isinstance(action, QAction) else [action.key()]
    return " / ".join(s.toString(QKeySequence.NativeText) for s in seqs if not s.isEmpty())


def _menu_rows(menu, prefix: str = "") -> list[tuple[str, str]]:
    rows = []
    for action in menu.actions():
        if action.isSeparator():
            continue
        sub = action.menu()
        if sub is not None:
            rows += _menu_rows(sub, f"{prefix}{action.text().replace('&', '')} → ")
        elif _keys(action):
            rows.append((_keys(action), prefix + action.text().replace("&", "")))
    return rows


def shortcut_sections(window: Optional[QWidget]) -> list[tuple[str, list[tuple[str, str]]]]:
    """``[(section, [(keys, what)])]`` from the window's menus, its QShortcuts (labelling keys) and the mouse."""
    sections: list[tuple[str, list[tuple[str, str]]]] = []
    if window is None:
        return [MOUSE]
    menu_bar = window.menuBar() if hasattr(window, "menuBar") else None
    in_menus: set[int] = set()
    if menu_bar is not None:
        for top in menu_bar.actions():
            if top.menu() is None:
                continue
            rows = _menu_rows(top.menu())
            in_menus.update(id(a) for a in top.menu().findChildren(QAction))
            if rows:
                sections.append((top.text().replace("&", ""), rows))
    label_rows = []
    digits = []
    for shortcut in window.findChildren(QShortcut):
        key = shortcut.key().toString(QKeySequence.NativeText)
        if not key or not shortcut.isEnabled():
            continue
        if key.isdigit():
            digits.append(key)
        else:
            label_rows.append((key, SHORTCUT_NAMES.get(shortcut.key().toString(), shortcut.whatsThis() or "label panel")))
    if digits:
        label_rows.insert(0, (f"{min(digits)} … {max(digits)}", "choose a finding"))
    if label_rows:
        sections.append(("Labelling", label_rows))
    sections.append(MOUSE)
    return sections


def shortcuts_html(window: Optional[QWidget] = None) -> str:
    """The shortcut sheet as HTML tables, one per menu."""
    parts = []
    for title, rows in shortcut_sections(window):
        parts.append(f"<h3>{title}</h3><table cellspacing='4'>")
        parts += [f"<tr><td><b>{key}</b></td><td>{what}</td></tr>" for key, what in rows]
        parts.append("</table>")
    return "".join(parts)


def show_shortcuts(parent: QWidget) -> QDialog:
    """Show the shortcut sheet (non-modal) and return the dialog."""
    dialog = QDialog(parent)
    dialog.setWindowTitle("Keyboard shortcuts")
    dialog.setObjectName("shortcuts_dialog")
    layout = QVBoxLayout(dialog)
    label = QLabel(shortcuts_html(parent))
    scroll = QScrollArea()
    scroll.setWidget(label)
    scroll.setWidgetResizable(True)
    layout.addWidget(scroll)
    buttons = QDialogButtonBox(QDialogButtonBox.Close)
    buttons.rejected.connect(dialog.close)
    layout.addWidget(buttons)
    dialog.resize(520, 640)
    dialog.show()
    return dialog
