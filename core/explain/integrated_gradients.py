"""Integrated Gradients through captum, with a choice of baseline and a bounded batch.

``internal_batch_size`` (= ``batch_size``) caps how many interpolated images go
through one forward + backward, so peak memory does not grow with ``n_steps``.
Attributions are summed over colour channels into one signed pixel map, then
smoothed a little (``smooth`` pixels, Gaussian sigma) so the map shows regions
rather than single-pixel speckle.
"""

from __future__ import annotations

import logging
import math

import torch
from captum.attr import IntegratedGradients

from core.explain.base import ExplainContext, Method, gaussian_blur, register

logger = logging.getLogger(__name__)


def _defaults(size: int) -> dict:
    return {"baseline": "black", "n_steps": 32, "integration": "gausslegendre", "smooth": round(size / 32, 2)}


def smooth_map(m: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur an (S, S) map with a Gaussian of ``sigma`` pixels (no-op for sigma <= 0)."""
    if sigma <= 0:
        return m
    return gaussian_blur(m[None, None], float(sigma))[0, 0]


def run(ctx: ExplainContext) -> torch.Tensor:
    """(S, S) signed map: channel-summed integrated gradients from the chosen baseline."""
    steps = int(ctx.params["n_steps"])
    ctx.expected_calls = math.ceil(steps / ctx.batch_size)
    ig = IntegratedGradients(ctx.forward)
    attr = ig.attribute(ctx.x, baselines=ctx.baseline(ctx.params["baseline"]), target=ctx.target,
                        n_steps=steps, method=ctx.params["integration"], internal_batch_size=ctx.batch_size)
    return smooth_map(attr.detach()[0].sum(0), float(ctx.params["smooth"]))


METHOD = register(Method("ig", "Integrated Gradients", signed=True, defaults=_defaults, run=run,
                         aliases=("integrated_gradients", "integratedgradients")))
