"""Opening the reading-team panel and the PACS dialog from the main window (kept out of main_window.py)."""

from __future__ import annotations

import logging

from PySide6.QtWidgets import QDialog, QVBoxLayout

logger = logging.getLogger(__name__)


def open_pacs(window) -> None:
    """Show the PACS dialog (one per window); a retrieved study is reported and the worklist reloaded."""
    from app.widgets.pacs_dialog import PacsDialog

    dialog = getattr(window, "_pacs_dialog", None)
    if dialog is None:
        dialog = PacsDialog(window.runner, window.workspace, window.settings, parent=window)
        dialog.imported.connect(window._on_imported)
        window._pacs_dialog = dialog
    dialog.show()
    dialog.raise_()


def open_team(window) -> None:
    """Show the reading-team panel (agreement, readers against the truth, adjudication) in a window."""
    from app.widgets.team_panel import TeamPanel

    dialog = getattr(window, "_team_dialog", None)
    if dialog is None:
        dialog = QDialog(window)
        dialog.setWindowTitle("Reading team")
        panel = TeamPanel(window.runner, window.workspace, adjudicator=window.settings.annotator)
        panel.adjudicated.connect(lambda image_id: window._refresh_row(image_id))
        QVBoxLayout(dialog).addWidget(panel)
        dialog.resize(900, 600)
        dialog.panel = panel
        window._team_dialog = dialog
    dialog.panel.adjudicator = window.settings.annotator
    dialog.panel.refresh()
    dialog.show()
    dialog.raise_()
