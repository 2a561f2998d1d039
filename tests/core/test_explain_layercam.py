"""core.explain.layercam: per-layer maps equal a hand computation, the fusion equals pytorch-grad-cam's LayerCAM,
default layers per architecture, clear errors, no hooks or gradients left behind."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from core.errors import ModelError
from core.explain import explain, hook_count
from core.explain.base import private_copy
from core.explain.layercam import default_layers, fuse, layer_cams
from core.models.architectures import build_model, default_input_spec
from core.models.preprocess import to_tensor
from core.models.versions import LoadedModel
from core.types import ModelVersion


def _loaded(arch, size=32, classes=("a", "b"), seed=0):
    torch.manual_seed(seed)
    net, _ = build_model(arch, len(classes), pretrained="none")
    record = ModelVersion(arch, arch, tuple(classes), "")
    return LoadedModel(record, net.eval(), default_input_spec(arch, size), classes)


class TwoConv(nn.Module):
    """conv a (1 → 2 channels) → conv b (2 → 1) → global sum → logits (s, −s): gradients by hand."""

    target_layer_name = "b"

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 2, 1, bias=False)
        self.b = nn.Conv2d(2, 1, 1, bias=False)
        with torch.no_grad():
            self.a.weight[:] = torch.tensor([1.0, -1.0]).view(2, 1, 1, 1)
            self.b.weight[:] = torch.tensor([2.0, 3.0]).view(1, 2, 1, 1)

    def forward(self, x):
        s = self.b(self.a(x)).sum(dim=(1, 2, 3))
        return torch.stack([s, -s], dim=1)


def test_per_layer_maps_equal_the_hand_computation():
    net = TwoConv().eval()
    x = torch.tensor([[1.0, -2.0], [0.5, 0.0]]).view(1, 1, 2, 2)
    maps, t, p = layer_cams(net, x, ["a", "b"], target=0)
    # Layer b: one channel B = 2·x − 3·x = −x, gradient of the summed logit 1 everywhere → ReLU(1 · −x).
    assert torch.allclose(maps[1], F.relu(-x[0, 0]))
    # Layer a: channels (x, −x) with gradients (2, 3) everywhere → ReLU(2·x + 3·(−x)) = ReLU(−x).
    assert torch.allclose(maps[0], F.relu(-x[0, 0]))
    with torch.no_grad():
        assert t == 0 and p == pytest.approx(float(torch.softmax(net(x), 1)[0, 0]))
    # Target 1 (logit −s): the gradient at b is −1 everywhere, its ReLU 0, so the map is zero.
    maps1, _, _ = layer_cams(net, x, ["b"], target=1)
    assert torch.allclose(maps1[0], torch.zeros(2, 2))
    assert hook_count(net) == 0


def test_fusion_scales_each_layer_then_averages():
    a = torch.tensor([[0.0, 2.0], [4.0, 0.0]])
    b = torch.tensor([[1.0, 1.0], [1.0, 3.0]])
    fused = fuse([a, b], (2, 2))
    expected = (a / 4 + (b - 1) / 2) / 2
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    assert torch.allclose(fused, expected)
    assert torch.equal(fuse([torch.ones(2, 2)], (2, 2)), torch.zeros(2, 2))  # a constant map shows nothing


def test_equals_pytorch_grad_cam_layercam():
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    loaded = _loaded("resnet18", 64, seed=3)
    img = np.random.default_rng(2).uniform(size=(64, 64, 3)).astype(np.float32)
    layers = ["backbone.layer2", "backbone.layer3", "backbone.layer4"]
    e = explain(loaded, img, "layercam", 1, device="cpu", layers=",".join(layers))

    ref_net = private_copy(loaded.net, "cpu")[0]
    for p in ref_net.parameters():
        p.requires_grad_(True)
    try:
        cam = pgc.LayerCAM(model=ref_net, target_layers=[ref_net.get_submodule(n) for n in layers])
        ref = cam(input_tensor=to_tensor(img, loaded.spec)[None], targets=[ClassifierOutputTarget(1)])[0]
        cam.activations_and_grads.release()
    finally:
        for p in ref_net.parameters():
            p.requires_grad_(False)
            p.grad = None
    assert e.params["layers"] == ",".join(layers) and e.target_index == 1
    assert np.abs(e.map - ref).max() < 1e-3
    assert hook_count(ref_net) == 0


@pytest.mark.parametrize("arch,layers", [
    ("resnet18", ["backbone.layer1", "backbone.layer2", "backbone.layer3", "backbone.layer4"]),
    ("efficientnet_lite0", [f"backbone.features.{i}" for i in (5, 6, 7, 8)]),
])
def test_default_layers_per_architecture(arch, layers):
    loaded = _loaded(arch, 64)
    assert default_layers(loaded.net) == layers
    img = np.random.default_rng(1).uniform(size=(48, 64, 3)).astype(np.float32)
    e = explain(loaded, img, "layercam", device="cpu")
    assert e.params["layers"] == ",".join(layers) and e.map.shape == (48, 64) and e.signed is None
    assert 0.0 <= e.map.min() and e.map.max() <= 1.0 and e.map.max() > 0.5
    with torch.no_grad():
        probs = torch.softmax(loaded.net(to_tensor(img, loaded.spec)[None]), 1)[0]
    assert e.score == pytest.approx(float(probs[e.target_index]), abs=1e-5)
    clone = private_copy(loaded.net, "cpu")[0]
    assert hook_count(clone) == 0 and all(p.grad is None for p in clone.parameters())
    assert hook_count(loaded.net) == 0


def test_bad_layers_are_clear_errors_and_leave_no_hooks():
    loaded = _loaded("resnet18", 32)
    img = np.random.default_rng(0).uniform(size=(32, 32, 3)).astype(np.float32)
    with pytest.raises(ModelError, match="no layer 'backbone.layer9'"):
        explain(loaded, img, "layercam", device="cpu", layers="backbone.layer4,backbone.layer9")
    with pytest.raises(ModelError, match="2-D feature maps"):
        explain(loaded, img, "layercam", device="cpu", layers="backbone.fc")
    clone = private_copy(loaded.net, "cpu")[0]
    assert hook_count(clone) == 0


def test_points_at_the_deciding_patch_and_the_badge_runs():
    from core.explain.sanity import randomised_copy
    from tests.core.test_explain_pointing import _pointing
    from tests.core.test_explain_synth import make_images, train_tiny

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tiny = train_tiny()
        assert _pointing(tiny, "layercam") >= 0.9
        assert _pointing(tiny, "layercam", tuple(randomised_copy(tiny.net, s) for s in range(3))) < 0.9
        img = make_images(1, 5, positive_fraction=1.0)[0][0]
        e = explain(tiny, img, "layercam", "patch", device="cpu", faithfulness=True)
        f = e.faithfulness
        assert f["insertion_auc"] > f["deletion_auc"] and "randomisation" in f and f["badge"]
    finally:
        torch.set_num_threads(before)
