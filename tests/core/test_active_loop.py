"""The active-learning loop on a tiny workspace: cache, queue refresh, retrain trigger, label errors, similar
cases, and the simulation on synthetic embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from core.active.cache import ModelOutputs, load_outputs, merge, save_outputs
from core.active.label_errors import label_error_candidates
from core.active.similar import similar_cases
from tests.core.conftest import tiny_model, write_dataset


def test_cache_round_trip_and_merge(tmp_path):
    ws_path = tmp_path / "w.sqlite"
    assert load_outputs(ws_path, "v1") is None
    a = ModelOutputs("v1", ["a", "b"], np.array([[0.2, 0.8], [0.6, 0.4]]), np.ones((2, 3)))
    save_outputs(ws_path, a)
    assert (tmp_path / "w-cache" / "embeddings" / "v1.npz").exists()
    back = load_outputs(ws_path, "v1")
    assert back.image_ids == ["a", "b"] and np.allclose(back.probs, a.probs) and back.emb.shape == (2, 3)
    both = merge(back, ModelOutputs("v1", ["b", "c"], np.array([[0.1, 0.9], [0.5, 0.5]]), np.zeros((2, 3))))
    assert both.image_ids == ["a", "b", "c"] and np.allclose(both.subset(["b"]).probs, [[0.1, 0.9]])


def test_label_error_candidates():
    ids = ["a", "b", "c", "d"]
    probs = np.array([[0.97, 0.03], [0.02, 0.98], [0.6, 0.4], [0.99, 0.01]])
    given = {"a": "pos", "b": "pos", "c": "pos", "d": "neg"}
    found = label_error_candidates(ids, probs, given, ["neg", "pos"], confidence=0.9)
    assert [c.image_id for c in found] == ["a"] and found[0].predicted == "neg"
    assert found[0].to_json()["p_given"] == pytest.approx(0.03)


def test_similar_cases_nearest_labelled_first():
    ids = ["q", "near", "mid", "far", "unlabelled"]
    emb = np.array([[1, 0], [0.99, 0.1], [0.7, 0.7], [-1, 0], [1, 0.001]], dtype=float)
    labels = {"near": "pos", "mid": "neg", "far": "neg", "q": "pos"}
    found = similar_cases(emb[0], ids, emb, labels, k=2, exclude=["q"])
    assert [(n.image_id, n.label) for n in found] == [("near", "pos"), ("mid", "neg")]
    assert found[0].distance < found[1].distance
    assert similar_cases(emb[0], ids, emb, {}, k=3) == []


@pytest.fixture
def pool_ws(workspace, tmp_path, single_thread):
    """16 unlabelled synthetic images (2 marked test), 4 confirmed labels, untrained resnet18 at 32 px."""
    from core.importer import import_paths

    folder = tmp_path / "pool"
    write_dataset(folder, n=16)
    (folder / "labels.csv").unlink()
    report = import_paths(workspace, [folder])
    assert report.imported == 16
    refs = sorted(workspace.images(), key=lambda r: r.path)
    workspace.set_splits({refs[0].id: "test", refs[1].id: "test"})
    tiny_model(workspace)
    for ref in refs[2:6]:
        workspace.add_label(ref.id, "pos" if ref.path.endswith(("1.png", "3.png", "5.png")) else "neg", "t")
    return workspace, refs


def test_refresh_queue_end_to_end(pool_ws):
    from core.active.cache import cache_dir
    from core.active.loop import model_outputs, new_confirmed_labels, refresh_queue, should_retrain

    ws, refs = pool_ws
    items = refresh_queue(ws, "default", n=5, device="cpu")
    queued = [it.image_id for it in items]
    assert len(items) == 5 and len(set(queued)) == 5
    assert not set(queued) & {r.id for r in refs[:6]}  # neither test nor labelled images
    assert all(it.version == "v1" and it.strategy == "default" and "reason" in it.why for it in items)
    assert [it.image_id for it in ws.queue(5)] == queued
    assert ws.queue(1)[0].why == items[0].why
    assert (cache_dir(ws.path) / "v1.npz").exists() and ws.predictions("v1")
    outputs, failed = model_outputs(ws, image_ids=[refs[3].id, refs[9].id])  # served from the cache
    assert outputs.image_ids == [refs[3].id, refs[9].id] and not failed
    entropy_items = refresh_queue(ws, "entropy", n=3, device="cpu")
    assert len(entropy_items) == 3 and "entropy" in entropy_items[0].why
    assert len(refresh_queue(ws, "bald", n=2, device="cpu")) == 2
    # Retrain trigger: counts confirmed labels since the model was created.
    assert new_confirmed_labels(ws) == 4
    assert not should_retrain(ws) and should_retrain(ws, 20)
    ws.set_setting("retrain_after_labels", 3)
    assert should_retrain(ws)


def _blobs(n, rng, rare_share=0.1):
    y = (rng.random(n) > rare_share).astype(np.int64)
    emb = rng.normal(size=(n, 16)) + y[:, None] * 1.5
    return emb, y


def test_simulation_curves_on_synthetic_embeddings():
    from core.active.simulate import SimConfig, run_simulation

    rng = np.random.default_rng(0)
    tr, ytr = _blobs(300, rng)
    te, yte = _blobs(120, rng, 0.3)
    for name in ("random", "entropy", "margin", "modal", "default", "bald", "tta", "cost"):
        res = run_simulation(tr, ytr, te, yte, SimConfig(strategy=name, seed_size=10, batch=10, rounds=2, pca=0),
                             ["rare", "common"])
        assert res["strategy"] == name and res["rare_class"] == "rare"
        assert [p["labels"] for p in res["curve"]] == [10, 20, 30]
        assert all(set(p) == {"labels", "macro_auc", "rare_ap", "rare_recall", "rare_found", "per_class_ap"}
                   for p in res["curve"])
        assert res["curve"][-1]["macro_auc"] > 0.8


def test_simulation_one_class_seed_does_not_crash():
    from core.active.simulate import SimConfig, run_simulation

    rng = np.random.default_rng(1)
    tr, ytr = _blobs(100, rng, 0.02)
    ytr[:] = 1
    ytr[-2:] = 0  # two rare cases in the pool: the seed will very likely have none
    te, yte = _blobs(40, rng, 0.3)
    res = run_simulation(tr, ytr, te, yte, SimConfig(strategy="default", seed_size=3, batch=5, rounds=2, pca=0))
    assert len(res["curve"]) == 3
