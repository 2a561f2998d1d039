"""Occlusion through captum: slide a square patch of the baseline over the image.

Window and stride scale with the model input: by default the window is 1/8 of
its side and the stride half the window, i.e. 15 × 15 = 225 occluded copies
whatever the size, run ``batch_size`` at a time.
"""

from __future__ import annotations

import logging
import math

import torch
from captum.attr import Occlusion

from core.explain.base import ExplainContext, Method, register

logger = logging.getLogger(__name__)


def _defaults(size: int) -> dict:
    window = max(2, int(round(size / 8)))
    return {"window": window, "stride": max(1, window // 2), "baseline": "mean"}


def run(ctx: ExplainContext) -> torch.Tensor:
    """(S, S) signed map: how much the target logit drops when each region is hidden."""
    c, s = ctx.x.shape[1], ctx.x.shape[-1]
    w, st = int(ctx.params["window"]), int(ctx.params["stride"])
    n = (math.floor((s - w) / st) + 1) ** 2
    ctx.expected_calls = math.ceil(n / ctx.batch_size)
    occ = Occlusion(ctx.forward)
    attr = occ.attribute(ctx.x, sliding_window_shapes=(c, w, w), strides=(c, st, st),
                         baselines=ctx.baseline(ctx.params["baseline"]), target=ctx.target,
                         perturbations_per_eval=ctx.batch_size)
    return attr.detach()[0].sum(0)


METHOD = register(Method("occlusion", "Occlusion", signed=True, defaults=_defaults, run=run))
