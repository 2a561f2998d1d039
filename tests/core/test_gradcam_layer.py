"""Grad-CAM's default layer per architecture family (core.explain.gradcam.default_layer).

EfficientNets explain at a stride-16 block (chosen on HAM10000 validation lesions by
bench/explain_real.py --choose); every other family keeps its architecture's target layer; a layer named
by the caller always wins; pytorch-grad-cam on the same layer gives the same map.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from core.explain import explain
from core.explain.base import private_copy
from core.explain.gradcam import FAMILY_LAYERS, GradCam, default_layer
from core.models.architectures import build_model, default_input_spec
from core.models.versions import LoadedModel
from core.types import ModelVersion

EFFICIENTNET_LAYER = "backbone.features.5"


def _loaded(arch: str, size: int = 64) -> LoadedModel:
    torch.manual_seed(0)
    net, _ = build_model(arch, 2, pretrained="none")
    return LoadedModel(ModelVersion(arch, arch, ("a", "b"), ""), net.eval(), default_input_spec(arch, size), ("a", "b"))


def _image(size: int = 64) -> np.ndarray:
    return np.random.default_rng(0).uniform(size=(size, size, 3)).astype(np.float32)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_efficientnet_family_uses_the_stride_16_block():
    assert FAMILY_LAYERS["efficientnet"] == EFFICIENTNET_LAYER
    loaded = _loaded("efficientnet_lite0")
    assert loaded.net.target_layer_name == "backbone.features.8"  # the architecture's own layer is unchanged
    assert default_layer(loaded.net) == EFFICIENTNET_LAYER
    e = explain(loaded, _image(), "gradcam", device="cpu")
    assert e.params["layer"] == EFFICIENTNET_LAYER and e.map.shape == (64, 64)
    # 64 px input: the stride-16 block gives a 4 x 4 map, the last block (stride 32) 2 x 2
    clone, _ = private_copy(loaded.net, "cpu")
    x = torch.from_numpy(_image()).permute(2, 0, 1)[None]
    cam, _, _ = GradCam(clone).model_map(x, 0)
    assert tuple(cam.shape) == (4, 4)
    cam8, _, _ = GradCam(clone, "backbone.features.8").model_map(x, 0)
    assert tuple(cam8.shape) == (2, 2)


def test_a_named_layer_wins_and_other_families_keep_theirs():
    loaded = _loaded("efficientnet_lite0")
    e = explain(loaded, _image(), "gradcam", device="cpu", layer="backbone.features.8")
    assert e.params["layer"] == "backbone.features.8"
    assert default_layer(_loaded("resnet18").net) == "backbone.layer4"
    assert default_layer(_loaded("mobilenet_v3_large").net) == "backbone.features.16"


def test_a_network_without_the_family_layer_falls_back(monkeypatch):
    loaded = _loaded("efficientnet_lite0")
    monkeypatch.setitem(FAMILY_LAYERS, "efficientnet", "backbone.features.99")
    assert default_layer(loaded.net) == "backbone.features.8"


def test_pytorch_grad_cam_on_the_same_layer_gives_the_same_map():
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    loaded = _loaded("efficientnet_lite0", 96)
    clone, _ = private_copy(loaded.net, "cpu")
    x = torch.from_numpy(np.random.default_rng(3).normal(size=(3, 96, 96)).astype(np.float32))[None]
    ours, t, _ = GradCam(clone)(x, 1)
    ref_net = copy.deepcopy(loaded.net).eval()
    ref = pgc.GradCAM(model=ref_net, target_layers=[ref_net.get_submodule(default_layer(ref_net))])(
        input_tensor=x, targets=[ClassifierOutputTarget(1)])[0]
    ours = ours.numpy()
    assert ours.max() > ours.min()
    ours = (ours - ours.min()) / (ours.max() - ours.min())  # pytorch-grad-cam scales each map to [0, 1]
    assert np.corrcoef(ours.ravel(), ref.ravel())[0, 1] > 0.99
