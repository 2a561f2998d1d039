"""The faithfulness badge tells the truth; Grad-CAM costs one forward pass on a prepared explainer.

The tiny model of :mod:`tests.core.test_explain_synth` is trained on a task whose answer is known (a bright
patch decides the class, a brighter ring distracts): its Grad-CAM must pass every check, while a flat map,
a map from a randomised model and the map of an untrained model must fail, with the reason in words.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam

from core.errors import ModelError
from core.explain import explain, hook_count
from core.explain.base import private_copy
from core.explain.faithfulness import deletion_insertion, flatness, verdict
from core.explain.gradcam import GradCam, prepared
from core.explain.protocol import add_randomisation
from core.explain.sanity import cached_randomised_copy, compare, randomised_copy, spearman
from core.models.preprocess import to_tensor_with_geometry
from core.models.versions import LoadedModel
from tests.core.test_explain_synth import make_images, train_tiny


@pytest.fixture(scope="module")
def tiny():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield train_tiny()
    torch.set_num_threads(before)


def _positive(seed=21):
    return make_images(1, seed, positive_fraction=1.0)[0][0]


def _assess_map(loaded, img, image_map, target):
    """The badge for any map in the image's geometry, as the app computes it for a Grad-CAM map."""
    from core.explain.faithfulness import to_model_space

    x, geo = to_tensor_with_geometry(img, loaded.spec)
    clone, _ = private_copy(loaded.net, "cpu")
    faith = deletion_insertion(clone, x[None], to_model_space(image_map, geo), target)
    return add_randomisation(faith, loaded, img, "gradcam", target, image_map, device="cpu")


# --- the flat-map check --------------------------------------------------------------------------

def test_flatness_by_hand():
    assert flatness(np.zeros((8, 8)))["flat"]
    assert flatness(np.full((8, 8), 0.7))["flat"]
    near = 0.9 + 0.01 * np.random.default_rng(0).standard_normal((32, 32))
    assert flatness(near)["flat"]
    spot = np.zeros((32, 32))
    spot[4:8, 4:8] = 1.0
    assert not flatness(spot)["flat"]
    assert not flatness(np.random.default_rng(1).random((32, 32)))["flat"]  # noise is not flat (cv ≈ 0.58)


def test_flat_map_has_no_rank_correlation_and_fails_the_randomisation_check():
    flat, spot = np.full((32, 32), 0.5), np.zeros((32, 32))
    spot[:8, :8] = 1.0
    assert np.isnan(spearman(flat, spot))
    assert not compare(flat, spot)["passed"]  # was counted as passing with Spearman 0
    assert compare(spot, flat)["passed"]  # a randomised model giving nothing: the map depends on the weights


def test_verdict_names_each_failed_check():
    ok = {"deletion_auc": 0.1, "insertion_auc": 0.8, "flat": {"cv": 1.2, "flat": False},
          "randomisation": {"spearman": 0.1, "passed": True, "threshold": 0.5}}
    assert verdict(ok)["badge"] == "faithful" and verdict(ok)["failed"] == []
    no_rnd = {k: v for k, v in ok.items() if k != "randomisation"}
    assert verdict(no_rnd)["badge"] == "weak" and "randomisation not checked" in verdict(no_rnd)["label"]
    same = {**ok, "randomisation": {"spearman": 0.9, "passed": False, "threshold": 0.5}}
    v = verdict(same)
    assert v["badge"] == "unfaithful" and "random weights" in v["summary"] and "random model" in v["label"]
    flat = {**ok, "flat": {"cv": 0.0, "flat": True}}
    assert verdict(flat)["badge"] == "unfaithful" and "flat" in verdict(flat)["label"]
    close = {**ok, "insertion_auc": 0.2}
    assert verdict(close)["badge"] == "weak" and "deletion" in verdict(close)["summary"]


# --- the badge on a model whose answer is known ---------------------------------------------------

def test_trained_gradcam_passes_the_badge(tiny):
    passed = 0
    for seed in (21, 22, 23):
        e = explain(tiny, _positive(seed), "gradcam", "patch", device="cpu", faithfulness=True)
        f = e.faithfulness
        assert {"flat", "randomisation", "badge", "summary", "label"} <= set(f)
        passed += f["badge"] == "faithful"
    assert passed >= 2, "the trained model's Grad-CAM should pass flat, deletion/insertion and randomisation"


