"""Model architectures: a registry of torchvision backbones behind one wrapper, :class:`LoupeNet`.

Every model is ``backbone`` (a torchvision network with its classifier removed,
so its state-dict keys are torchvision's and its output is the pooled
embedding) + ``head`` (dropout + linear to the classes) + an optional ordinal
``severity_head`` (CORAL: one shared weight vector, K-1 ordered biases).

``forward`` returns class logits only, so captum and Grad-CAM can use the
model as is; :meth:`LoupeNet.forward_all` also returns the embedding and the
severity logits. Backbones are split into about five *stages* (stem, then one
stage per feature-map resolution) for discriminative learning rates and
gradual unfreezing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torchvision.models as tvm
from torchvision.ops.misc import SqueezeExcitation

from core.errors import ModelError
from core.models import weights as _weights
from core.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, InputSpec

logger = logging.getLogger(__name__)

HEADS = ("multiclass", "multilabel")
TRAIN_MODES = ("frozen", "finetune", "gradual")
DEFAULT_ARCH = "resnet50"


def _to_lite(model: nn.Module) -> nn.Module:
    """EfficientNet-B0 → Lite0: squeeze-excitation removed, SiLU → ReLU6, BatchNorm eps 1e-3 (in place)."""
    for name, child in model.named_children():
        if isinstance(child, SqueezeExcitation):
            setattr(model, name, nn.Identity())
        elif isinstance(child, nn.SiLU):
            setattr(model, name, nn.ReLU6(inplace=True))
        else:
            if isinstance(child, nn.BatchNorm2d):
                child.eps = 1e-3
            _to_lite(child)
    return model


def _efficientnet_lite0() -> nn.Module:
    return _to_lite(tvm.efficientnet_b0(weights=None))


def _efficientnet_lite(width: float, depth: float) -> Callable[[], nn.Module]:
    """EfficientNet-Lite1/2 as the TF reference builds them: B-series widths and depths, but the stem (32),
    the head (1280) and the repeats of the first and last stages are not scaled; no SE, ReLU6."""
    from functools import partial

    from torchvision.models.efficientnet import EfficientNet, MBConvConfig

    def factory() -> nn.Module:
        conf = partial(MBConvConfig, width_mult=width, depth_mult=depth)
        setting = [conf(1, 3, 1, 32, 16, 1), conf(6, 3, 2, 16, 24, 2), conf(6, 5, 2, 24, 40, 2),
                   conf(6, 3, 2, 40, 80, 3), conf(6, 5, 1, 80, 112, 3), conf(6, 5, 2, 112, 192, 4),
                   conf(6, 3, 1, 192, 320, 1)]
        setting[0].num_layers = setting[-1].num_layers = 1
        return _to_lite(EfficientNet(setting, dropout=0.2, last_channel=1280))

    return factory


def _strip_classifier(full: nn.Module, family: str) -> nn.Module:
    """Turn a full torchvision model into a backbone whose forward returns the pooled embedding."""
    if family == "resnet":
        full.fc = nn.Identity()
    elif family == "mobilenet_v3":
        # Keep the pretrained 960→1280 pre-logit layer; drop dropout and the ImageNet classifier.
        full.classifier = nn.Sequential(full.classifier[0], full.classifier[1])
    else:  # densenet (keeps its relu after norm5 in forward), efficientnet, mobilenet_v2
        full.classifier = nn.Identity()
    return full


def _f(*idx: int) -> tuple[str, ...]:
    return tuple(f"features.{i}" for i in idx)


_RESNET_STAGES = (("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",))
_DENSENET_STAGES = (
    ("features.conv0", "features.norm0"),
    ("features.denseblock1", "features.transition1"),
    ("features.denseblock2", "features.transition2"),
    ("features.denseblock3", "features.transition3"),
    ("features.denseblock4", "features.norm5"),
)
_EFFICIENTNET_STAGES = (_f(0), _f(1, 2), _f(3), _f(4, 5), _f(6, 7, 8))
_MOBILENET_V2_STAGES = (_f(0, 1), _f(2, 3), _f(4, 5, 6), _f(*range(7, 14)), _f(*range(14, 19)))
_MOBILENET_V3_STAGES = (_f(0, 1), _f(2, 3), _f(4, 5, 6), _f(*range(7, 13)), _f(13, 14, 15, 16) + ("classifier",))


@dataclass(frozen=True)
class ArchSpec:
    """One registry entry.

    Attributes:
        name: registry key.
        family: resnet, densenet, efficientnet, mobilenet_v2 or mobilenet_v3.
        factory: builds the full torchvision model (ImageNet classifier included), random init.
        embedding_dim: size of the pooled embedding the backbone outputs.
        stages: backbone submodule names per stage, earliest first.
        target_layer: backbone submodule for Grad-CAM (4-D activations).
        mean, std: input normalisation the pretrained weights expect.
        offline_weights: True when ImageNet weights ship with an installed package.
        native_size: the input size the pretrained weights were trained at.
        lite_top1: ImageNet top-1 (%) the bundled weights' authors report (torchvision archs read theirs
            from the weights' metadata instead).
    """

    name: str
    family: str
    factory: Callable[[], nn.Module]
    embedding_dim: int
    stages: tuple[tuple[str, ...], ...]
    target_layer: str
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    offline_weights: bool = False
    native_size: int = 224
    lite_top1: float | None = None


ARCHITECTURES: dict[str, ArchSpec] = {
    s.name: s
    for s in (
        ArchSpec("resnet50", "resnet", lambda: tvm.resnet50(weights=None), 2048, _RESNET_STAGES, "layer4"),
        ArchSpec("resnet18", "resnet", lambda: tvm.resnet18(weights=None), 512, _RESNET_STAGES, "layer4"),
        ArchSpec("densenet121", "densenet", lambda: tvm.densenet121(weights=None), 1024, _DENSENET_STAGES,
                 "features.norm5"),
        ArchSpec("efficientnet_b0", "efficientnet", lambda: tvm.efficientnet_b0(weights=None), 1280,
                 _EFFICIENTNET_STAGES, "features.8"),
        ArchSpec("efficientnet_b3", "efficientnet", lambda: tvm.efficientnet_b3(weights=None), 1536,
                 _EFFICIENTNET_STAGES, "features.8"),
        ArchSpec("mobilenet_v2", "mobilenet_v2", lambda: tvm.mobilenet_v2(weights=None), 1280,
                 _MOBILENET_V2_STAGES, "features.18"),
        ArchSpec("mobilenet_v3_large", "mobilenet_v3", lambda: tvm.mobilenet_v3_large(weights=None), 1280,
                 _MOBILENET_V3_STAGES, "features.16"),
        # The TF EfficientNet-Lite weights were trained on (x - 0.5) / 0.5 inputs.
        ArchSpec("efficientnet_lite0", "efficientnet", _efficientnet_lite0, 1280, _EFFICIENTNET_STAGES,
                 "features.8", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), offline_weights=True, lite_top1=75.1),
        ArchSpec("efficientnet_lite1", "efficientnet", _efficientnet_lite(1.0, 1.1), 1280, _EFFICIENTNET_STAGES,
                 "features.8", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), offline_weights=True, native_size=240,
                 lite_top1=76.7),
        ArchSpec("efficientnet_lite2", "efficientnet", _efficientnet_lite(1.1, 1.2), 1280, _EFFICIENTNET_STAGES,
                 "features.8", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), offline_weights=True, native_size=260,
                 lite_top1=77.6),
    )
}


def arch_spec(arch: str) -> ArchSpec:
    """Registry entry for ``arch``; ModelError listing the choices when unknown."""
    try:
        return ARCHITECTURES[arch]
    except KeyError:
        raise ModelError(f"Unknown architecture {arch!r}; choose one of: {', '.join(ARCHITECTURES)}.") from None


def imagenet_top1(arch: str, weights_file: str | Path | None = None) -> float | None:
    """ImageNet top-1 accuracy (%) of ``arch``'s pretrained weights: torchvision's metadata for the exact
    cached file (or its DEFAULT weights), the authors' figure for the EfficientNet-Lite packages."""
    spec = arch_spec(arch)
    if spec.lite_top1 is not None:
        return spec.lite_top1
    enum_name = _weights.TORCHVISION_WEIGHTS.get(arch)
    if enum_name is None:
        return None
    enum = getattr(tvm, enum_name)
    chosen = enum.DEFAULT
    if weights_file is not None:
        name = Path(weights_file).name
        chosen = next((w for w in enum if w.url.rsplit("/", 1)[-1] == name), enum.DEFAULT)
    return float(chosen.meta["_metrics"]["ImageNet-1K"]["acc@1"])


