"""Workspaces from the window: open one in a main window, switch, remember recent ones, first-run findings."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QFileDialog, QLabel, QMessageBox, QPushButton, QVBoxLayout,
                               QWidget)

logger = logging.getLogger(__name__)

RECENT_KEY = "recent_workspaces"
MAX_RECENT = 8
FILTER = "Loupe workspace (*.sqlite);;All files (*)"

_open_windows: list = []  # windows opened here (kept alive; their workspaces closed when they go)


def recent(settings) -> list[str]:
    """Recently opened workspace files, newest first (only those that still exist)."""
    value = settings.get(RECENT_KEY, []) or []
    items = [value] if isinstance(value, str) else list(value)
    return [p for p in dict.fromkeys(str(p) for p in items) if p and Path(p).is_file()][:MAX_RECENT]


def remember(settings, path) -> None:
    """Put ``path`` first in the recent list."""
    value = settings.get(RECENT_KEY, []) or []
    items = [value] if isinstance(value, str) else list(value)
    path = str(Path(path).absolute())
    settings.set(RECENT_KEY, [path] + [p for p in items if str(p) != path][:MAX_RECENT - 1])


def last_workspace(settings) -> Optional[Path]:
    """The most recently opened workspace that still exists, or None."""
    items = recent(settings)
    return Path(items[0]) if items else None


def open_window(path, settings=None, first_run: bool = True, reader: Optional[str] = None,
                ask_reader: bool = True):
    """Open the workspace at ``path`` (created when new) in a new main window, shown; returns the window.

    With ``first_run`` a workspace without findings or classes opens the Findings dialog. ``reader`` settles who
    labels (else the remembered reader, else the window asks once when it opens, when ``ask_reader``).
    """
    from app.main_window import MainWindow
    from core.workspace import Workspace

    workspace = Workspace.open(Path(path).absolute())
    window = MainWindow(workspace, settings, reader=reader, ask_reader=ask_reader)
    remember(window.settings, workspace.path)
    _open_windows.append(window)
    window.show()
    if first_run:
        QTimer.singleShot(200, lambda: check_first_run(window))
    return window


def close_window_workspace(window) -> None:
    """Forget a closed window and close its workspace."""
    if window in _open_windows:
        _open_windows.remove(window)
    try:
        window.workspace.close()
    except Exception:  # noqa: BLE001 - already closed
        logger.debug("workspace already closed", exc_info=True)


def close_all() -> None:
    """Close the workspaces of every window opened here (at exit)."""
    for window in list(_open_windows):
        close_window_workspace(window)


def switch_workspace(old, path):
    """Open ``path`` in a new main window in place of ``old``; returns the new window, or None when ``old``
    refused to close (training running and the person said no)."""
    if Path(path).absolute() == Path(old.workspace.path).absolute():
        return old
    reader = getattr(getattr(getattr(old, "session", None), "reader", None), "name", None)
    new = open_window(path, old.settings, reader=reader or None)
    new.setGeometry(old.geometry())
    if not old.close():
        new.close()
        close_window_workspace(new)
        old.raise_()
        return None
    close_window_workspace(old)
    return new


def check_first_run(window) -> None:
    """Open the Findings dialog when the window's workspace has neither findings nor classes (checked off the UI
    thread)."""
    from app.workstation.access import runner_of, workspace_of

    def needs(ws) -> bool:
        return not ws.has_findings() and not ws.classes()

    def maybe_open(need: bool) -> None:
        if need:
            from app.workstation.menus import open_findings

            open_findings(window, first_run=True)

    runner_of(window).submit("first_run", needs, workspace_of(window), on_done=maybe_open)


def ask_new_path(parent: QWidget, settings) -> Optional[Path]:
    """A file dialog for a new workspace file; None when cancelled."""
    start = str(Path(settings.get("last_folder", "") or Path.home()) / "workspace.sqlite")
    path, _ = QFileDialog.getSaveFileName(parent, "New workspace", start, FILTER)
    if not path:
        return None
    path = Path(path)
    if path.suffix == "":
        path = path.with_suffix(".sqlite")
    if path.exists():
        QMessageBox.warning(parent, "New workspace", f"{path} already exists: open it with Open workspace…, or "
                                                     f"choose another name.")
        return None
    return path


def ask_open_path(parent: QWidget, settings) -> Optional[Path]:
    """A file dialog for an existing workspace; None when cancelled."""
    path, _ = QFileDialog.getOpenFileName(parent, "Open workspace", str(settings.get("last_folder", "") or ""),
                                          FILTER)
    return Path(path) if path else None


class StartDialog(QDialog):
    """Shown by ``loupe gui`` when no workspace was named and none was opened before: create, open or use the
    default one. ``chosen`` holds the path after ``exec()``."""

    def __init__(self, settings, default_path: Path, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.settings = settings
        self.chosen: Optional[Path] = None
        self.setWindowTitle("Loupe — choose a workspace")
        text = QLabel("A workspace is one file that holds your images' records, labels, models and audit log.\n"
                      "Create one for your studies, open an existing one, or use the default location.",
                      wordWrap=True)
        new = QPushButton("&New workspace…", objectName="primary")
        open_ = QPushButton("&Open workspace…")
        default = QPushButton(f"Use the &default: {default_path}")
        new.clicked.connect(lambda: self._take(ask_new_path(self, settings)))
        open_.clicked.connect(lambda: self._take(ask_open_path(self, settings)))
        default.clicked.connect(lambda: self._take(default_path))
        buttons = QDialogButtonBox(QDialogButtonBox.Cancel)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        for w in (text, new, open_, default, buttons):
            layout.addWidget(w)

    def _take(self, path: Optional[Path]) -> None:
        if path is not None:
            self.chosen = Path(path)
            self.accept()
