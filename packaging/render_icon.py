"""Render packaging/icons/loupe.svg to loupe.png (256×256) with Qt's SVG renderer.

Run: QT_QPA_PLATFORM=offscreen .venv/bin/python packaging/render_icon.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QImage, QPainter
from PySide6.QtSvg import QSvgRenderer

ICONS = Path(__file__).resolve().parent / "icons"
SIZE = 256


def render(svg: Path, png: Path, size: int = SIZE) -> None:
    """Render ``svg`` to a ``size``×``size`` ARGB PNG at ``png``; raises ValueError on a bad SVG."""
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise ValueError(f"{svg} is not a valid SVG")
    image = QImage(size, size, QImage.Format_ARGB32)
    image.fill(Qt.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.Antialiasing)
    renderer.render(painter)
    painter.end()
    if not image.save(str(png)):
        raise OSError(f"could not write {png}")


if __name__ == "__main__":
    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])
    render(ICONS / "loupe.svg", ICONS / "loupe.png")
    print(ICONS / "loupe.png")
