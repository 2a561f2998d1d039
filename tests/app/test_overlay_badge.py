"""The overlay panel's faithfulness badge names what failed, in words (pytest-qt, offscreen)."""

from __future__ import annotations

import numpy as np

from app.widgets.overlay_panel import OverlayPanel
from core.types import Explanation


class _Viewer:
    def __init__(self):
        self.badge = None

    def set_badge(self, text, colour=None):
        self.badge = (text, colour)

    def set_overlay(self, *a, **k):
        pass

    def set_busy(self, *a):
        pass

    def set_overlay_opacity(self, *a):
        pass

    def set_side_by_side(self, *a):
        pass


def _explanation(faith):
    return Explanation(map=np.zeros((4, 4), np.float32), signed=None, method="gradcam", target="a", target_index=0,
                       version="v1", seconds=0.1, params={}, faithfulness=faith, image_id="i1")


def test_badge_names_the_failed_checks(qtbot):
    viewer = _Viewer()
    panel = OverlayPanel(runner=None, workspace=None, viewer=viewer)
    qtbot.addWidget(panel)
    flat = {"deletion_auc": 0.5, "insertion_auc": 0.5, "badge": "unfaithful", "flat": {"cv": 0.0, "flat": True},
            "randomisation": {"spearman": None, "passed": False, "threshold": 0.5}}
    panel._badge(_explanation(flat))
    assert viewer.badge[0].startswith("unfaithful") and "flat map" in viewer.badge[0]
    assert "highlights no region" in panel.state.text()
    same = {"deletion_auc": 0.1, "insertion_auc": 0.8, "badge": "faithful", "flat": {"cv": 1.0, "flat": False},
            "randomisation": {"spearman": 0.9, "passed": False, "threshold": 0.5}}
    panel._badge(_explanation(same))  # an entry stored as "faithful" is re-judged from its measurements
    assert viewer.badge[0] == "unfaithful: random model, same map"
    assert "random weights" in panel.state.text()
    good = {**same, "randomisation": {"spearman": 0.1, "passed": True, "threshold": 0.5}}
    panel._badge(_explanation(good))
    assert viewer.badge[0] == "faithful"
    old = {"deletion_auc": 0.1, "insertion_auc": 0.8, "badge": "faithful"}  # cached before the randomisation check
    panel._badge(_explanation(old))
    assert viewer.badge[0] == "weak: randomisation not checked"
