"""The keyboard/menu actions of :class:`~app.widgets.image_view.ImageView`.

Each action's shortcut context is the view and its children
(``Qt.WidgetWithChildrenShortcut``), so single-letter keys never fire while
the person types elsewhere.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence

logger = logging.getLogger(__name__)


def build_view_actions(view) -> dict[str, QAction]:
    """Create the view's QActions, add them to ``view`` and return them by name.

    ``view`` is an ImageView; names: fit, actual, zoom_in, zoom_out, reset_window, next_preset, invert,
    rotate, rotate_ccw, flip_h, flip_v, reset_view, overlay, side_by_side, prev_frame, next_frame.
    """
    spec = (
        ("fit", "Fit to window", ("F", "Ctrl+0"), view.fit),
        ("actual", "Actual pixels (1:1)", ("Ctrl+1",), lambda: view.set_zoom(1.0)),
        ("zoom_in", "Zoom in", ("+", "=", "Ctrl++"), view.zoom_in),
        ("zoom_out", "Zoom out", ("-", "Ctrl+-"), view.zoom_out),
        ("reset_window", "Reset window/level", ("R",), view.reset_window),
        ("next_preset", "Next window preset", ("L",), view.next_preset),
        ("invert", "Invert grey levels", ("I",), lambda: view.set_inverted(not view._inverted)),
        ("rotate", "Rotate view 90° clockwise", ("Ctrl+R",), view.rotate),
        ("rotate_ccw", "Rotate view 90° counter-clockwise", ("Ctrl+Shift+R",), lambda: view.rotate(-1)),
        ("flip_h", "Flip view horizontally", ("H",), lambda: view.flip(True)),
        ("flip_v", "Flip view vertically", ("V",), lambda: view.flip(False)),
        ("reset_view", "Reset view", ("Shift+R",), view.reset_view),
        ("overlay", "Show/hide overlay", ("O",), view.toggle_overlay),
        ("side_by_side", "Side by side", ("S",), lambda: view.set_side_by_side(not view._side_by_side)),
        ("prev_frame", "Previous frame", ("PgUp",), lambda: view.set_frame(view.frame_index() - 1)),
        ("next_frame", "Next frame", ("PgDown",), lambda: view.set_frame(view.frame_index() + 1)),
    )
    out = {}
    for name, text, keys, slot in spec:
        act = QAction(text, view)
        act.setObjectName(f"view.{name}")
        act.setShortcuts([QKeySequence(k) for k in keys])
        act.setShortcutContext(Qt.WidgetWithChildrenShortcut)
        act.setToolTip(f"{text} ({keys[0]})")
        act.triggered.connect(lambda _=False, s=slot: s())
        view.addAction(act)
        out[name] = act
    return out