def test_flat_map_fails_the_badge(tiny):
    img = _positive()
    f = _assess_map(tiny, img, np.full(img.shape, 0.6, dtype=np.float32), 1)
    assert f["badge"] == "unfaithful"
    assert any("flat" in reason for reason in f["failed"])
    assert not f["randomisation"]["passed"]


def test_randomised_models_map_fails_the_badge(tiny):
    """The map a model with random weights gives, shown as if it explained the trained model, fails."""
    img = _positive()
    rnd = LoadedModel(tiny.version, cached_randomised_copy(tiny.net, 0), tiny.spec, tiny.classes)
    fake = explain(rnd, img, "gradcam", "patch", device="cpu").map
    f = _assess_map(tiny, img, fake, 1)
    assert f["badge"] == "unfaithful", f["summary"]
    assert "random model" in f["label"] and any("random weights" in r for r in f["failed"])


def test_untrained_models_own_gradcam_fails_the_badge(tiny):
    """Grad-CAM of a model that learned nothing (random weights) fails its own badge on every image."""
    untrained = LoadedModel(tiny.version, randomised_copy(tiny.net, 5), tiny.spec, tiny.classes)
    for seed in (21, 22, 23):
        e = explain(untrained, _positive(seed), "gradcam", "patch", device="cpu", faithfulness=True)
        assert e.faithfulness["badge"] != "faithful", e.faithfulness["summary"]
        assert e.faithfulness["failed"]


def test_head_only_randomisation_and_cached_copy(tiny):
    head = randomised_copy(tiny.net, 0, layers="head")
    trained_sd, head_sd = tiny.net.state_dict(), head.state_dict()
    changed = {k for k in trained_sd if not torch.equal(trained_sd[k], head_sd[k])}
    assert changed and all(k.startswith("head.") for k in changed)
    assert cached_randomised_copy(tiny.net, 0) is cached_randomised_copy(tiny.net, 0)
    with pytest.raises(ValueError):
        randomised_copy(tiny.net, 0, layers="middle")


# --- Grad-CAM prepared once, one forward pass ------------------------------------------------------

def test_prepared_gradcam_matches_captum_and_is_made_once(tiny):
    clone, _ = private_copy(tiny.net, "cpu")
    cam = prepared(clone)
    assert prepared(clone) is cam
    x, _ = to_tensor_with_geometry(_positive(), tiny.spec)
    x = x[None]
    ours, t, p = cam(x, 1)
    layer = clone.get_submodule(clone.target_layer_name)
    ref = LayerGradCam(lambda inp: clone(inp), layer).attribute(x, target=1, relu_attributions=True)
    ref = LayerAttribution.interpolate(ref.detach(), tuple(x.shape[-2:]), interpolate_mode="bilinear")[0, 0]
    assert torch.allclose(ours, ref, atol=1e-5 * float(ref.abs().max()) + 1e-7)
    with torch.no_grad():
        assert p == pytest.approx(float(torch.softmax(clone(x), 1)[0, 1]), abs=1e-6)
    assert t == 1 and hook_count(clone) == 0


def test_gradcam_explain_runs_one_forward_pass(tiny, monkeypatch):
    img = _positive()
    explain(tiny, img, "gradcam", device="cpu")  # make the private copy
    clone, _ = private_copy(tiny.net, "cpu")
    calls = []
    original = type(clone).forward

    def counting(x):
        calls.append(x.shape[0])
        return original(clone, x)

    monkeypatch.setattr(clone, "forward", counting)
    e = explain(tiny, img, "gradcam", device="cpu")
    assert calls == [1]  # the map, the target and its score all come from one forward pass
    with torch.no_grad():
        x, _ = to_tensor_with_geometry(img, tiny.spec)
        assert e.score == pytest.approx(float(torch.softmax(tiny.net(x[None]), 1)[0, e.target_index]), abs=1e-6)


def test_gradcam_hook_removed_when_forward_fails(tiny):
    clone, _ = private_copy(tiny.net, "cpu")
    cam = GradCam(clone)
    with pytest.raises(RuntimeError):
        cam(torch.zeros(1, 5, 64, 64))  # wrong channel count: the forward raises inside the hook's block
    assert hook_count(clone) == 0
    with pytest.raises(ModelError, match="no layer"):
        GradCam(clone, "features.99")


def test_prepared_explainer_does_not_keep_the_model_alive():
    import gc
    import weakref

    from tests.core.test_explain_synth import TinyCNN

    net = TinyCNN().eval()
    net.target_layer_name = "features"
    prepared(net)
    from core.explain.base import _scrub

    _scrub(net)
    ref = weakref.ref(net)
    del net
    gc.collect()
    assert ref() is None