def backbone_choices(torch_cache_dir: str | Path | None) -> list[dict]:
    """Every backbone with where its weights would come from on this machine, strongest available first.

    Each entry: ``{"arch", "kind", "detail", "text", "top1", "native_size", "available"}`` (see
    :func:`core.models.weights.weights_source`); ``available`` is True when ImageNet weights are on this
    machine. Sorted by (available, ImageNet top-1) descending, so the first entry is the default.
    """
    rows = []
    for name, spec in ARCHITECTURES.items():
        source = _weights.weights_source(name, torch_cache_dir)
        available = source["kind"] != "none"
        top1 = imagenet_top1(name, source["detail"] if source["kind"] == "torch cache" else None)
        rows.append(dict(source, top1=top1, native_size=spec.native_size, available=available))
    rows.sort(key=lambda r: (r["available"], r["top1"] or 0.0), reverse=True)
    return rows


def strongest_available_arch(torch_cache_dir: str | Path | None) -> tuple[str, dict]:
    """The backbone with the best ImageNet top-1 among those whose pretrained weights are on this machine.

    Returns ``(arch, choice)`` with ``choice`` as in :func:`backbone_choices`. When no weights at all are
    present the first entry is still returned (its ``available`` is False: it would start from random init).
    """
    first = backbone_choices(torch_cache_dir)[0]
    return first["arch"], first


