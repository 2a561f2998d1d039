"""Grad-CAM at the cost of one forward pass, with an explainer prepared once per network.

:class:`GradCam` is made once per (private model copy, layer) — :func:`prepared`
caches it, and the private copy itself is made once per loaded model version
(:func:`core.explain.base.private_copy`), so a call never copies the network.
A call registers one forward hook, on the target layer only, inside a ``with``
block (removed even when the forward raises). The hook detaches the layer's
activation and makes it the root of a small graph: parameters are frozen and
the input needs no gradient, so autograd records nothing before the layer and
only the few operations after it (pooling, the head). One forward gives the
activation, the logits and the target's probability; one backward from the
target logit to the activation gives the channel weights (Selvaraju et al.,
2017: spatial mean of the gradient); the map is ReLU(Σ_c w_c A_c).

The layer is the architecture's (``LoupeNet.target_layer_name``: ResNet
``layer4``, DenseNet ``features.norm5``, EfficientNet / MobileNet the last
``features`` block); ``layer`` overrides it with any dotted submodule name.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.errors import ModelError
from core.explain.base import ExplainContext, Method, register

logger = logging.getLogger(__name__)


def _defaults(size: int) -> dict:
    return {"layer": None}


class GradCam:
    """Grad-CAM of one network at one layer, prepared once and reused for every image.

    Args:
        net: the network (eval mode; its parameters should be frozen — the private explanation copy is).
        layer: dotted submodule name; default ``net.target_layer_name``.

    Raises:
        ModelError: the network names no layer, or has no such layer.
    """

    def __init__(self, net: nn.Module, layer: Optional[str] = None) -> None:
        name = layer or getattr(net, "target_layer_name", None)
        if not name:
            raise ModelError("this model names no Grad-CAM layer; pass layer=<dotted module name>")
        try:
            self.layer = net.get_submodule(name)
        except AttributeError:
            raise ModelError(f"the model has no layer {name!r} for Grad-CAM") from None
        # A weak reference: :func:`prepared` keys its cache by the network, and a value that held the
        # network strongly would keep it (a whole model copy) alive after its version is dropped.
        self._net, self.layer_name = weakref.ref(net), name
        self.multilabel = getattr(net, "head_type", "multiclass") == "multilabel"

    @property
    def net(self) -> nn.Module:
        """The network this explainer was prepared for."""
        net = self._net()
        if net is None:
            raise ModelError("the model this Grad-CAM was prepared for is gone; prepare a new one")
        return net

    def _hook(self, store: dict):
        def hook(_module, _inputs, output):
            if not isinstance(output, torch.Tensor) or output.dim() != 4:
                raise ModelError(f"layer {self.layer_name!r} does not give 2-D feature maps; "
                                 "choose a convolutional layer")
            act = output.detach().requires_grad_(True)
            store["act"] = act
            # A clone, so an in-place operation after the layer (DenseNet's ReLU) leaves ``act`` intact.
            return act.clone()
        return hook

    def model_map(self, x: torch.Tensor, target: Optional[int] = None,
                  forward=None) -> tuple[torch.Tensor, int, float]:
        """Grad-CAM for one preprocessed input.

        Args:
            x: (1, C, S, S) model input.
            target: class index; None = the predicted class (from the same forward pass).
            forward: callable used instead of ``net`` (e.g. one that checks a cancel token).

        Returns:
            (map, target, probability): the (h, w) layer-resolution map (ReLU'd, not scaled), the class
            explained and the model's probability for it (softmax, or sigmoid for multi-label models).
        """
        store: dict = {}
        handle = self.layer.register_forward_hook(self._hook(store))
        try:
            with torch.enable_grad():
                logits = (forward or self.net)(x)
        finally:
            handle.remove()
        if "act" not in store:
            raise ModelError(f"layer {self.layer_name!r} was not used by the forward pass")
        act = store["act"]
        with torch.no_grad():
            probs = torch.sigmoid(logits[0]) if self.multilabel else torch.softmax(logits[0], dim=0)
        t = int(probs.argmax()) if target is None else int(target)
        if not logits.requires_grad:
            raise ModelError(f"the model's output does not depend on layer {self.layer_name!r}")
        (grad,) = torch.autograd.grad(logits[0, t], act)
        weights = grad.mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * act.detach()).sum(dim=1))[0]
        return cam, t, float(probs[t])

    def __call__(self, x: torch.Tensor, target: Optional[int] = None) -> tuple[torch.Tensor, int, float]:
        """Like :meth:`model_map`, with the map bilinearly upsampled to the input's (S, S)."""
        cam, t, p = self.model_map(x, target)
        return upsample(cam, tuple(x.shape[-2:])), t, p


def upsample(cam: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(h, w) layer map → (H, W), bilinear (as captum's ``LayerAttribution.interpolate``)."""
    return F.interpolate(cam[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]


_prepared_lock = threading.Lock()
_prepared: "weakref.WeakKeyDictionary[nn.Module, dict[str, GradCam]]" = weakref.WeakKeyDictionary()


def prepared(net: nn.Module, layer: Optional[str] = None) -> GradCam:
    """The :class:`GradCam` of ``net`` at ``layer``, made on first use and kept while ``net`` lives."""
    key = layer or getattr(net, "target_layer_name", None) or ""
    with _prepared_lock:
        per_net = _prepared.setdefault(net, {})
        if key not in per_net:
            per_net[key] = GradCam(net, layer)
        return per_net[key]


def run(ctx: ExplainContext) -> torch.Tensor:
    """(S, S) Grad-CAM map (ReLU'd, not yet scaled) for ``ctx.target`` (the predicted class when None)."""
    cam = prepared(ctx.net, ctx.params.get("layer"))
    ctx.params["layer"] = cam.layer_name
    ctx.expected_calls = 1
    m, t, p = cam.model_map(ctx.x, ctx.target, forward=ctx.forward)
    ctx.resolved_target, ctx.score = t, p
    return upsample(m.detach(), tuple(ctx.x.shape[-2:]))


METHOD = register(Method("gradcam", "Grad-CAM", signed=False, defaults=_defaults, run=run, resolves_target=True,
                         aliases=("grad-cam", "layergradcam")))
