"""The training engine on a tiny synthetic data set: versions, the gate, modes, data rules, cancel, seeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.errors import Cancelled, ModelError
from core.importer import import_paths
from core.models.checkpoint import file_sha256
from core.models.data import labelled_set, train_val_split
from core.models.training import _batches, train
from core.models.versions import load_version, promotion_decision
from core.progress import CancelToken
from core.types import ImageRecord
from tests.core.conftest import fast_config, model_files, tiny_model, write_dataset

pytestmark = pytest.mark.usefixtures("single_thread")

CONTRACT_KEYS = {"n", "accuracy", "macro_auc", "kappa", "ece", "confusion", "classes", "per_class"}


def _state(net) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _active_metrics_on_val(ws, config, parent="v1"):
    """Recompute what the gate should have compared against: ``parent`` on the same validation images."""
    from core.models.data import decode_all, normalise
    from core.models.inference import calibrated_probs
    from core.models.metrics import evaluate

    loaded = load_version(ws, parent)
    data = labelled_set(ws, loaded.classes)
    _, val = train_val_split(ws, data, config.val_fraction, config.seed)
    x, ok = decode_all(val.paths, loaded.spec, workers=1)
    assert ok == list(range(len(val)))
    with torch.inference_mode():
        logits = loaded.net(normalise(x, loaded.spec)).numpy()
    probs = calibrated_probs(logits, loaded.temperature, False)
    return evaluate(val.targets, probs, list(loaded.classes), thresholds=[None, None], n_boot=config.n_boot,
                    seed=config.seed)


# --- a full frozen run -----------------------------------------------------------------------------

def test_frozen_training_registers_a_verified_version_judged_against_the_created_one(trainable):
    ws = trainable
    v1_state = _state(load_version(ws, "v1").net)
    events = []
    config = fast_config(mode="frozen", epochs=2, patience=5)
    result = train(ws, config, emit=events.append)

    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert kinds.count("epoch") == 2 and kinds.index("evaluate") > max(i for i, k in enumerate(kinds) if k == "epoch")
    start = events[0]
    assert start["parent"] == "v1" and start["n_train"] + start["n_val"] == 24 and start["n_val"] > 0
    assert sum(start["counts"].values()) == start["n_train"] and min(start["counts"].values()) > 0

    assert result["version"] == "v2"
    metrics = result["metrics"]
    assert CONTRACT_KEYS <= set(metrics) and metrics["n"] == start["n_val"]
    assert metrics["classes"] == ["neg", "pos"]
    assert sum(map(sum, metrics["confusion"])) == start["n_val"]

    record = ws.model("v2")
    assert record.parent == "v1" and record.metrics["n"] == metrics["n"]
    assert file_sha256(record.path) == record.file_hash  # the registry hash is the file's
    assert model_files(ws) == ["v1.pt", "v2.pt"]  # no temporary file left behind
    assert [h["epoch"] for h in record.params["history"]] == [1, 2]
    assert record.params["train"]["mode"] == "frozen"

    # The created v1 is active, so the first trained version is judged against it on the same
    # validation images, with exactly promotion_decision's rule.
    active = _active_metrics_on_val(ws, config)
    assert record.params["active_metrics"]["macro_auc"] == pytest.approx(active["macro_auc"])
    matched = record.params["active_metrics"]["rare_sensitivity_at_candidate_specificity"]
    if matched is not None:
        active["per_class"][start["rare_class"]]["sensitivity_at_candidate_specificity"] = matched
    expected = promotion_decision(metrics, active, start["rare_class"])
    assert (result["promoted"], result["reason"]) == expected
    if result["promoted"]:
        assert ws.active_model().version == "v2" and ws.model("v1").status == "retired"
    else:
        assert ws.active_model().version == "v1" and record.status == "candidate"

    # Frozen mode trains the heads only: the backbone comes back bit-identical, the head does not.
    v2_state = _state(load_version(ws, "v2").net)
    backbone = [k for k in v1_state if k.startswith("backbone.")]
    assert all(torch.equal(v1_state[k], v2_state[k]) for k in backbone)
    assert not torch.equal(v1_state["head.1.weight"], v2_state["head.1.weight"])


def test_without_an_active_model_the_first_trained_version_is_promoted(trainable):
    ws = trainable
    ws.set_model_status("v1", "retired", reason="test")
    result = train(ws, fast_config(parent="v1"))
    assert result["promoted"] is True
    assert result["reason"] == "no active model to compare with: promoted"
    assert ws.active_model().version == result["version"]


# --- the promotion gate ----------------------------------------------------------------------------

def _metrics(auc, rare_sens, ci_width=0.0, rare="pos"):
    per_class = {}
    for name in ("neg", "pos"):
        per_class[name] = {"sensitivity": rare_sens if name == rare else 0.9,
                           "ci95": {"auc": None if auc is None else [auc - ci_width / 2, auc + ci_width / 2]}}
    return {"macro_auc": auc, "per_class": per_class}


def test_gate_promotes_when_nothing_is_active():
    assert promotion_decision(_metrics(0.5, 0.1), None, "pos") == (True, "no active model to compare with: promoted")


def test_gate_refuses_a_drop_in_rare_class_sensitivity_even_when_auc_improves():
    promoted, reason = promotion_decision(_metrics(0.95, 0.70), _metrics(0.80, 0.80), "pos")
    assert not promoted
    assert "pos sensitivity would drop from 0.800 to 0.700" in reason
    # the same numbers on a class that is not the rare one do not block
    assert promotion_decision(_metrics(0.95, 0.70), _metrics(0.80, 0.80), "neg")[0]


def test_gate_accepts_equal_or_better_rare_sensitivity():
    promoted, reason = promotion_decision(_metrics(0.90, 0.80), _metrics(0.90, 0.80), "pos")
    assert promoted and reason.startswith("promoted:") and "pos sensitivity 0.800 → 0.800" in reason


def test_gate_auc_tolerance_is_the_minimum_when_intervals_are_narrow():
    active = _metrics(0.900, 0.8)
    assert promotion_decision(_metrics(0.896, 0.8), active, "pos")[0]  # 0.004 < 0.005: noise
    promoted, reason = promotion_decision(_metrics(0.894, 0.8), active, "pos")  # 0.006 > 0.005
    assert not promoted and "macro ROC-AUC would drop from 0.900 to 0.894" in reason and "0.005" in reason


def test_gate_auc_tolerance_grows_with_the_candidates_confidence_intervals():
    active = _metrics(0.90, 0.8)
    # CI width 0.2 on each class -> tolerance = 0.5 * 0.2 = 0.1
    assert promotion_decision(_metrics(0.81, 0.8, ci_width=0.2), active, "pos")[0]
    promoted, reason = promotion_decision(_metrics(0.79, 0.8, ci_width=0.2), active, "pos")
    assert not promoted and "noise level 0.100" in reason


def test_gate_keeps_a_candidate_whose_auc_is_undefined():
    promoted, reason = promotion_decision(_metrics(None, 0.8), _metrics(0.7, 0.8), "pos")
    assert not promoted and "too few cases" in reason


# --- transfer modes, losses and samplers -----------------------------------------------------------

@pytest.mark.parametrize("mode", ["finetune", "gradual"])
def test_finetune_and_gradual_update_the_backbone(trainable, mode):
    ws = trainable
    before = _state(load_version(ws, "v1").net)
    events = []
    # 20 training images in batches of 19 leave one image over: at 32 px the last feature map is
    # 1x1, where BatchNorm cannot train on a single sample, so the engine must not make such a batch
    result = train(ws, fast_config(mode=mode, batch_size=19), emit=events.append)
    assert events[0]["n_train"] % 19 == 1
    after = _state(load_version(ws, result["version"]).net)
    assert len(ws.model(result["version"]).params["history"]) == 1
    changed = [k for k in before if k.startswith("backbone.") and not torch.equal(before[k], after[k])]
    assert changed, "the backbone did not change"
    stem = "backbone.conv1.weight"
    if mode == "finetune":
        assert stem in changed
    else:  # gradual unfreezing: the first epoch trains the last stage only, the stem stays put
        assert stem not in changed
        assert any(k.startswith("backbone.layer4.") for k in changed)


@pytest.mark.parametrize("loss, sampler", [("focal", "none"), ("weighted", "balanced"), ("ce", "balanced")])
def test_losses_and_samplers_train(trainable, loss, sampler):
    result = train(trainable, fast_config(loss=loss, sampler=sampler))
    params = trainable.model(result["version"]).params
    assert params["train"]["loss"] == loss and params["train"]["sampler"] == sampler
    assert np.isfinite(params["history"][0]["train_loss"])


def test_balanced_sampler_draws_classes_evenly():
    targets = np.array([0] * 90 + [1] * 10)
    gen = torch.Generator().manual_seed(0)
    drawn = torch.cat(_batches(100, 50, "balanced", targets, 2, 0, 1, gen)).numpy()
    assert len(drawn) == 100
    assert 35 <= (targets[drawn] == 1).sum() <= 65  # ~50 %, against 10 % without the sampler
    plain = torch.cat(_batches(100, 50, "none", targets, 2, 0, 1, torch.Generator().manual_seed(0))).numpy()
    assert sorted(plain.tolist()) == list(range(100))


def test_batches_never_end_with_a_single_image():
    for n in (1, 6, 11, 16):
        sizes = [len(b) for b in _batches(n, 5, "none", np.zeros(n, dtype=np.int64), 2, 0, 1,
                                          torch.Generator().manual_seed(0))]
        assert sum(sizes) == n and (n == 1 or 1 not in sizes), (n, sizes)


@pytest.mark.parametrize("n, world", [(21, 2), (22, 3), (23, 3), (20, 2)])
def test_ddp_shards_give_every_rank_the_same_number_of_steps(n, world):
    targets = np.zeros(n, dtype=np.int64)
    shards = [_batches(n, 5, "none", targets, 2, rank, world, torch.Generator().manual_seed(1))
              for rank in range(world)]
    # an uneven shard leaves one rank in an all-reduce its peers never join (the run hangs or dies)
    assert len({len(s) for s in shards}) == 1
    assert len({sum(len(b) for b in s) for s in shards}) == 1
    assert set(torch.cat([torch.cat(s) for s in shards]).tolist()) == set(range(n))


def test_unknown_mode_is_refused(trainable):
    with pytest.raises(ModelError, match="unknown training mode"):
        train(trainable, fast_config(mode="sideways"))


# --- which labels train ----------------------------------------------------------------------------

def test_only_confirmed_labels_outside_test_train(trainable):
    ws = trainable
    refs = ws.images()
    test_img, model_img, multi_img, relabelled, unknown_img = (r.id for r in refs[:5])
    ws.set_split(test_img, "test")
    ws.add_label(model_img, "pos", annotator="model v1", source="model")
    ws.add_label(multi_img, "neg;pos", annotator="dr a")
    old = ws.current_label(relabelled).classes[0]
    new = "pos" if old == "neg" else "neg"
    ws.add_label(relabelled, new, annotator="dr a")
    ws.add_label(unknown_img, "cyst", annotator="dr a")

    data = labelled_set(ws, ["neg", "pos"])
    assert len(data) == 20
    assert {test_img, model_img, multi_img, unknown_img}.isdisjoint(data.image_ids)
    assert data.skipped == {"not a confirmed label": 1, "several classes on a multi-class model": 1,
                            "class not in the model: cyst": 1}
    assert data.targets[data.image_ids.index(relabelled)] == ["neg", "pos"].index(new)  # the newest label counts

    events = []
    train(ws, fast_config(), emit=events.append)
    start = events[0]
    assert start["n_train"] + start["n_val"] == 20
    assert start["skipped"] == data.skipped


def test_multilabel_model_keeps_images_with_several_findings(trainable):
    ws = trainable
    ws.add_label(ws.images()[0].id, "neg;pos", annotator="dr a")
    data = labelled_set(ws, ["neg", "pos"], multilabel=True)
    assert len(data) == 24 and data.targets.shape == (24, 2)
    assert data.targets[0].tolist() == [1.0, 1.0] and "several classes on a multi-class model" not in data.skipped


def _records_with_patients(folder, n_patients=12, per_patient=3):
    return [ImageRecord(key=f"p{p}-{k}", path=str(folder / f"p{p}-{k}.png"), kind="photo", modality="XC",
                        rows=32, columns=32, patient_id=f"P{p:02d}")
            for p in range(n_patients) for k in range(per_patient)]


def test_patient_grouped_split_never_leaks_a_patient(workspace, tmp_path):
    records = _records_with_patients(tmp_path)
    ids, _ = workspace.add_images(records)
    patient = {i: r.patient_id for i, r in zip(ids, records)}
    # patients 0-3 are positive: the rare class
    workspace.add_labels([{"image_id": i, "classes": ["pos" if int(patient[i][1:]) < 4 else "neg"],
                           "annotator": "import", "source": "import"} for i in ids])
    data = labelled_set(workspace, ["neg", "pos"])
    assert sorted(set(data.groups)) == sorted(set(patient.values()))
    for seed in range(5):
        train_set, val_set = train_val_split(workspace, data, 0.25, seed)
        train_patients = {patient[i] for i in train_set.image_ids}
        val_patients = {patient[i] for i in val_set.image_ids}
        assert train_patients.isdisjoint(val_patients)
        assert len(train_set) + len(val_set) == len(ids)
        assert set(val_set.targets.tolist()) == {0, 1} and set(train_set.targets.tolist()) == {0, 1}


def test_user_val_split_is_respected(trainable):
    ws = trainable
    chosen = [r.id for r in ws.images()[:6]]
    ws.set_splits({i: "val" for i in chosen})
    train_set, val_set = train_val_split(ws, labelled_set(ws, ["neg", "pos"]), 0.5, 0)
    assert sorted(val_set.image_ids) == sorted(chosen)
    assert set(train_set.image_ids).isdisjoint(chosen) and len(train_set) == 18


# --- refusals -------------------------------------------------------------------------------------

def test_one_class_only_is_refused_with_the_counts(workspace, tmp_path, single_thread):
    folder = tmp_path / "photos"
    write_dataset(folder, n=8)
    import_paths(workspace, [folder])
    workspace.add_labels([{"image_id": r.id, "classes": ["neg"], "annotator": "import", "source": "import"}
                          for r in workspace.images()])
    tiny_model(workspace)
    with pytest.raises(ModelError, match="at least two classes") as err:
        train(workspace, fast_config())
    assert "'pos': 0" in str(err.value)
    assert [m.version for m in workspace.models()] == ["v1"]


def test_no_labels_is_refused(workspace, tmp_path, single_thread):
    folder = tmp_path / "photos"
    write_dataset(folder, n=6)
    import_paths(workspace, [folder])
    tiny_model(workspace)
    with pytest.raises(ModelError, match="no confirmed labels to train on"):
        train(workspace, fast_config())


def test_no_model_is_refused(workspace):
    with pytest.raises(ModelError, match="no model is active"):
        train(workspace, fast_config())


# --- cancel ---------------------------------------------------------------------------------------

def test_cancel_during_training_saves_nothing(trainable):
    ws = trainable
    token = CancelToken()
    events = []

    def emit(event):
        events.append(event)
        if event["event"] == "epoch":
            token.cancel()

    with pytest.raises(Cancelled):
        train(ws, fast_config(mode="finetune", epochs=5, patience=10), emit=emit, cancel=token)
    assert [e["event"] for e in events].count("epoch") == 1
    assert "done" not in [e["event"] for e in events]
    assert [m.version for m in ws.models()] == ["v1"] and ws.active_model().version == "v1"
    assert model_files(ws) == ["v1.pt"]


def test_cancel_before_start_raises_cancelled(trainable):
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        train(trainable, fast_config(), cancel=token)
    assert model_files(trainable) == ["v1.pt"]


# --- repeatability --------------------------------------------------------------------------------

def _fingerprint(ws, result):
    record = ws.model(result["version"])
    m = result["metrics"]
    return ([(h["train_loss"], h["val_loss"]) for h in record.params["history"]],
            m["macro_auc"], m["accuracy"], m["ece"], m["confusion"], record.params["temperature"])


@pytest.mark.parametrize("mode", ["frozen", "finetune"])
def test_same_seed_same_metrics(trainable, mode):
    ws = trainable
    config = dict(mode=mode, epochs=2 if mode == "frozen" else 1, patience=5, parent="v1")
    first = _fingerprint(ws, train(ws, fast_config(seed=3, **config)))
    second = _fingerprint(ws, train(ws, fast_config(seed=3, **config)))
    assert first == second
    other = _fingerprint(ws, train(ws, fast_config(seed=4, **config)))
    assert other[0] != first[0]  # the seed matters, so the equality above is not vacuous


def test_an_untrained_model_calling_everything_rare_does_not_block_a_real_one():
    """Sensitivities are compared at the candidate's specificity, not at each model's own threshold."""
    from core.models.metrics import sensitivity_at_specificity

    y = np.array([1] * 10 + [0] * 90)
    degenerate = np.full(100, 0.9)  # "rare" for every case: sensitivity 1.0 at specificity 0
    assert sensitivity_at_specificity(y, degenerate, 0.9) == 0.0
    good = np.r_[np.linspace(0.6, 0.99, 10), np.linspace(0.0, 0.7, 90)]
    assert sensitivity_at_specificity(y, good, 0.9) > 0.5
    candidate = _metrics(0.95, 0.90)
    candidate["per_class"]["pos"]["sensitivity"], candidate["per_class"]["pos"]["specificity"] = 0.9, 0.9
    active = _metrics(0.5, 0.5)
    active["per_class"]["pos"]["sensitivity"] = 1.0
    assert not promotion_decision(candidate, active, "pos")[0]  # raw sensitivities: blocked
    active["per_class"]["pos"]["sensitivity_at_candidate_specificity"] = 0.0
    promoted, reason = promotion_decision(candidate, active, "pos")
    assert promoted and "at the same specificity (0.900)" in reason
