"""Severity end to end, the audit slice's miss rate and gate, "model was wrong" put to use, bounded uncertainty."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.importer import import_paths
from core.models.audit_slice import (audit_by_version, audit_summary, fisher_greater, miss_rate_on,
                                     significantly_worse, wilson_interval)
from core.models.severity import evaluate_severity, grade_distribution, predict_grades, severity_scale
from tests.core.conftest import fast_config, tiny_model, write_dataset

# --- severity ---------------------------------------------------------------------------------


def test_grade_distribution_from_coral_logits_by_hand():
    # P(>0) = 0.9, P(>1) = 0.5, P(>2) = 0.1  →  P = [0.1, 0.4, 0.4, 0.1]
    logits = np.log(np.array([[0.9 / 0.1, 1.0, 0.1 / 0.9]]))
    dist = grade_distribution(logits)
    assert np.allclose(dist, [[0.1, 0.4, 0.4, 0.1]])
    grades, p = predict_grades(logits)
    # thresholds passed (> 0.5): only the first one strictly → grade 1, probability 0.4
    assert grades.tolist() == [1] and p[0] == pytest.approx(0.4)


def test_grade_distribution_clips_non_monotone_heads():
    logits = np.log(np.array([[0.2 / 0.8, 0.6 / 0.4]]))  # P(>0) = 0.2 < P(>1) = 0.6
    dist = grade_distribution(logits)
    assert (dist >= 0).all() and dist.sum() == pytest.approx(1.0)


def test_evaluate_severity_kappa_interval_and_confusion():
    y = np.array([0, 1, 2, 3] * 10 + [-1, -1])  # two ungraded rows are left out
    perfect = evaluate_severity(y, np.where(y < 0, 0, y), 4, n_boot=200)
    assert perfect["n"] == 40 and perfect["kappa"] == pytest.approx(1.0)
    assert perfect["confusion"] == [[10, 0, 0, 0], [0, 10, 0, 0], [0, 0, 10, 0], [0, 0, 0, 10]]
    off = evaluate_severity(y, np.clip(np.where(y < 0, 0, y) + 1, 0, 3), 4, names=["a", "b", "c", "d"], n_boot=200)
    assert 0 < off["kappa"] < 1
    lo, hi = off["ci95"]
    assert lo <= off["kappa"] <= hi
    assert off["per_grade"]["d"] == {"n": 10, "correct": 10, "recall": 1.0}
    assert off["per_grade"]["a"]["correct"] == 0


def test_severity_scale_names(workspace):
    assert severity_scale(workspace, 4) == ["none", "mild", "moderate", "severe"]
    assert severity_scale(workspace, 3) == ["grade 0", "grade 1", "grade 2"]
    workspace.set_setting("findings", {"classes": ["a", "b"], "severity": ["low", "mid", "high"]})
    assert severity_scale(workspace, 3) == ["low", "mid", "high"]


@pytest.fixture
def graded(workspace, tmp_path, single_thread):
    """24 images, 8 of them on the test split, all graded 0..3, and an untrained model with a 4-level head."""
    from core.models.versions import create_version

    folder = tmp_path / "photos"
    csv = write_dataset(folder, n=24, splits=["test"] * 8 + ["train"] * 16)
    lines = csv.read_text().splitlines()
    header = lines[0] + ",severity"
    csv.write_text("\n".join([header] + [f"{line},{i % 4}" for i, line in enumerate(lines[1:])]) + "\n")
    report = import_paths(workspace, [folder], csv)
    assert report.imported == 24
    torch.manual_seed(0)
    create_version(workspace, "resnet18", ["neg", "pos"], pretrained="none", input_size=32, severity_levels=4)
    return workspace


def test_predictions_carry_the_severity_grade_and_it_is_stored(graded):
    from core.models.service import predict_images

    ws = graded
    preds, failed = predict_images(ws, device="cpu")
    assert not failed and len(preds) == 24
    for p in preds:
        assert p.severity in (0, 1, 2, 3) and 0 < p.severity_probability <= 1
    stored = ws.predictions("v1")
    some = preds[0]
    assert stored[some.image_id].severity == some.severity
    assert stored[some.image_id].severity_probability == pytest.approx(some.severity_probability)


def test_evaluate_reports_severity_kappa_and_grades(graded):
    from core.models.service import evaluate_version

    result = evaluate_version(graded, split="test", device="cpu", n_boot=50)
    assert "severity_kappa" in result
    sev = result["severity"]
    assert sev["n"] == 8 and len(sev["confusion"]) == 4 and sum(map(sum, sev["confusion"])) == 8
    assert sev["grades"] == ["none", "mild", "moderate", "severe"]


def test_export_csv_and_sr_carry_the_predicted_severity(graded, tmp_path):
    import csv

    from core.export.sr import _model_group
    from core.models.service import predict_images
    from core.export.tabular import build_rows, write_csv

    ws = graded
    predict_images(ws, device="cpu")
    rows, classes, version = build_rows(ws)
    write_csv(rows, classes, tmp_path / "out.csv")
    with open(tmp_path / "out.csv") as handle:
        table = list(csv.DictReader(handle))
    assert all(r["predicted_severity"] in ("none", "mild", "moderate", "severe") for r in table)
    assert all(0 < float(r["predicted_severity_probability"]) <= 1 for r in table)
    # the SR's model group codes the grade as the annotator's severity is coded
    from pydicom.dataset import Dataset

    pred = next(iter(ws.predictions("v1").values()))
    source = Dataset()
    source.SOPClassUID, source.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", "1.2.3.4"
    group = _model_group(source, ws.model("v1"), pred)
    text = str(group)
    assert f"SEV{pred.severity}" in text and "Probability of severity grade" in text


# --- the audit slice --------------------------------------------------------------------------


def test_wilson_interval_by_hand():
    lo, hi = wilson_interval(0, 10)
    assert lo == pytest.approx(0, abs=1e-12) and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    assert wilson_interval(0, 0) is None


def test_fisher_one_sided_by_hand():
    # 3/3 missed vs 0/3: P = 1 / C(6, 3) = 0.05
    assert fisher_greater(3, 3, 0, 3) == pytest.approx(0.05)
    assert fisher_greater(0, 3, 3, 3) == pytest.approx(1.0)


def test_audit_summary_per_version_from_picks_and_labels(workspace, tmp_path):
    folder = tmp_path / "photos"
    write_dataset(folder, n=12)
    import_paths(workspace, [folder])
    ids = [r.id for r in workspace.images()]
    workspace.add_classes(["neg", "pos"])
    workspace.record_audit_picks("v1", "pos", [(i, 0.01) for i in ids[:10]])
    workspace.record_audit_picks("v2", "pos", [(i, 0.02) for i in ids[10:]])
    assert workspace.record_audit_picks("v1", "pos", [(ids[0], 0.01)]) == 0  # picked again: one row
    for i in ids[:8]:
        workspace.add_label(i, "neg", "reader")
    workspace.add_label(ids[8], "pos", "reader")
    workspace.add_label(ids[9], "pos", "reader")
    s = audit_summary(workspace, "v1")
    assert (s["n"], s["missed"]) == (10, 2) and s["miss_rate"] == pytest.approx(0.2)
    assert s["ci95"] == pytest.approx(wilson_interval(2, 10))
    assert audit_summary(workspace, "v2") is None  # not labelled yet
    assert list(audit_by_version(workspace)) == ["v1"]


def test_promotion_gate_refuses_a_significantly_worse_audited_miss_rate():
    from core.models.versions import promotion_decision

    base = {"macro_auc": 0.8, "per_class": {}}
    # same images: the active calls 40 of them confident negatives, none rare; the candidate 40 with 8 rare
    worse = {"candidate": {"n": 40, "missed": 8}, "active": {"n": 40, "missed": 0}}
    ok, reason = promotion_decision(dict(base), dict(base), "pos", audit=worse)
    assert not ok and "audited miss rate" in reason and "8/40" in reason
    slightly = {"candidate": {"n": 40, "missed": 1}, "active": {"n": 40, "missed": 0}}
    ok, reason = promotion_decision(dict(base), dict(base), "pos", audit=slightly)
    assert ok and "audited miss rate 0/40 → 1/40" in reason
    assert significantly_worse(worse["candidate"], worse["active"])[0]
    assert not significantly_worse(slightly["candidate"], slightly["active"])[0]


def test_miss_rate_on_counts_only_the_models_confident_negatives():
    p = np.array([0.01, 0.02, 0.04, 0.5, 0.9])
    y = np.array([True, False, False, True, True])
    assert miss_rate_on(p, y)["n"] == 3 and miss_rate_on(p, y)["missed"] == 1


def test_refresh_queue_records_the_audit_slice(workspace, tmp_path, single_thread):
    from core.active.loop import refresh_queue

    folder = tmp_path / "photos"
    write_dataset(folder, n=40)
    import_paths(workspace, [folder])
    tiny_model(workspace)
    workspace.set_setting("audit_share", 0.5)
    workspace.set_setting("cold_start_k", 0)
    workspace.set_setting("rare_class", "pos")
    # a model that calls everything confidently negative: every non-picked case is audit-eligible
    from core.models.versions import load_version

    loaded = load_version(workspace)
    with torch.no_grad():
        loaded.net.head[-1].bias.copy_(torch.tensor([6.0, -6.0]))
        loaded.net.head[-1].weight.zero_()
    items = refresh_queue(workspace, n=10, device="cpu")
    audited = [it.image_id for it in items if it.why.get("reason") == "audit"]
    assert audited
    picks = workspace.audit_picks("v1")
    assert sorted(p["image_id"] for p in picks) == sorted(audited)
    assert all(p["rare_class"] == "pos" and p["p_rare"] <= 0.05 for p in picks)


# --- "model was wrong" ------------------------------------------------------------------------


def test_flagged_weights_and_weighted_loss_equal_a_duplicated_case():
    from core.models.losses import make_loss
    from core.models.sample_weights import flagged_weights, weighted_finding_loss
    from core.types import Label

    labels = {"a": Label("a", ("x",), "r", "t", flag_wrong=True), "b": Label("b", ("y",), "r", "t")}
    w = flagged_weights(["a", "b", "c"], labels, 2.0)
    assert w.tolist() == [2.0, 1.0, 1.0]
    torch.manual_seed(0)
    logits, y = torch.randn(3, 2), torch.tensor([0, 1, 1])
    for kind in ("ce", "weighted", "focal"):
        loss = make_loss(kind, [5, 1])
        assert float(weighted_finding_loss(loss, logits, y, torch.ones(3))) == pytest.approx(float(loss(logits, y)))
        # weight 2 on the first case = that case counted twice
        dup = float(loss(torch.cat([logits[:1], logits]), torch.cat([y[:1], y])))
        assert float(weighted_finding_loss(loss, logits, y, torch.tensor([2.0, 1.0, 1.0]))) == pytest.approx(dup)


def test_a_flagged_case_weighs_more_in_the_next_training(trainable, monkeypatch):
    from core.models import training

    ws = trainable
    labels = ws.current_labels()
    flagged = sorted(labels)[0]
    ws.add_label(flagged, labels[flagged].classes, "reader", flag_wrong=True)
    seen = []

    def spy(loss, logits, target, weights):
        seen.append(weights.clone())
        return training_weighted(loss, logits, target, weights)

    training_weighted = training.weighted_finding_loss
    monkeypatch.setattr(training, "weighted_finding_loss", spy)
    events = []
    training.train(ws, fast_config(epochs=1, flagged_weight=3.0, val_fraction=0.01), emit=events.append)
    weights = torch.cat(seen)
    assert sorted(set(weights.tolist())) == [1.0, 3.0]
    assert int((weights == 3.0).sum()) == 1  # the flagged case, once per epoch
    assert next(e for e in events if e["event"] == "sample_weights") == {"event": "sample_weights", "flagged": 1,
                                                                          "weight": 3.0}


def test_neighbours_of_a_flagged_case_are_raised_with_their_own_why():
    from core.active.acquire import Pick
    from core.active.flagged import boost_with_neighbours, near_flagged
    from core.active.why import describe_pick

    emb = np.array([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 1.0], [-1.0, 0.0], [0.95, 0.3]])
    ids = ["flag", "near", "far1", "far2", "opposite", "near2"]
    pool = np.array([False, True, True, True, True, True])
    nbs = near_flagged(emb, ids, ["flag"], pool, per_flag=2)
    assert [ids[nb.index] for nb in nbs] == ["near", "near2"]
    picks = [Pick(2, 0.9, {"reason": "uncertain / costly"}), Pick(3, 0.8, {"reason": "uncertain / costly"}),
             Pick(4, 0.1, {"reason": "audit"})]
    boosted = boost_with_neighbours(picks, nbs, n=3, max_share=0.3)  # ceil(0.9) = one neighbour
    assert [ids[pk.index] for pk in boosted] == ["near", "far1", "opposite"]  # audit kept, lowest pick gives way
    why = boosted[0].why
    assert why["reason"] == "near flagged" and why["flagged_image"] == "flag"
    assert describe_pick(why).startswith("Looks like case flag, which a reader flagged \"model was wrong\"")


def test_flagging_a_case_raises_its_neighbours_in_the_queue(workspace, tmp_path, single_thread):
    from core.active.loop import model_outputs, refresh_queue

    folder = tmp_path / "photos"
    write_dataset(folder, n=40)
    import_paths(workspace, [folder])
    tiny_model(workspace)
    ids = [r.id for r in workspace.images()]
    for i in ids[:6]:
        workspace.add_label(i, "neg", "reader")
    before = {it.image_id: it.rank for it in refresh_queue(workspace, n=8, device="cpu")}
    outputs, _ = model_outputs(workspace, image_ids=ids)
    emb = outputs.emb / np.linalg.norm(outputs.emb, axis=1, keepdims=True)
    flagged = ids[0]
    row = outputs.image_ids.index(flagged)
    pool = [i for i in range(len(ids)) if outputs.image_ids[i] not in ids[:6]]
    nearest = outputs.image_ids[max(pool, key=lambda i: float(emb[i] @ emb[row]))]
    workspace.add_label(flagged, "neg", "reader", flag_wrong=True)
    after = refresh_queue(workspace, n=8, device="cpu")
    assert after[0].image_id == nearest and after[0].why["reason"] == "near flagged"
    assert after[0].why["flagged_image"] == flagged
    assert before.get(nearest, math.inf) > 1  # it was not on top before the flag


def test_flagged_cases_name_the_version_that_erred_and_whether_the_current_still_errs(workspace, tmp_path):
    from core.active.flagged import flagged_cases
    from core.types import ModelVersion, Prediction

    folder = tmp_path / "photos"
    write_dataset(folder, n=2)
    import_paths(workspace, [folder])
    a, b = [r.id for r in workspace.images()]
    for v in ("v1", "v2"):
        workspace.add_model(ModelVersion(v, "resnet18", ("neg", "pos"), f"/x/{v}.pt"))
    workspace.add_predictions("v1", [Prediction(a, "v1", {"neg": 0.9, "pos": 0.1}, "neg"),
                                     Prediction(b, "v1", {"neg": 0.9, "pos": 0.1}, "neg")])
    workspace.add_label(a, "pos", "reader", flag_wrong=True)
    workspace.add_label(b, "pos", "reader", flag_wrong=True)
    workspace.add_predictions("v2", [Prediction(a, "v2", {"neg": 0.2, "pos": 0.8}, "pos"),
                                     Prediction(b, "v2", {"neg": 0.7, "pos": 0.3}, "neg")])
    rows = {r["image_id"]: r for r in flagged_cases(workspace, "v2")}
    assert rows[a]["erred_version"] == "v1" and rows[a]["erred_predicted"] == "neg"
    assert rows[a]["still_wrong"] is False and rows[b]["still_wrong"] is True


# --- bounded memory for TTA and MC dropout -----------------------------------------------------


def test_tta_and_mc_dropout_run_in_batches_independent_of_pool_size(workspace, tmp_path, single_thread):
    from core.active.loop import mc_dropout_passes, tta_passes
    from core.models.versions import load_version

    folder = tmp_path / "photos"
    write_dataset(folder, n=30)
    import_paths(workspace, [folder])
    tiny_model(workspace)
    loaded = load_version(workspace)
    items = [(r.id, r.path) for r in workspace.images()]
    sizes = []
    hook = loaded.net.register_forward_pre_hook(lambda _m, args: sizes.append(args[0].shape[0]))
    try:
        out = tta_passes(loaded, items, batch_size=7)
    finally:
        hook.remove()
    assert out.shape == (5, 30, 2) and max(sizes) == 7 and sum(sizes) == 5 * 30
    # same numbers as one big batch (BatchNorm in eval mode: rows are independent)
    assert np.allclose(out, tta_passes(loaded, items, batch_size=30), atol=1e-5)
    head_sizes = []
    hook = loaded.net.head.register_forward_pre_hook(lambda _m, args: head_sizes.append(args[0].shape[0]))
    try:
        emb = np.random.default_rng(0).normal(size=(100, loaded.net.embedding_dim)).astype(np.float32)
        mc = mc_dropout_passes(loaded, emb, passes=3, batch_size=16)
    finally:
        hook.remove()
    assert mc.shape == (3, 100, 2) and max(head_sizes) == 16 and sum(head_sizes) == 300
