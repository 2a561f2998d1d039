"""MetricsPanel: confusion counts, the per-class table, the live threshold, empty data, evaluating the active model."""

from __future__ import annotations

import numpy as np
import pytest

from app.widgets.metrics_panel import MetricsPanel
from app.workers import Runner
from core.models.metrics import evaluate

CLASSES = ["normal", "effusion", "nodule"]
# 8 hand-made cases; argmax predictions: 0, 0, 1, 1, 1, 2, 2, 0
Y3 = np.array([0, 0, 0, 1, 1, 2, 2, 2])
P3 = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.3, 0.5, 0.2], [0.2, 0.7, 0.1],
               [0.1, 0.6, 0.3], [0.1, 0.2, 0.7], [0.2, 0.2, 0.6], [0.5, 0.2, 0.3]])
# binary: 4 negatives, 4 positives, scores for "pos"
YB = np.array([0, 0, 0, 0, 1, 1, 1, 1])
SB = np.array([0.05, 0.2, 0.4, 0.7, 0.3, 0.6, 0.8, 0.9])
PB = np.stack([1 - SB, SB], axis=1)


@pytest.fixture
def runner():
    r = Runner()
    yield r
    r.cancel_all()
    assert r.wait(30000)


@pytest.fixture
def panel(qtbot, runner, tmp_path):
    widget = MetricsPanel(runner, tmp_path / "ws.sqlite")
    qtbot.addWidget(widget)
    return widget


def _cell(panel, row, column):
    return panel.table.item(row, column).text()


def test_confusion_counts_match_the_hand_count(panel):
    panel.set_evaluation(CLASSES, Y3, P3, None, "hand-made")
    expected = np.array([[2, 1, 0], [0, 2, 0], [1, 0, 2]])
    np.testing.assert_array_equal(panel.confusion, expected)
    ax = panel.canvas.axes[0]
    drawn = {t.get_gid(): int(t.get_text().split("\n")[0]) for t in ax.texts if (t.get_gid() or "").startswith("cell")}
    assert drawn == {f"cell-{i}-{j}": int(expected[i, j]) for i in range(3) for j in range(3)}
    assert panel.title_label.text() == "hand-made"
    # one ROC line per class, AUC in its legend label
    labels = [t.get_text() for t in panel.canvas.axes[1].get_legend().get_texts()]
    assert any(label.startswith("normal  AUC") for label in labels) and len(labels) >= 3


def test_table_values_match_core_evaluate_and_cis_arrive_from_the_runner(qtbot, panel):
    panel.set_evaluation(CLASSES, Y3, P3, None)
    ref = evaluate(Y3, P3, CLASSES, n_boot=0)
    for r, name in enumerate(CLASSES):
        pc = ref["per_class"][name]
        assert _cell(panel, r, 0) == name
        assert _cell(panel, r, 1) == f"{pc['n']} / {pc['n_negative']}"
        assert _cell(panel, r, 2).startswith(f"{pc['sensitivity']:.3f}")
        assert _cell(panel, r, 3).startswith(f"{pc['specificity']:.3f}")
        assert _cell(panel, r, 4) == f"{pc['precision']:.3f}"
        assert _cell(panel, r, 5) == f"{pc['f1']:.3f}"
        assert _cell(panel, r, 6).startswith(f"{pc['auc']:.3f}")
        assert _cell(panel, r, 7) == f"{pc['ap']:.3f}"
        assert _cell(panel, r, 9) == "small n"  # 2-3 positives: the warning shows
    assert "fewer than 30" in panel.warning_label.text()
    assert panel.ci_pending
    qtbot.waitUntil(lambda: not panel.ci_pending, timeout=60000)
    boot = evaluate(Y3, P3, CLASSES, n_boot=1000, seed=0)
    lo, hi = boot["per_class"]["normal"]["ci95"]["sensitivity"]
    assert _cell(panel, 0, 2) == f"{boot['per_class']['normal']['sensitivity']:.3f}  [{lo:.3f}–{hi:.3f}]"
    lo, hi = boot["per_class"]["nodule"]["ci95"]["specificity"]
    assert _cell(panel, 2, 3).endswith(f"[{lo:.3f}–{hi:.3f}]")


