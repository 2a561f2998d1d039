"""LIME through captum: SLIC superpixels as features, batched perturbation forwards.

Features are SLIC superpixels (scikit-image) of the model input, so a
perturbation hides whole regions rather than pixels. Perturbations are drawn
in antithetic pairs (a random on/off vector, then its complement), which
balances every feature's on/off counts and lowers the variance of the fitted
weights: the same fidelity needs fewer forward passes. By default
(``sampling="uniform_count"``) the number of hidden superpixels is drawn
uniformly, as the lime package does; with the same superpixels this raised
insertion AUC on HAM10000 photographs from 0.660 to 0.826 at 32 samples (lime
at 64: 0.838; docs/benchmarks.md, "LIME measured fairly"). ``"half"`` hides
each superpixel with probability ½ (the former default). Samples are weighted by
the lime package's kernel (exp(-d² / w²) on the cosine distance between the
on/off vector and the all-on vector, w = 0.25) and fitted with ridge regression.
Hidden superpixels take the ``baseline``: ``segment_mean`` (each superpixel's own mean colour, as the
lime package fills them) or any :meth:`ExplainContext.baseline` kind (``mean``, ``black``, ``blur``,
``pad``).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from captum._utils.models.linear_model import SkLearnRidge
from captum.attr import Lime

from core.errors import ModelError
from core.explain.base import ExplainContext, Method, register

logger = logging.getLogger(__name__)


def _defaults(size: int) -> dict:
    return {"n_samples": 256, "n_segments": 50, "compactness": 0.3, "slic_sigma": 1.0, "kernel_width": 0.25, "alpha": 1.0,
            "baseline": "mean", "seed": 0, "sampling": "uniform_count"}


def superpixels(x01: np.ndarray, n_segments: int, compactness: float, sigma: float = 1.0) -> np.ndarray:
    """SLIC labels 0..K-1 of an (S, S) or (S, S, 3) image in [0, 1] (``sigma``: pre-smoothing in pixels)."""
    from skimage.segmentation import slic

    gray = x01.ndim == 2 or x01.shape[-1] == 1 or np.allclose(x01[..., 0], x01[..., -1])
    img = x01[..., 0] if (x01.ndim == 3 and gray) else x01
    labels = slic(img, n_segments=int(n_segments), compactness=float(compactness), sigma=float(sigma), start_label=0,
                  channel_axis=None if img.ndim == 2 else -1)
    _, labels = np.unique(labels, return_inverse=True)
    return labels.reshape(x01.shape[:2]).astype(np.int64)


def to_unit(ctx: ExplainContext) -> np.ndarray:
    """The model input back in [0, 1], (S, S, C), for segmentation."""
    mean = torch.tensor(ctx.spec.mean).view(-1, 1, 1)
    std = torch.tensor(ctx.spec.std).view(-1, 1, 1)
    x = (ctx.x[0].detach().cpu() * std + mean).clamp(0, 1)
    return x.permute(1, 2, 0).numpy()


class _Antithetic:
    """Perturbation sampler: random on/off vectors, each followed by its complement.

    ``uniform_count`` draws the number of hidden features uniformly from 1..K−1 and then which ones
    (the lime package's scheme: many samples close to the image and many far from it, which its
    kernel weights); otherwise every feature is hidden with probability ½. The complement of a
    uniform-count draw is again a uniform-count draw, so pairing keeps the distribution.
    """

    def __init__(self, num_features: int, generator: torch.Generator, device, uniform_count: bool = False) -> None:
        self.n, self.gen, self.device, self.last = num_features, generator, device, None
        self.uniform_count = uniform_count

    def _draw(self) -> torch.Tensor:
        if not self.uniform_count or self.n < 2:
            return torch.rand(1, self.n, generator=self.gen) < 0.5
        k = int(torch.randint(1, self.n, (1,), generator=self.gen))
        on = torch.ones(1, self.n, dtype=torch.bool)
        on[0, torch.randperm(self.n, generator=self.gen)[:k]] = False
        return on

    def __call__(self, original_input, **kwargs) -> torch.Tensor:
        if self.last is None:
            self.last = self._draw()
            out = self.last
        else:
            out, self.last = ~self.last, None
        return out.to(torch.float32).to(self.device)


def _kernel(width: float):
    def similarity(original_inp, perturbed_inp, perturbed_interpretable_inp, **kwargs):
        z = perturbed_interpretable_inp.float()
        cos = z.sum() / (math.sqrt(z.shape[-1]) * torch.sqrt(z.sum()).clamp_min(1e-12))
        d = (1.0 - cos) * 100.0  # lime reports cosine distances × 100 before its kernel
        return torch.exp(-(d / 100.0) ** 2 / width ** 2)
    return similarity


def segment_means(x: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """(1, C, S, S): every pixel replaced by its superpixel's mean colour (the lime package's
    ``hide_color=None`` fill): a hidden region keeps its average colour and loses its texture."""
    c = x.shape[1]
    flat = labels.reshape(-1)
    sums = torch.zeros(c, k, dtype=x.dtype, device=x.device).index_add_(1, flat, x[0].reshape(c, -1))
    counts = torch.bincount(flat, minlength=k).clamp_min(1).to(x.dtype)
    return (sums / counts)[:, flat].reshape(1, c, *labels.shape)


def run(ctx: ExplainContext) -> torch.Tensor:
    """(S, S) signed map: each superpixel's ridge weight for the target logit."""
    p = ctx.params
    if p["sampling"] not in ("half", "uniform_count"):
        raise ModelError(f"LIME sampling must be half or uniform_count, not {p['sampling']!r}")
    labels = superpixels(to_unit(ctx), p["n_segments"], p["compactness"], p["slic_sigma"])
    mask = torch.from_numpy(labels).to(ctx.x.device)[None, None]
    k = int(labels.max()) + 1
    n = int(p["n_samples"])
    ctx.expected_calls = math.ceil(n / ctx.batch_size)
    gen = torch.Generator().manual_seed(int(p["seed"]))
    lime = Lime(ctx.forward, interpretable_model=SkLearnRidge(alpha=float(p["alpha"])),
                similarity_func=_kernel(float(p["kernel_width"])),
                perturb_func=_Antithetic(k, gen, ctx.x.device, p["sampling"] == "uniform_count"))
    if p["baseline"] == "segment_mean":
        baseline = segment_means(ctx.x, mask[0, 0], k)
    else:
        baseline = ctx.baseline(p["baseline"])
    attr = lime.attribute(ctx.x, target=ctx.target, baselines=baseline,
                          feature_mask=mask.expand(1, ctx.x.shape[1], -1, -1), n_samples=n,
                          perturbations_per_eval=ctx.batch_size, return_input_shape=True)
    p["segments"] = k
    return attr.detach()[0, 0]


METHOD = register(Method("lime", "LIME", signed=True, defaults=_defaults, run=run, random=True))
