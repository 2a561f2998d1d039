"""LayerCAM (Jiang et al., 2021): class activation maps from several layers, fused, in one forward pass.

Grad-CAM weighs each channel of one late layer by its spatially averaged
gradient, so its map has that layer's resolution (7 × 7 for a 224-px
EfficientNet) and a channel that is positive in one place and negative in
another is cancelled out everywhere. LayerCAM weighs every position by its own
positive gradient, ``ReLU(Σ_c ReLU(∂y/∂A_c) · A_c)``, which stays meaningful in
shallower, finer layers; the maps of several layers are each scaled to [0, 1],
upsampled to the input and averaged (the fusion of pytorch-grad-cam's
``LayerCAM`` with several target layers, which this module reproduces).

``layers``: comma-separated dotted module names; default: the architecture's
Grad-CAM layer (``LoupeNet.target_layer_name``) and the three stages before it
(EfficientNet ``features.5``–``features.8``, ResNet ``layer1``–``layer4``).
One forward pass with a hook on each named layer (all removed in a ``finally``),
one backward from the target logit to the named layers only: the shallowest
named layer's activation is detached and made the root of the graph, so nothing
before it is differentiated (the private copy's parameters are frozen).
"""

from __future__ import annotations

import logging
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.errors import ModelError
from core.explain.base import ExplainContext, Method, register
from core.explain.gradcam import upsample

logger = logging.getLogger(__name__)

#: How many feature stages, ending at the architecture's Grad-CAM layer, the default fuses.
DEFAULT_STAGES = 4


def _defaults(size: int) -> dict:
    return {"layers": None}


def default_layers(net: nn.Module, stages: int = DEFAULT_STAGES) -> list[str]:
    """The architecture's Grad-CAM layer and the ``stages - 1`` modules before it in the same parent.

    Raises:
        ModelError: the network names no Grad-CAM layer.
    """
    target = getattr(net, "target_layer_name", None)
    if not target:
        raise ModelError("this model names no Grad-CAM layer; pass layers=<dotted module names, comma-separated>")
    parent_name, _, last = target.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    names = [n for n, _ in parent.named_children()]
    if last not in names:
        return [target]
    i = names.index(last)
    return [f"{parent_name}.{n}" if parent_name else n for n in names[max(0, i - stages + 1):i + 1]]


def parse_layers(net: nn.Module, layers) -> list[str]:
    """``layers`` (None, a comma-separated string or a list of dotted names) → checked list of names.

    Raises:
        ModelError: a name that is not a submodule of ``net``, or an empty list.
    """
    if layers is None or (isinstance(layers, str) and not layers.strip()):
        return default_layers(net)
    names = [s.strip() for s in layers.split(",")] if isinstance(layers, str) else [str(s).strip() for s in layers]
    names = [n for n in names if n]
    if not names:
        raise ModelError("LayerCAM needs at least one layer")
    for n in names:
        try:
            net.get_submodule(n)
        except AttributeError:
            raise ModelError(f"the model has no layer {n!r} for LayerCAM") from None
    return list(dict.fromkeys(names))


def _scale(cam: torch.Tensor) -> torch.Tensor:
    """Min-max scale to [0, 1] (an all-constant map becomes 0)."""
    cam = cam - cam.min()
    top = cam.max()
    return cam / top if top > 0 else torch.zeros_like(cam)


def layer_cams(net: nn.Module, x: torch.Tensor, layers: list[str], target: Optional[int] = None, forward=None,
               multilabel: bool = False) -> tuple[list[torch.Tensor], int, float]:
    """Per-layer LayerCAM maps (at each layer's own resolution, ReLU'd, not scaled) for one input.

    Args:
        net: the network (eval mode, frozen parameters).
        x: (1, C, S, S) model input.
        layers: dotted submodule names (checked by :func:`parse_layers`).
        target: class index; None = the predicted class (from the same forward pass).
        forward: callable used instead of ``net`` (e.g. one that checks a cancel token).
        multilabel: sigmoid scores instead of softmax.

    Returns:
        (maps in the order of ``layers``, target, the model's probability for it).
    """
    store: dict[str, torch.Tensor] = {}

    def hook_for(name: str):
        def hook(_module, _inputs, output):
            if name in store:  # a module called twice: the first call counts
                return None
            if not isinstance(output, torch.Tensor) or output.dim() != 4:
                raise ModelError(f"layer {name!r} does not give 2-D feature maps; choose a convolutional layer")
            if not store:  # the shallowest named layer: the root of the graph, nothing before it is differentiated
                output = output.detach().requires_grad_(True)
            store[name] = output
            # A clone, so an in-place operation after the layer leaves the stored activation intact.
            return output.clone()
        return hook

    handles = [net.get_submodule(n).register_forward_hook(hook_for(n)) for n in layers]
    try:
        with torch.enable_grad():
            logits = (forward or net)(x)
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in layers if n not in store]
    if missing:
        raise ModelError(f"layer(s) {', '.join(missing)} were not used by the forward pass")
    with torch.no_grad():
        probs = torch.sigmoid(logits[0]) if multilabel else torch.softmax(logits[0], dim=0)
    t = int(probs.argmax()) if target is None else int(target)
    if not logits.requires_grad:
        raise ModelError("the model's output does not depend on the LayerCAM layers")
    acts = [store[n] for n in layers]
    grads = torch.autograd.grad(logits[0, t], acts, allow_unused=True)
    maps = []
    for n, a, g in zip(layers, acts, grads):
        if g is None:
            raise ModelError(f"the model's output does not depend on layer {n!r}")
        maps.append(F.relu((F.relu(g) * a.detach()).sum(dim=1))[0])
    return maps, t, float(probs[t])


def fuse(maps: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """Each map scaled to [0, 1], bilinearly upsampled to ``size``, averaged, scaled to [0, 1] again."""
    up = [upsample(_scale(m), size) for m in maps]
    return _scale(torch.stack(up).clamp_min(0).mean(dim=0))


def run(ctx: ExplainContext) -> torch.Tensor:
    """(S, S) fused LayerCAM map in [0, 1] for ``ctx.target`` (the predicted class when None)."""
    layers = parse_layers(ctx.net, ctx.params.get("layers"))
    ctx.params["layers"] = ",".join(layers)
    ctx.expected_calls = 1
    multilabel = getattr(ctx.net, "head_type", "multiclass") == "multilabel"
    maps, t, p = layer_cams(ctx.net, ctx.x, layers, ctx.target, forward=ctx.forward, multilabel=multilabel)
    ctx.resolved_target, ctx.score = t, p
    return fuse([m.detach() for m in maps], tuple(ctx.x.shape[-2:]))


METHOD = register(Method("layercam", "LayerCAM", signed=False, defaults=_defaults, run=run, resolves_target=True,
                         aliases=("layer-cam",)))
