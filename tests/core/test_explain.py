"""core.explain: protocol, safety (hooks, gradients, private copy), cancel, targets, cache, faithfulness."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.errors import Cancelled, ModelError
from core.explain import METHOD_NAMES, explain, explain_findings, hook_count
from core.explain.base import private_copy
from core.explain.faithfulness import deletion_insertion
from core.explain.sanity import model_randomisation, spearman
from core.models.architectures import build_model, default_input_spec
from core.models.versions import LoadedModel
from core.progress import CancelToken
from core.types import ModelVersion
from tests.core.test_explain_synth import H, W, make_images, train_tiny

FAST = {"lime": {"n_samples": 32}, "ig": {"n_steps": 8}, "gradshap": {"n_samples": 8},
        "occlusion": {"window": 16, "stride": 16}}


@pytest.fixture(scope="module")
def tiny():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield train_tiny()
    torch.set_num_threads(before)


def _loaded(arch, size=32, classes=("a", "b")):
    net, _ = build_model(arch, len(classes), pretrained="none")
    return LoadedModel(ModelVersion(arch, arch, tuple(classes), ""), net, default_input_spec(arch, size), classes)


def _no_hooks_no_grads(net):
    assert hook_count(net) == 0
    assert all(p.grad is None for p in net.parameters())


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_no_hooks_or_gradients_left_behind(tiny, method):
    img = make_images(1, 5, positive_fraction=1.0)[0][0]
    shared = tiny.net
    requires = [p.requires_grad for p in shared.parameters()]
    e = explain(tiny, img, method, device="cpu", faithfulness=True, **FAST.get(method, {}))
    copy, _ = private_copy(shared, "cpu")
    assert copy is not shared
    _no_hooks_no_grads(shared)
    _no_hooks_no_grads(copy)
    assert not copy.training and not shared.training
    assert [p.requires_grad for p in shared.parameters()] == requires  # the shared net is untouched
    assert e.shape == (H, W) and set(e.faithfulness) >= {"deletion_auc", "insertion_auc", "badge"}
    assert (e.signed is None) == (method == "gradcam")


def test_hooks_removed_even_when_cancelled(tiny):
    img = make_images(1, 5)[0][0]
    token = CancelToken()
    token.cancel()
    for method in METHOD_NAMES:
        with pytest.raises(Cancelled):
            explain(tiny, img, method, device="cpu", cancel=token, **FAST.get(method, {}))
    _no_hooks_no_grads(private_copy(tiny.net, "cpu")[0])


def test_cancel_between_batches(tiny):
    img = make_images(1, 5)[0][0]
    token, seen = CancelToken(), []

    def progress(p):
        seen.append(p.done)
        if p.done == 2:
            token.cancel()

    with pytest.raises(Cancelled):
        explain(tiny, img, "lime", device="cpu", n_samples=64, batch_size=8, cancel=token, progress=progress)
    assert seen[-1] == 2  # stopped at the next batch, not at the end (8 batches)


def test_targets_and_predicted_default(tiny):
    imgs, labels, _ = make_images(4, 7, positive_fraction=1.0)
    e = explain(tiny, imgs[0], "gradcam", device="cpu")
    assert e.target == "patch" and e.target_index == 1 and e.score > 0.5
    e0 = explain(tiny, imgs[0], "occlusion", "none", device="cpu", **FAST["occlusion"])
    assert e0.target == "none" and e0.target_index == 0
    e1 = explain(tiny, imgs[0], "occlusion", 1, device="cpu", **FAST["occlusion"])
    assert np.allclose(e1.signed, -e0.signed, atol=0.35) or spearman(e1.signed, -e0.signed) > 0.5
    with pytest.raises(ModelError, match="no class"):
        explain(tiny, imgs[0], "gradcam", "cat", device="cpu")
    with pytest.raises(ModelError, match="unknown explanation method"):
        explain(tiny, imgs[0], "saliency", device="cpu")
    with pytest.raises(ModelError, match="no parameter"):
        explain(tiny, imgs[0], "gradcam", device="cpu", n_samples=3)


def test_geometry_is_undone():
    # A 3-row image of a wide scene: the map must come back (3*k, W) whatever the model size.
    loaded = _loaded("resnet18", 32)
    img = np.random.default_rng(0).uniform(size=(30, 90)).astype(np.float32)
    e = explain(loaded, img, "gradcam", device="cpu")
    assert e.map.shape == (30, 90) and e.params["layer"] == "backbone.layer4"


@pytest.mark.parametrize("arch,layer", [("densenet121", "backbone.features.norm5"),
                                        ("mobilenet_v3_large", "backbone.features.16"),
                                        ("efficientnet_lite0", "backbone.features.8")])
def test_default_layers_per_architecture(arch, layer):
    loaded = _loaded(arch, 64)
    img = np.random.default_rng(1).uniform(size=(64, 64, 3)).astype(np.float32)
    e = explain(loaded, img, "gradcam", device="cpu")
    assert e.params["layer"] == layer and e.map.shape == (64, 64)
    e2 = explain(loaded, img, "gradcam", device="cpu", layer="backbone.features.4" if arch != "densenet121"
                 else "backbone.features.denseblock3")
    assert e2.params["layer"] != layer
    _no_hooks_no_grads(loaded.net)
    _no_hooks_no_grads(private_copy(loaded.net, "cpu")[0])


def test_multilabel_per_finding():
    torch.manual_seed(0)
    net, _ = build_model("resnet18", 3, pretrained="none", head="multilabel")
    loaded = LoadedModel(ModelVersion("m", "resnet18", ("x", "y", "z"), ""), net, default_input_spec("resnet18", 32),
                         ("x", "y", "z"))
    img = np.random.default_rng(2).uniform(size=(32, 32)).astype(np.float32)
    maps = explain_findings(loaded, img, "gradcam", device="cpu", faithfulness=True)
    assert set(maps) == {"x", "y", "z"} and all(0 <= e.score <= 1 for e in maps.values())


def test_faithfulness_orders_good_and_bad_maps(tiny):
    imgs, _, boxes = make_images(6, 11, positive_fraction=1.0)
    from core.models.preprocess import to_tensor_with_geometry

    gaps = []
    for a, b in zip(imgs, boxes):
        x, geo = to_tensor_with_geometry(a, tiny.spec)
        good = np.zeros((64, 64), np.float32)
        top = geo.pad[0]
        good[b[0] + top:b[2] + top, b[1]:b[3]] = 1.0
        f_good = deletion_insertion(tiny.net, x[None], good, 1)
        f_bad = deletion_insertion(tiny.net, x[None], 1.0 - good, 1)
        gaps.append((f_good["insertion_auc"] - f_good["deletion_auc"]) -
                    (f_bad["insertion_auc"] - f_bad["deletion_auc"]))
    assert np.mean(gaps) > 0.2


def test_sanity_check_passes_on_trained_model(tiny):
    img = make_images(1, 13, positive_fraction=1.0)[0][0]
    result = model_randomisation(tiny, img, "gradcam", "patch", device="cpu")
    assert result["passed"] and result["spearman"] < 0.5
    assert result["randomised_map"].shape == (H, W)
