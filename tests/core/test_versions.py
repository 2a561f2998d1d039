"""Model versions on disk (hashes, tamper and truncation refusal, atomic saves), inference and the service."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.errors import ModelError
from core.importer import import_paths
from core.models import checkpoint
from core.models.checkpoint import file_sha256, load_checkpoint, save_checkpoint
from core.models.inference import InferenceResult, calibrated_probs, run_inference, to_predictions
from core.models.service import evaluate_version, predict_images
from core.models.versions import LoadedModel, create_version, load_version, models_dir, next_version_name, save_version
from tests.core.conftest import model_files, tiny_model, write_dataset

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def created(workspace, single_thread):
    """A workspace with an untrained resnet18 v1 (nothing imported)."""
    return workspace, tiny_model(workspace)


# --- create, save, load ---------------------------------------------------------------------------

def test_create_version_registers_an_active_hashed_file(created):
    ws, v1 = created
    assert v1.version == "v1" and v1.status == "active" and v1.arch == "resnet18"
    assert v1.classes == ("neg", "pos") and v1.weights == "none (random init)"
    assert v1.path == str(models_dir(ws.path) / "v1.pt")
    assert file_sha256(v1.path) == v1.file_hash
    assert ws.classes() == ["neg", "pos"]
    loaded = load_version(ws)
    assert loaded.version.version == "v1" and loaded.classes == ("neg", "pos")
    assert loaded.spec.size == 32 and not loaded.net.training and not loaded.multilabel


def test_create_version_refuses_duplicate_classes_and_unknown_arch(workspace):
    with pytest.raises(ModelError, match="unique"):
        create_version(workspace, "resnet18", ["neg", "neg"], pretrained="none", input_size=32)
    with pytest.raises(ModelError):
        create_version(workspace, "alexnet-9000", ["a", "b"], pretrained="none")
    assert workspace.models() == []


def test_saved_version_round_trips_weights_calibration_and_thresholds(created):
    ws, _ = created
    net = load_version(ws, "v1").net
    saved = save_version(ws, net, load_version(ws, "v1").spec, ["neg", "pos"], weights="test", parent="v1",
                         temperature=1.7, thresholds={"pos": 0.25}, metrics={"macro_auc": 0.5})
    assert saved.version == "v2" and saved.status == "candidate" and saved.parent == "v1"
    assert ws.active_model().version == "v1"
    assert file_sha256(saved.path) == saved.file_hash
    again = load_version(ws, "v2")
    assert again.temperature == pytest.approx(1.7) and again.thresholds == {"pos": 0.25}
    for (k, a), (_, b) in zip(net.state_dict().items(), again.net.state_dict().items()):
        assert torch.equal(a, b), k
    assert again.version.params["temperature"] == pytest.approx(1.7)


def test_next_version_name_ignores_unnumbered_versions(created):
    ws, v1 = created
    from dataclasses import replace

    ws.add_model(replace(v1, version="v7", status="candidate"))
    ws.add_model(replace(v1, version="imported-model", status="candidate"))
    assert next_version_name(ws) == "v8"


def test_no_active_model_is_a_model_error(workspace):
    with pytest.raises(ModelError, match="no model is active"):
        load_version(workspace)


def _flip_byte(path, offset=None):
    data = bytearray(open(path, "rb").read())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x01
    open(path, "wb").write(bytes(data))


def test_tampered_checkpoint_is_refused_naming_sha256(created):
    ws, v1 = created
    _flip_byte(v1.path)
    with pytest.raises(ModelError, match="sha256") as err:
        load_version(ws, "v1")
    assert "v1.pt" in str(err.value) and "refusing" in str(err.value)


def test_truncated_checkpoint_is_refused(created):
    ws, v1 = created
    data = open(v1.path, "rb").read()
    open(v1.path, "wb").write(data[: len(data) // 3])
    with pytest.raises(ModelError, match="sha256"):
        load_version(ws, "v1")
    # even without a registered hash a truncated file never loads half-way
    with pytest.raises(ModelError, match="cannot be loaded safely"):
        load_checkpoint(v1.path)


def test_missing_checkpoint_is_refused(created):
    ws, v1 = created
    import os

    os.remove(v1.path)
    with pytest.raises(ModelError, match="missing"):
        load_version(ws, "v1")


class _Payload:
    """Not a tensor: a weights-only load must refuse to unpickle it."""


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "loupe-model", "thing": _Payload()}, path)
    with pytest.raises(ModelError, match="cannot be loaded safely"):
        load_checkpoint(path, file_sha256(path))


# --- atomic saves ---------------------------------------------------------------------------------

def test_save_checkpoint_is_atomic_and_returns_the_file_hash(tmp_path):
    path = tmp_path / "models" / "m.pt"
    digest = save_checkpoint(path, {"w": torch.arange(4.0)})
    assert digest == file_sha256(path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.pt"]
    assert torch.equal(load_checkpoint(path, digest)["w"], torch.arange(4.0))


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"),
                                   RuntimeError("PytorchStreamWriter failed writing file data/0")])
def test_failed_save_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, error):
    path = tmp_path / "m.pt"
    old = save_checkpoint(path, {"w": torch.zeros(3)})

    def broken_save(obj, fh):
        fh.write(b"half a checkpoint")
        raise error

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(ModelError, match="could not write model file"):
        save_checkpoint(path, {"w": torch.ones(3)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]
    assert file_sha256(path) == old


def test_interrupted_save_leaves_no_temporary(tmp_path, monkeypatch):
    def interrupted(obj, fh):
        fh.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "m.pt", {"w": torch.ones(1)})
    assert list(tmp_path.iterdir()) == []


def test_failed_version_save_registers_nothing(created, monkeypatch):
    ws, _ = created
    loaded = load_version(ws, "v1")

    def full_disk(obj, fh):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(ModelError, match="No space left"):
        save_version(ws, loaded.net, loaded.spec, ["neg", "pos"], weights="test", parent="v1")
    assert [m.version for m in ws.models()] == ["v1"]
    assert model_files(ws) == ["v1.pt"]
    assert checkpoint.file_sha256(ws.model("v1").path) == ws.model("v1").file_hash


# --- inference ------------------------------------------------------------------------------------

@pytest.fixture
def imported(workspace, tmp_path, single_thread):
    """Six imported images with labels (two marked test) and an untrained v1."""
    folder = tmp_path / "photos"
    labels = write_dataset(folder, n=6, splits=["train", "train", "val", "val", "test", "test"])
    import_paths(workspace, [folder], labels)
    tiny_model(workspace)
    return workspace


def test_run_inference_lists_bad_files_and_predicts_the_rest(imported, tmp_path):
    ws = imported
    refs = ws.images()
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not a png at all")
    items = [(refs[0].id, refs[0].path), ("bad", str(garbage)), (refs[1].id, refs[1].path),
             ("gone", str(tmp_path / "missing.png")), (refs[2].id, refs[2].path)]
    progress = []
    result = run_inference(load_version(ws), items, batch_size=2, workers=2, progress=progress.append)
    assert result.image_ids == [refs[0].id, refs[1].id, refs[2].id]
    assert [f[0] for f in result.failed] == ["bad", "gone"]
    assert all(reason for _, reason in result.failed)
    assert result.probs.shape == (3, 2) and result.logits.shape == (3, 2)
    assert np.allclose(result.probs.sum(axis=1), 1.0, atol=1e-5)
    assert result.embeddings.shape == (3, 512)
    assert progress[-1].done == progress[-1].total == 5


def test_inference_matches_a_direct_forward_pass(imported):
    ws = imported
    from core.models.inference import load_input

    loaded = load_version(ws)
    ref = ws.images()[0]
    result = run_inference(loaded, [(ref.id, ref.path)], with_embeddings=False)
    with torch.inference_mode():
        expected = loaded.net(load_input(ref.path, loaded.spec).unsqueeze(0)).numpy()
    assert np.allclose(result.logits, expected, atol=1e-5)
    assert result.embeddings is None


def test_calibrated_probs_soften_with_temperature():
    logits = np.array([[2.0, 0.0]])
    sharp, soft = calibrated_probs(logits, 1.0, False), calibrated_probs(logits, 4.0, False)
    assert sharp[0, 0] > soft[0, 0] > 0.5
    assert np.allclose(calibrated_probs(logits, 2.0, True), 1 / (1 + np.exp(-logits / 2.0)))


def _fake_result(probs):
    probs = np.asarray(probs, dtype=np.float64)
    return InferenceResult([f"i{k}" for k in range(len(probs))], np.zeros_like(probs), probs, None)


def test_to_predictions_follows_the_operating_thresholds(created):
    ws, _ = created
    base = load_version(ws)
    probs = [[0.65, 0.35], [0.80, 0.20], [0.30, 0.70]]
    plain = to_predictions(base, _fake_result(probs))
    assert [p.predicted for p in plain] == ["neg", "neg", "pos"]  # argmax
    tuned = LoadedModel(base.version, base.net, base.spec, base.classes, 1.0, {"pos": 0.3})
    preds = to_predictions(tuned, _fake_result(probs))
    assert [p.predicted for p in preds] == ["pos", "neg", "pos"]  # pos wins once it passes 0.3
    assert preds[0].probs == {"neg": 0.65, "pos": 0.35} and preds[0].version == "v1"
    assert to_predictions(tuned, _fake_result(np.zeros((0, 2)))) == []


def test_to_predictions_multilabel_joins_findings(workspace, single_thread):
    create_version(workspace, "resnet18", ["effusion", "nodule", "mass"], pretrained="none", input_size=32,
                   head="multilabel")
    loaded = load_version(workspace)
    assert loaded.multilabel
    preds = to_predictions(loaded, _fake_result([[0.9, 0.2, 0.6], [0.1, 0.1, 0.1]]))
    assert [p.predicted for p in preds] == ["effusion;mass", ""]


def test_predict_images_stores_predictions_per_version(imported, tmp_path):
    ws = imported
    refs = ws.images()
    broken = refs[0]
    open(broken.path, "wb").write(b"\x89PNG\r\n\x1a\n truncated")
    preds, failed = predict_images(ws, device="cpu")
    assert [f[0] for f in failed] == [broken.id]
    assert len(preds) == 5 and {p.version for p in preds} == {"v1"}
    stored = ws.predictions("v1")
    assert set(stored) == {r.id for r in refs[1:]}
    for p in preds:
        assert stored[p.image_id].predicted == p.predicted in ("neg", "pos")
        assert stored[p.image_id].probs == pytest.approx(p.probs)
        assert sum(p.probs.values()) == pytest.approx(1.0, abs=1e-5)

    loaded = load_version(ws, "v1")
    save_version(ws, loaded.net, loaded.spec, ["neg", "pos"], weights="copy", parent="v1", temperature=5.0)
    preds2, _ = predict_images(ws, [refs[1].id, refs[2].id], version="v2", device="cpu")
    assert set(ws.predictions("v2")) == {refs[1].id, refs[2].id}
    assert len(ws.predictions("v1")) == 5  # the other version's predictions are kept
    # same weights, higher temperature: softer probabilities, stored under v2 only
    p1, p2 = ws.predictions("v1")[refs[1].id].probs, ws.predictions("v2")[refs[1].id].probs
    assert abs(p2["pos"] - 0.5) < abs(p1["pos"] - 0.5)


def test_evaluate_version_on_the_test_split(imported):
    result = evaluate_version(imported, split="test", device="cpu", n_boot=20)
    assert result["version"] == "v1" and result["split"] == "test" and result["n"] == 2
    assert result["per_class"]["pos"]["n"] == 1 and result["failed"] == []
    with pytest.raises(ModelError, match="no confirmed labels on images marked 'val'"):
        imported.set_splits({r.id: None for r in imported.images(split="val")})
        evaluate_version(imported, split="val", device="cpu", n_boot=20)


def test_files_left_by_killed_writers_are_swept_once_old(created):
    import os
    import time

    from core.models.versions import sweep_orphans

    ws, v1 = created
    folder = models_dir(ws.path)
    stale_tmp, stale_pt = folder / ".v2.pt.abc123.tmp", folder / "v7.pt"
    fresh_tmp = folder / ".v3.pt.def456.tmp"  # a writer in another process, still at work
    for path in (stale_tmp, stale_pt, fresh_tmp):
        path.write_bytes(b"partial")
    old = time.time() - 3600
    for path in (stale_tmp, stale_pt):
        os.utime(path, (old, old))
    os.utime(v1.path, (old, old))  # registered: never swept, however old
    assert sorted(p.name for p in sweep_orphans(ws)) == [".v2.pt.abc123.tmp", "v7.pt"]
    assert fresh_tmp.exists() and os.path.exists(v1.path)
    # a new version sweeps on its way in
    os.utime(fresh_tmp, (old, old))
    net = load_version(ws, "v1").net
    save_version(ws, net, load_version(ws, "v1").spec, ["neg", "pos"], weights="none")
    assert not fresh_tmp.exists()


def test_site_threshold_overrides_the_file_and_redecides_cached_predictions(created, tmp_path):
    from core.active.cache import ModelOutputs, save_outputs
    from core.active.loop import redecide_predictions
    from core.errors import LoupeError
    from core.models.site_thresholds import set_site_threshold, site_thresholds

    ws, v1 = created
    write_dataset(tmp_path / "photos", n=2, seed=1)
    import_paths(ws, [tmp_path / "photos"])
    ids = sorted(r.id for r in ws.images())[:2]
    assert load_version(ws).thresholds.get("pos") is None
    save_outputs(ws.path, ModelOutputs("v1", ids, np.array([[0.7, 0.3], [0.9, 0.1]], np.float32),
                                       np.zeros((2, 4), np.float32)))
    assert redecide_predictions(ws) == 2
    assert [ws.predictions("v1")[i].predicted for i in ids] == ["neg", "neg"]
    with pytest.raises(LoupeError, match="no class 'tb'"):
        set_site_threshold(ws, "v1", "tb", 0.2)
    with pytest.raises(LoupeError, match="between 0 and 1"):
        set_site_threshold(ws, "v1", "pos", 1.5)
    assert set_site_threshold(ws, "v1", "pos", 0.25, actor="dr", evidence={"split": "site"}) == {"pos": 0.25}
    loaded = load_version(ws)  # the cached network, the site's threshold
    assert loaded.thresholds["pos"] == 0.25 and loaded.file_thresholds.get("pos") is None
    assert site_thresholds(ws, "v1") == {"pos": 0.25}
    assert redecide_predictions(ws) == 2
    assert [ws.predictions("v1")[i].predicted for i in ids] == ["pos", "neg"]  # 0.3 passes the site's 0.25
    set_site_threshold(ws, "v1", "pos", None)
    assert load_version(ws).thresholds.get("pos") is None and site_thresholds(ws, "v1") == {}
    assert [e["detail"]["new"] for e in ws.audit_log(action="model.threshold")] == [None, 0.25]
