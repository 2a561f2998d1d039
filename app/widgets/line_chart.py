"""A light QPainter line chart for live curves (training loss/AUC): milliseconds per repaint.

Matplotlib takes hundreds of milliseconds per redraw on a busy CPU, which would
stall the UI thread during training; this widget only paints lines, points,
ticks and a legend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget


@dataclass
class Series:
    """One curve: (x, y) points, colour, and whether to mark the points."""

    name: str
    colour: str
    points: list[tuple[float, float]] = field(default_factory=list)
    markers: bool = True
    alpha: float = 1.0
    dashed: bool = False


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if not math.isfinite(lo) or not math.isfinite(hi) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


class LineChart(QWidget):
    """Title, axes with ticks, several series and a legend, painted directly."""

    def __init__(self, title: str, x_label: str, y_label: str, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.title, self.x_label, self.y_label = title, x_label, y_label
        self.series: dict[str, Series] = {}
        self.x_range: Optional[tuple[float, float]] = None
        self.y_range: Optional[tuple[float, float]] = None
        self.setMinimumSize(260, 180)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)

    def set_series(self, name: str, points, colour: str, markers: bool = True, alpha: float = 1.0,
                   dashed: bool = False) -> None:
        """Create or replace one curve; repaints."""
        self.series[name] = Series(name, colour, [(float(x), float(y)) for x, y in points], markers, alpha, dashed)
        self.update()

    def set_ranges(self, x_range: Optional[tuple[float, float]] = None,
                   y_range: Optional[tuple[float, float]] = None) -> None:
        """Fix axis ranges (None = fit the data)."""
        self.x_range, self.y_range = x_range, y_range
        self.update()

    def clear(self) -> None:
        """Remove every curve."""
        self.series.clear()
        self.update()

    def _bounds(self) -> tuple[float, float, float, float]:
        xs = [x for s in self.series.values() for x, _ in s.points]
        ys = [y for s in self.series.values() for _, y in s.points]
        x0, x1 = self.x_range or ((min(xs), max(xs)) if xs else (0.0, 1.0))
        y0, y1 = self.y_range or ((min(ys), max(ys)) if ys else (0.0, 1.0))
        if x1 <= x0:
            x1 = x0 + 1.0
        if y1 <= y0:
            y0, y1 = y0 - 0.5, y1 + 0.5
        if self.y_range is None:
            pad = 0.06 * (y1 - y0)
            y0, y1 = y0 - pad, y1 + pad
        return x0, x1, y0, y1

    def paintEvent(self, _event) -> None:  # noqa: N802 (Qt)
        p = QPainter(self)
        p.setRenderHint(QPainter.Antialiasing)
        p.fillRect(self.rect(), QColor("#1f2126"))
        font = QFont(self.font())
        font.setPointSizeF(max(7.0, font.pointSizeF() - 1))
        p.setFont(font)
        fm = p.fontMetrics()
        plot = QRectF(48, 24, self.width() - 60, self.height() - 24 - 34)
        if plot.width() < 20 or plot.height() < 20:
            return
        x0, x1, y0, y1 = self._bounds()

        def to_px(x: float, y: float) -> QPointF:
            return QPointF(plot.left() + (x - x0) / (x1 - x0) * plot.width(),
                           plot.bottom() - (y - y0) / (y1 - y0) * plot.height())

        p.setPen(QColor("#d6d8dc"))
        p.drawText(QRectF(0, 2, self.width(), 20), Qt.AlignHCenter | Qt.AlignVCenter, self.title)
        grid, text = QPen(QColor("#30343b")), QColor("#aeb2b9")
        for tick in nice_ticks(y0, y1):
            pt = to_px(x0, tick)
            p.setPen(grid)
            p.drawLine(QPointF(plot.left(), pt.y()), QPointF(plot.right(), pt.y()))
            p.setPen(text)
            p.drawText(QRectF(0, pt.y() - 8, plot.left() - 4, 16), Qt.AlignRight | Qt.AlignVCenter, f"{tick:g}")
        for tick in nice_ticks(x0, x1):
            pt = to_px(tick, y0)
            p.setPen(grid)
            p.drawLine(QPointF(pt.x(), plot.top()), QPointF(pt.x(), plot.bottom()))
            p.setPen(text)
            p.drawText(QRectF(pt.x() - 30, plot.bottom() + 2, 60, 14), Qt.AlignHCenter | Qt.AlignTop, f"{tick:g}")
        p.drawText(QRectF(plot.left(), plot.bottom() + 16, plot.width(), 16), Qt.AlignHCenter, self.x_label)
        p.save()
        p.translate(10, plot.center().y())
        p.rotate(-90)
        p.drawText(QRectF(-plot.height() / 2, -8, plot.height(), 16), Qt.AlignCenter, self.y_label)
        p.restore()
        p.setPen(QPen(QColor("#4a4f57")))
        p.drawRect(plot)
        p.setClipRect(plot.adjusted(-4, -4, 4, 4))
        for s in self.series.values():
            if not s.points:
                continue
            colour = QColor(s.colour)
            colour.setAlphaF(s.alpha)
            pen = QPen(colour, 1.8)
            if s.dashed:
                pen.setStyle(Qt.DashLine)
            p.setPen(pen)
            path = QPainterPath(to_px(*s.points[0]))
            for x, y in s.points[1:]:
                path.lineTo(to_px(x, y))
            p.drawPath(path)
            if s.markers:
                p.setBrush(colour)
                for x, y in s.points:
                    p.drawEllipse(to_px(x, y), 2.8, 2.8)
                p.setBrush(Qt.NoBrush)
        p.setClipping(False)
        legend_x = plot.right() - 8
        for i, s in enumerate(reversed([s for s in self.series.values() if s.points])):
            w = fm.horizontalAdvance(s.name)
            y = plot.top() + 6 + i * 15
            p.setPen(QPen(QColor(s.colour), 2.5))
            p.drawLine(QPointF(legend_x - w - 22, y + 6), QPointF(legend_x - w - 8, y + 6))
            p.setPen(text)
            p.drawText(QRectF(legend_x - w - 4, y, w + 4, 14), Qt.AlignLeft | Qt.AlignVCenter, s.name)
        p.end()