def default_input_spec(arch: str, size: int = 224) -> InputSpec:
    """The :class:`InputSpec` matching ``arch``'s pretrained normalisation, at ``size`` pixels."""
    spec = arch_spec(arch)
    return InputSpec(size=size, mean=spec.mean, std=spec.std)


class OrdinalHead(nn.Module):
    """CORAL ordinal head: ``K - 1`` logits ``w·x + b_k`` sharing one weight vector.

    ``sigmoid(logit_k)`` estimates P(severity > k); biases start in decreasing
    order so the thresholds are rank-consistent from the first step.
    """

    def __init__(self, in_features: int, levels: int) -> None:
        super().__init__()
        self.levels = levels
        self.fc = nn.Linear(in_features, 1, bias=False)
        self.bias = nn.Parameter(torch.arange(levels - 1, 0, -1, dtype=torch.float32) / (levels - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_features) → (N, levels - 1) logits."""
        return self.fc(x) + self.bias


def severity_from_logits(severity_logits: torch.Tensor) -> torch.Tensor:
    """Predicted severity level 0..K-1 per row: the number of thresholds passed (P > 0.5)."""
    return (severity_logits > 0).sum(dim=1)


def ordinal_targets(levels: torch.Tensor, num_levels: int) -> torch.Tensor:
    """CORAL training targets: (N,) levels → (N, num_levels - 1) floats, ``t[i, k] = levels[i] > k``."""
    ks = torch.arange(num_levels - 1, device=levels.device)
    return (levels.view(-1, 1) > ks).float()


class LoupeNet(nn.Module):
    """Backbone + classification head (+ optional ordinal severity head).

    Attributes:
        arch: registry name.
        backbone: torchvision network without classifier; ``backbone(x)`` → (N, embedding_dim).
        head: ``Sequential(Dropout, Linear(embedding_dim, num_classes))``.
        severity_head: :class:`OrdinalHead` or None.
        head_type: ``"multiclass"`` (softmax) or ``"multilabel"`` (sigmoid per class).
        embedding_dim, num_classes, severity_levels, dropout.
        target_layer_name: dotted name (``model.get_submodule``) of the Grad-CAM layer.
        stages: per backbone stage, the dotted submodule names (``backbone.…``).
    """

    def __init__(self, spec: ArchSpec, backbone: nn.Module, num_classes: int, head: str,
                 severity_levels: int, dropout: float) -> None:
        super().__init__()
        self.arch = spec.name
        self.backbone = backbone
        self.embedding_dim = spec.embedding_dim
        self.num_classes = num_classes
        self.head_type = head
        self.severity_levels = severity_levels
        self.dropout = dropout
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(spec.embedding_dim, num_classes))
        self.severity_head = OrdinalHead(spec.embedding_dim, severity_levels) if severity_levels else None
        self.target_layer_name = f"backbone.{spec.target_layer}"
        self.stages = tuple(tuple(f"backbone.{n}" for n in stage) for stage in spec.stages)

    @property
    def config(self) -> dict:
        """Keyword arguments that rebuild this architecture with :func:`build_model`."""
        return {"arch": self.arch, "num_classes": self.num_classes, "head": self.head_type,
                "severity_levels": self.severity_levels, "dropout": self.dropout}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) → pooled embedding (N, embedding_dim)."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) → class logits (N, num_classes). Only logits, for captum / Grad-CAM."""
        return self.head(self.backbone(x))

    def forward_all(self, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """Logits, embedding and severity logits ((N, K-1), or None without a severity head) in one pass."""
        emb = self.backbone(x)
        sev = self.severity_head(emb) if self.severity_head is not None else None
        return {"logits": self.head(emb), "embedding": emb, "severity_logits": sev}

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Softmax (multiclass) or per-class sigmoid (multilabel) of ``logits``."""
        return torch.sigmoid(logits) if self.head_type == "multilabel" else torch.softmax(logits, dim=1)

    def train(self, mode: bool = True) -> "LoupeNet":
        """Like :meth:`nn.Module.train`, but BatchNorm layers whose weights are frozen stay in eval
        mode, so a frozen backbone's running statistics never drift on a small dataset."""
        super().train(mode)
        if mode:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    params = list(m.parameters(recurse=False))
                    if params and not any(p.requires_grad for p in params):
                        m.eval()
        return self


def build_model(
    arch: str = DEFAULT_ARCH,
    num_classes: int = 2,
    pretrained: str | Path = "none",
    torch_cache_dir: str | Path | None = None,
    head: str = "multiclass",
    severity_levels: int = 0,
    dropout: float = 0.2,
) -> tuple[LoupeNet, str]:
    """Build a :class:`LoupeNet` and load its backbone weights. Never downloads anything.

    Args:
        arch: a key of :data:`ARCHITECTURES`.
        num_classes: classes of the head (at least 2 for multiclass, 1 for multilabel).
        pretrained: ``"none"`` (random init), ``"default"`` (offline ImageNet weights:
            torch cache, then the Lite0 weights package) or a path to a local state dict.
        torch_cache_dir: torch hub dir to find cached torchvision weights in; the caller
            passes it (see :func:`core.models.weights.default_torch_cache_dir`).
        head: ``"multiclass"`` or ``"multilabel"``.
        severity_levels: 0 for no severity head, else K ≥ 2 ordinal levels (K-1 logits).
        dropout: dropout probability before the class head.

    Returns:
        ``(model, description)``; the model is in eval mode, the description says
        which weights were used.

    Raises:
        ModelError: unknown arch, bad option, or weights that are unavailable or unreadable.
    """
    spec = arch_spec(arch)
    if head not in HEADS:
        raise ModelError(f"Unknown head {head!r}; use multiclass or multilabel.")
    min_classes = 2 if head == "multiclass" else 1
    if int(num_classes) < min_classes:
        raise ModelError(f"A {head} model needs at least {min_classes} classes, got {num_classes}.")
    if severity_levels == 1 or severity_levels < 0:
        raise ModelError(f"severity_levels must be 0 (no severity head) or at least 2, got {severity_levels}.")
    if not 0.0 <= dropout < 1.0:
        raise ModelError(f"dropout must be in [0, 1), got {dropout}.")
    backbone = _strip_classifier(spec.factory(), spec.family)
    description = _weights.load_pretrained(backbone, arch, pretrained, torch_cache_dir, spec.factory)
    model = LoupeNet(spec, backbone, int(num_classes), head, int(severity_levels), float(dropout))
    model.eval()
    logger.info("built %s (%d classes, %s head) with weights: %s", arch, num_classes, head, description)
    return model, description


def get_target_layer(model: LoupeNet) -> nn.Module:
    """The module whose 4-D activations Grad-CAM uses (``model.target_layer_name``)."""
    return model.get_submodule(model.target_layer_name)


def _stage_of(model: LoupeNet) -> dict[str, int]:
    """Backbone parameter name → stage index; parameters outside every stage go to the last."""
    out = {}
    last = len(model.stages) - 1
    for name, _ in model.backbone.named_parameters():
        full = f"backbone.{name}"
        out[full] = next(
            (i for i, stage in enumerate(model.stages) if any(full == p or full.startswith(p + ".") for p in stage)),
            last,
        )
    return out


def _head_params(model: LoupeNet) -> list[nn.Parameter]:
    params = list(model.head.parameters())
    if model.severity_head is not None:
        params += list(model.severity_head.parameters())
    return params


def freeze_backbone(model: LoupeNet, frozen: bool = True) -> None:
    """Set ``requires_grad`` of every backbone parameter to ``not frozen``; the heads stay trainable."""
    for p in model.backbone.parameters():
        p.requires_grad_(not frozen)
    for p in _head_params(model):
        p.requires_grad_(True)
    model.train(model.training)  # re-apply the frozen-BatchNorm rule


def unfreeze_stage(model: LoupeNet, k: int) -> list[int]:
    """Make the last ``k`` backbone stages trainable and freeze the others (gradual unfreezing).

    ``k = 0`` freezes the whole backbone; ``k >= len(model.stages)`` unfreezes it all.

    Returns:
        Indices of the trainable stages.
    """
    n = len(model.stages)
    first = n - max(0, min(int(k), n))
    stage_of = _stage_of(model)
    params = dict(model.named_parameters())
    for name, i in stage_of.items():
        params[name].requires_grad_(i >= first)
    for p in _head_params(model):
        p.requires_grad_(True)
    model.train(model.training)
    return list(range(first, n))


def param_groups(model: LoupeNet, base_lr: float, mode: str = "finetune", decay: float = 0.1) -> list[dict]:
    """Optimizer parameter groups (each with ``params``, ``lr`` and ``name``) for a training mode.

    - ``"frozen"``: freezes the backbone; one group with the heads at ``base_lr``.
    - ``"finetune"``: everything trainable at ``base_lr`` (groups ``backbone`` and ``head``).
    - ``"gradual"``: everything trainable, discriminative rates: backbone stage ``i`` of ``n``
      (0 = stem) gets ``base_lr * decay ** ((n - i) / n)``, so the stem learns at
      ``base_lr * decay`` and later stages progressively faster; heads at ``base_lr``.
      Every stage has its own group, so :func:`unfreeze_stage` can later freeze and
      release stages without rebuilding the optimizer.

    Raises:
        ModelError: unknown mode.
    """
    if mode not in TRAIN_MODES:
        raise ModelError(f"Unknown training mode {mode!r}; use one of {', '.join(TRAIN_MODES)}.")
    heads = {"name": "head", "params": _head_params(model), "lr": base_lr}
    if mode == "frozen":
        freeze_backbone(model, True)
        return [heads]
    freeze_backbone(model, False)
    if mode == "finetune":
        return [{"name": "backbone", "params": list(model.backbone.parameters()), "lr": base_lr}, heads]
    n = len(model.stages)
    stage_of = _stage_of(model)
    params = dict(model.named_parameters())
    groups = []
    for i in range(n):
        ps = [params[name] for name, s in stage_of.items() if s == i]
        if ps:
            groups.append({"name": f"backbone.stage{i}", "params": ps, "lr": base_lr * decay ** ((n - i) / n)})
    return groups + [heads]
