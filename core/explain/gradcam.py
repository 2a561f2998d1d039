"""Grad-CAM through captum's ``LayerGradCam``, upsampled to the model input.

The layer is the architecture's (``LoupeNet.target_layer_name``: ResNet
``layer4``, DenseNet ``features.norm5``, EfficientNet / MobileNet the last
``features`` block); ``layer`` overrides it with any dotted submodule name.
Parameters of the private copy are frozen, so the backward pass runs only from
the logit down to the hooked layer: the cost is about one forward pass.
"""

from __future__ import annotations

import logging

import torch
from captum.attr import LayerAttribution, LayerGradCam

from core.errors import ModelError
from core.explain.base import ExplainContext, Method, register

logger = logging.getLogger(__name__)


def _defaults(size: int) -> dict:
    return {"layer": None}


class _PickTarget:
    """Forward returning one logit per row; with no target it picks the predicted class of the first call."""

    def __init__(self, ctx: ExplainContext) -> None:
        self.ctx = ctx

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.ctx.forward(x)
        if self.ctx.resolved_target is None:
            self.ctx.resolved_target = int(logits[0].detach().argmax())
        return logits[:, self.ctx.resolved_target]


def run(ctx: ExplainContext) -> torch.Tensor:
    """(S, S) Grad-CAM map (ReLU'd, not yet scaled) for ``ctx.target`` (the predicted class when None)."""
    name = ctx.params.get("layer") or getattr(ctx.net, "target_layer_name", None)
    if not name:
        raise ModelError("this model names no Grad-CAM layer; pass layer=<dotted module name>")
    try:
        layer = ctx.net.get_submodule(name)
    except AttributeError:
        raise ModelError(f"the model has no layer {name!r} for Grad-CAM") from None
    ctx.params["layer"] = name
    ctx.resolved_target = ctx.target
    ctx.expected_calls = 1
    cam = LayerGradCam(_PickTarget(ctx), layer)
    attr = cam.attribute(ctx.x, target=None, relu_attributions=True, attr_dim_summation=True)
    if attr.dim() != 4:
        raise ModelError(f"layer {name!r} does not give 2-D feature maps; choose a convolutional layer")
    up = LayerAttribution.interpolate(attr.detach(), tuple(ctx.x.shape[-2:]), interpolate_mode="bilinear")
    return up[0, 0]


METHOD = register(Method("gradcam", "Grad-CAM", signed=False, defaults=_defaults, run=run, resolves_target=True,
                         aliases=("grad-cam", "layergradcam")))