def test_moving_the_threshold_updates_the_tradeoff_to_the_hand_computed_values(qtbot, panel):
    panel.set_evaluation(["neg", "pos"], YB, PB, {"pos": 0.5})
    assert panel.selected_class == "pos" and panel.spin.value() == pytest.approx(0.5)
    # at 0.5: positives 0.6, 0.8, 0.9 flagged (3/4); negatives below: 0.05, 0.2, 0.4 (3/4)
    r = panel.tradeoff()
    assert (r["sensitivity"], r["specificity"]) == (0.75, 0.75)
    panel.set_threshold("pos", 0.25)
    # at 0.25: all 4 positives flagged; negatives cleared: 0.05, 0.2 -> 2/4
    r = panel.tradeoff()
    assert (r["sensitivity"], r["specificity"], r["tp"], r["fp"]) == (1.0, 0.5, 4, 2)
    assert "sensitivity <b>1.000</b>" in panel.tradeoff_label.text()
    assert "specificity <b>0.500</b>" in panel.tradeoff_label.text()
    assert panel.thresholds["pos"] == pytest.approx(0.25)
    # the table follows with the app's decision rule, instantly and without bootstrap
    assert _cell(panel, 1, 2).startswith("1.000") and _cell(panel, 1, 3).startswith("0.500")
    np.testing.assert_array_equal(panel.confusion, [[2, 2], [0, 4]])
    marker = [line for line in panel.canvas.axes[1].get_lines() if line.get_gid() == "operating-point"][0]
    assert (marker.get_xdata()[0], marker.get_ydata()[0]) == (0.5, 1.0)
    panel.slider.setValue(850)  # the slider drives the spin box: 0.85 -> positives 0.9 only
    assert panel.spin.value() == pytest.approx(0.85)
    r = panel.tradeoff()
    assert (r["sensitivity"], r["specificity"]) == (0.25, 1.0)
    panel.reset_thresholds()
    assert panel.thresholds["pos"] == pytest.approx(0.5)
    qtbot.waitUntil(lambda: not panel.ci_pending, timeout=60000)


@pytest.mark.parametrize("y, p", [
    (np.zeros(0, dtype=int), np.zeros((0, 2))),
    (np.array([0, 0, 0]), np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4]])),
])
def test_empty_or_one_class_data_says_not_enough_data(panel, y, p):
    panel.set_evaluation(["neg", "pos"], y, p, None, "tiny")
    assert panel.showing_message is not None and "Not enough data" in panel.showing_message
    assert panel.evaluation is None
    panel.set_evaluation(["neg", "pos"], YB, PB, None)  # recovers with real data
    assert panel.showing_message is None and panel.evaluation["n"] == 8


def _tiny_workspace(tmp_path, split="test"):
    import torch
    from PIL import Image

    from core.importer import import_paths
    from core.models.versions import create_version
    from core.workspace import Workspace

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = ["path,label,split"]
    for i in range(12):
        pixels = rng.integers(0, 60, (32, 32), dtype=np.uint8)
        if i % 2:
            pixels[8:24, 8:24] = 230
        Image.fromarray(pixels).save(folder / f"img{i:02d}.png")
        rows.append(f"img{i:02d}.png,{'pos' if i % 2 else 'neg'},{split}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    path = tmp_path / "ws.sqlite"
    torch.manual_seed(0)
    with Workspace.open(path) as ws:
        import_paths(ws, [folder], labels_csv=folder / "labels.csv")
        create_version(ws, "resnet18", ["neg", "pos"], pretrained="none", input_size=32)
    return path


@pytest.mark.slow
def test_evaluate_active_runs_in_the_background_and_shows_the_result(qtbot, runner, tmp_path):
    panel = MetricsPanel(runner, _tiny_workspace(tmp_path))
    qtbot.addWidget(panel)
    with qtbot.waitSignal(panel.evaluation_changed, timeout=60000):
        panel.evaluate_active("test")
    assert panel.evaluation["n"] == 12 and panel.confusion.sum() == 12
    assert panel.title_label.text().startswith("v1 on 'test'")
    assert panel.evaluate_button.isEnabled()
    qtbot.waitUntil(lambda: not panel.ci_pending, timeout=60000)
    panel.evaluate_active("val")  # nothing labelled there: said in words
    qtbot.waitUntil(lambda: panel.showing_message is not None, timeout=60000)
    assert "no confirmed labels on images marked 'val'" in panel.showing_message


@pytest.mark.slow
def test_a_threshold_saved_for_the_site_is_used_by_the_model_and_audited(qtbot, runner, tmp_path):
    from core.models.versions import load_version
    from core.workspace import Workspace

    path = _tiny_workspace(tmp_path)
    panel = MetricsPanel(runner, path)
    qtbot.addWidget(panel)
    assert not panel.save_button.isEnabled()  # nothing evaluated yet
    with qtbot.waitSignal(panel.evaluation_changed, timeout=60000):
        panel.evaluate_active("test")
    assert panel.save_button.isEnabled()
    panel.set_threshold("pos", 0.42)
    with qtbot.waitSignal(panel.thresholds_saved, timeout=30000) as saved:
        panel.save_button.click()
    assert saved.args == ["v1"] and "saved: pos threshold 0.420 for v1" in panel.status_label.text()
    with Workspace.open(path) as ws:
        assert load_version(ws).thresholds["pos"] == pytest.approx(0.42)
        entry = ws.audit_log(limit=1, action="model.threshold")[0]
        assert entry["detail"]["new"] == pytest.approx(0.42) and entry["detail"]["evidence"]["split"] == "test"
    panel.reset_thresholds()  # "reset" now returns to the saved site value
    assert panel.thresholds["pos"] == pytest.approx(0.42)
