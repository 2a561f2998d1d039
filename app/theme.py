"""The dark reading-room theme (palette + style sheet from resources/style.qss)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

RESOURCES = Path(__file__).resolve().parents[1] / "resources"

#: Colours the widgets share (status colours chosen to stay readable on the dark chrome).
COLORS = {
    "ok": "#3fa66b", "warn": "#d9a441", "bad": "#d05353", "accent": "#3b7dd8", "muted": "#8a8f97",
    "unlabelled": "#8a8f97", "queued": "#d9a441", "labelled": "#3fa66b", "flagged": "#d05353",
    "disagreement": "#c36fd8", "damaged": "#e0603a",
}

#: Line colours for plotted series, readable on the dark background.
SERIES = ["#5b9bf0", "#e8a33d", "#4fc08d", "#e06c75", "#c36fd8", "#56c2d6", "#d9d36a", "#a0a4ab"]


def apply_dark_theme(app: QApplication) -> None:
    """Apply the Fusion style, a dark palette and the Loupe style sheet."""
    app.setStyle("Fusion")
    palette = QPalette()
    for role, colour in (
        (QPalette.Window, "#1b1d21"), (QPalette.WindowText, "#d6d8dc"), (QPalette.Base, "#1f2126"),
        (QPalette.AlternateBase, "#23262b"), (QPalette.Text, "#d6d8dc"), (QPalette.Button, "#2a2e35"),
        (QPalette.ButtonText, "#d6d8dc"), (QPalette.Highlight, "#2d5ea3"), (QPalette.HighlightedText, "#ffffff"),
        (QPalette.ToolTipBase, "#2a2e35"), (QPalette.ToolTipText, "#e6e8eb"), (QPalette.PlaceholderText, "#6b6f76"),
    ):
        palette.setColor(role, QColor(colour))
    app.setPalette(palette)
    qss = RESOURCES / "style.qss"
    if qss.exists():
        app.setStyleSheet(qss.read_text(encoding="utf-8"))
