"""Faithfulness of a map: deletion and insertion AUC (Petsiuk et al., RISE, 2018).

Deletion: hide the most salient pixels first (replace them with a blurred copy
of the image) and follow the target probability as more is hidden; a faithful
map makes it fall fast (low AUC). Insertion: start from the blurred image and
reveal the most salient pixels first; a faithful map makes the probability rise
fast (high AUC). Both use ``steps`` + 1 images, scored ``batch_size`` at a time.
The blurred reference (rather than black) keeps the perturbed images closer to
the data the model saw, which ROAD (Rong et al., 2022) showed matters.
"""

from __future__ import annotations

import logging
import time
from typing import Optional

import numpy as np
import torch

from core.explain.base import gaussian_blur
from core.progress import CancelToken

logger = logging.getLogger(__name__)

#: Insertion minus deletion AUC at or above which the app shows a "faithful" badge.
GOOD_GAP = 0.2


def _scores(net, images: torch.Tensor, target: int, multilabel: bool, batch_size: int,
            cancel: Optional[CancelToken]) -> np.ndarray:
    out = []
    with torch.no_grad():
        for i in range(0, images.shape[0], batch_size):
            if cancel is not None:
                cancel.check()
            logits = net(images[i:i + batch_size])
            p = torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)
            out.append(p[:, target].float().cpu())
    return torch.cat(out).numpy()


def _auc(y: np.ndarray) -> float:
    return float(((y[1:] + y[:-1]) / 2).mean())


def deletion_insertion(net, x: torch.Tensor, model_map: np.ndarray, target: int, *, steps: int = 20,
                       multilabel: bool = False, batch_size: int = 16, cancel: Optional[CancelToken] = None,
                       seed: int = 0) -> dict:
    """Deletion and insertion AUC of ``model_map`` for ``target``.

    Args:
        net: the network (eval mode).
        x: the preprocessed input (1, C, S, S).
        model_map: (S, S) saliency in model space, high = important.
        target: class index whose probability is followed.
        steps: pixel fractions 0, 1/steps, …, 1 are evaluated.
        multilabel: sigmoid instead of softmax.
        batch_size: images per forward pass.
        cancel: checked between batches.
        seed: breaks ties in the ranking (piecewise-constant maps such as LIME's) reproducibly.

    Returns:
        ``{"deletion_auc", "insertion_auc", "steps", "reference": "blur", "badge", "seconds"}``; AUCs in [0, 1].
    """
    t0 = time.perf_counter()
    s = x.shape[-1]
    m = torch.as_tensor(np.asarray(model_map, dtype=np.float32)).reshape(-1)
    tie = torch.rand(m.shape, generator=torch.Generator().manual_seed(seed)) * 1e-6
    order = torch.argsort(m + tie, descending=True).to(x.device)
    n = m.numel()
    blurred = gaussian_blur(x, max(1.0, s / 16))
    counts = [round(n * k / steps) for k in range(steps + 1)]
    rank = torch.empty(n, dtype=torch.long, device=x.device)
    rank[order] = torch.arange(n, device=x.device)
    rank = rank.view(1, 1, s, s)
    masks = torch.stack([(rank < c) for c in counts]).float().squeeze(1)  # (steps+1, 1, S, S)
    deleted = x * (1 - masks) + blurred * masks
    inserted = blurred * (1 - masks) + x * masks
    d = _scores(net, deleted, target, multilabel, batch_size, cancel)
    ins = _scores(net, inserted, target, multilabel, batch_size, cancel)
    result = {"deletion_auc": _auc(d), "insertion_auc": _auc(ins), "steps": steps, "reference": "blur"}
    result["badge"] = badge(result)
    result["seconds"] = time.perf_counter() - t0
    return result


def badge(faith: dict) -> str:
    """``faithful`` / ``weak`` / ``unfaithful`` from insertion − deletion AUC, for the app's badge."""
    gap = faith["insertion_auc"] - faith["deletion_auc"]
    if gap >= GOOD_GAP:
        return "faithful"
    return "weak" if gap > 0 else "unfaithful"


def to_model_space(map2d: np.ndarray, geometry) -> np.ndarray:
    """A map in the image's geometry → (S, S) model space (pad with 0, resize), for scoring a cached map."""
    import torch.nn.functional as F

    (h, w), (ph, pw), (top, left) = geometry.original_shape, geometry.padded_shape, geometry.pad
    t = torch.from_numpy(np.ascontiguousarray(map2d, dtype=np.float32))[None, None]
    t = F.pad(t, (left, pw - w - left, top, ph - h - top), value=0.0)
    t = F.interpolate(t, size=(geometry.size, geometry.size), mode="bilinear", align_corners=False, antialias=True)
    return t[0, 0].numpy()
