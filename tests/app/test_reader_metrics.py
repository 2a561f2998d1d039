"""The reader sees what the models can do: severity in the reading panel, audit rate and flags on the metrics panel."""

from __future__ import annotations

import numpy as np
import pytest

from app.widgets.metrics_panel import MetricsPanel
from app.widgets.prediction_panel import PredictionPanel
from app.workers import Runner
from core.types import Prediction


@pytest.fixture
def runner():
    r = Runner()
    yield r
    r.cancel_all()
    assert r.wait(30000)


def test_reading_panel_shows_the_severity_grade_and_its_probability(qtbot, tmp_path):
    panel = PredictionPanel()
    qtbot.addWidget(panel)
    panel.resize(360, 300)
    pred = Prediction("img", "v3", {"normal": 0.2, "effusion": 0.8}, "effusion", severity=2,
                      severity_probability=0.61)
    panel.show_prediction(pred, {"effusion": 0.4}, "v3", grade_names=["none", "mild", "moderate", "severe"])
    text = panel.severity_label.text()
    assert "moderate" in text and "grade 2 of 3" in text and "61.0%" in text
    panel.show()
    panel.grab().save(str(tmp_path / "severity.png"))
    panel.show_prediction(Prediction("img", "v3", {"normal": 0.9, "effusion": 0.1}, "normal"), {}, "v3")
    assert panel.severity_label is None  # no severity head, no severity line


def _workspace(tmp_path):
    import torch
    from PIL import Image

    from core.importer import import_paths
    from core.models.versions import create_version
    from core.workspace import Workspace

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = ["path,label,split,severity"]
    for i in range(16):
        pixels = rng.integers(0, 60, (32, 32), dtype=np.uint8)
        if i % 2:
            pixels[8:24, 8:24] = 230
        Image.fromarray(pixels).save(folder / f"img{i:02d}.png")
        split = "test" if i < 12 else ""
        rows.append(f"img{i:02d}.png,{'pos' if i % 2 else 'neg'},{split},{i % 3}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    path = tmp_path / "ws.sqlite"
    torch.manual_seed(0)
    with Workspace.open(path) as ws:
        import_paths(ws, [folder], labels_csv=folder / "labels.csv")
        ws.set_setting("findings", {"severity": ["mild", "moderate", "severe"]})
        create_version(ws, "resnet18", ["neg", "pos"], pretrained="none", input_size=32, severity_levels=3)
        ids = [r.id for r in ws.images() if r.split is None]
        # the audit slice of v1: four confident negatives, one of which the reader found to be 'pos'
        ws.record_audit_picks("v1", "pos", [(i, 0.01) for i in ids])
        labels = ws.current_labels()
        ws.add_label(ids[1], "pos", "reader", flag_wrong=True)  # and "model was wrong" on it
        missed = sum(1 for i in ids if "pos" in labels[i].classes)
    return path, ids, missed


@pytest.mark.slow
def test_metrics_panel_shows_severity_kappa_audit_rate_and_flagged_cases(qtbot, runner, tmp_path):
    path, ids, missed = _workspace(tmp_path)
    panel = MetricsPanel(runner, path)
    qtbot.addWidget(panel)
    panel.resize(1100, 1200)
    with qtbot.waitSignal(panel.evaluation_changed, timeout=90000):
        panel.evaluate_active("test")
    view = panel.reader_view
    assert view.isVisibleTo(panel)
    sev = view.data["severity"]
    assert sev["n"] == 12 and sev["grades"] == ["mild", "moderate", "severe"]
    assert "quadratic-weighted κ" in view.severity_label.text()
    audit = view.data["audit"]
    assert audit["n"] == 4 and audit["missed"] == missed == 2
    assert view.audit.rowCount() == 1 and view.audit.item(0, 0).text() == "v1"
    assert view.audit.item(0, 2).text() == "2" and view.audit.item(0, 3).text() == "50.0%"
    assert "2 of 4 audited confident negatives" in view.audit_label.text()
    assert view.flags.rowCount() == 1 and view.flags.item(0, 1).text() == "pos"
    assert view.flags.item(0, 3).text().startswith("v1: ")  # predicted by the current version for the panel
    panel.show()
    qtbot.waitUntil(lambda: not panel.ci_pending, timeout=60000)
    panel.grab().save(str(tmp_path / "metrics.png"))
