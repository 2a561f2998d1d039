"""GradientShap through captum, chunked so memory stays bounded.

captum's ``GradientShap`` expands all ``n_samples`` noisy copies of the input
into one batch; here they are drawn ``batch_size`` at a time and the chunk
averages combined, weighted by chunk size (the same Monte-Carlo estimate).
Baselines: the black image, the mean image and the blurred image; ``stdevs``
is the input noise in normalised units. Seeded, so a map is reproducible.
"""

from __future__ import annotations

import logging
import math

import torch
from captum.attr import GradientShap

from core.explain.base import ExplainContext, Method, register
from core.explain.integrated_gradients import smooth_map

logger = logging.getLogger(__name__)


def _defaults(size: int) -> dict:
    return {"n_samples": 32, "stdevs": 0.1, "baselines": "black,mean,blur", "seed": 0,
            "smooth": round(size / 32, 2)}


def run(ctx: ExplainContext) -> torch.Tensor:
    """(S, S) signed map: the expected gradient × (input − baseline), summed over channels."""
    n = int(ctx.params["n_samples"])
    baselines = torch.cat([ctx.baseline(k.strip()) for k in str(ctx.params["baselines"]).split(",")])
    chunks = [min(ctx.batch_size, n - i) for i in range(0, n, ctx.batch_size)]
    ctx.expected_calls = len(chunks)
    gs = GradientShap(ctx.forward)
    total = torch.zeros_like(ctx.x)
    devices = [ctx.x.device] if ctx.x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(ctx.params["seed"]))
        for k in chunks:
            ctx.check()
            attr = gs.attribute(ctx.x, baselines=baselines, n_samples=k, stdevs=float(ctx.params["stdevs"]),
                                target=ctx.target)
            total += attr.detach() * k
    return smooth_map((total / max(1, n))[0].sum(0), float(ctx.params["smooth"]))


METHOD = register(Method("gradshap", "GradientShap", signed=True, defaults=_defaults, run=run, random=True,
                         aliases=("gradient_shap", "gradientshap")))
