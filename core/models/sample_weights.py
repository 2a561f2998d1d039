"""Per-sample loss weights: a case a reader flagged "model was wrong" counts more in the next training.

:func:`flagged_weights` builds the weight vector for the training images from
their current labels; :func:`weighted_finding_loss` applies it to any of the
finding losses (:func:`core.models.losses.make_loss`) so that with every weight
1 the loss is exactly the unweighted one.
"""

from __future__ import annotations

import logging
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.models.losses import FocalLoss

logger = logging.getLogger(__name__)

#: How much more a flagged case weighs by default (the ``flagged_weight`` setting).
DEFAULT_FLAGGED_WEIGHT = 2.0


def flagged_weights(image_ids: Sequence[str], labels: Mapping[str, object], factor: float) -> np.ndarray:
    """``(N,)`` float32 weights: ``factor`` for images whose current label carries "model was wrong", else 1.

    ``labels`` maps image id → :class:`core.types.Label` (``Workspace.current_labels()``).
    Raises ValueError for a factor that is not positive.
    """
    if not factor > 0:
        raise ValueError(f"the weight of a flagged case must be positive, got {factor}")
    flags = [bool(getattr(labels.get(i), "flag_wrong", False)) for i in image_ids]
    return np.where(np.asarray(flags, dtype=bool), float(factor), 1.0).astype(np.float32)


def weighted_finding_loss(loss: nn.Module, logits: torch.Tensor, target: torch.Tensor,
                          weights: torch.Tensor) -> torch.Tensor:
    """``loss(logits, target)`` with each sample's term multiplied by ``weights`` (a weighted mean).

    Supports the three finding losses: cross-entropy (class weights kept:
    Σ wᵢ·cᵢ·lᵢ / Σ wᵢ·cᵢ), BCE-with-logits (pos_weight kept) and focal.
    """
    w = weights.to(logits.device, dtype=torch.float32)
    if isinstance(loss, nn.CrossEntropyLoss):
        per = F.cross_entropy(logits, target, weight=loss.weight, reduction="none")
        cw = loss.weight[target] if loss.weight is not None else torch.ones_like(per)
        return (w * per).sum() / (w * cw).sum().clamp_min(1e-12)
    if isinstance(loss, nn.BCEWithLogitsLoss):
        per = F.binary_cross_entropy_with_logits(logits, target.float(), pos_weight=loss.pos_weight,
                                                 reduction="none")
        return (w.view(-1, 1) * per).sum() / (w.sum() * per.shape[1]).clamp_min(1e-12)
    if isinstance(loss, FocalLoss):
        if loss.multilabel:
            t = target.float()
            bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
            per = (1 - torch.exp(-bce)) ** loss.gamma * bce
            if loss.alpha is not None:
                per = per * (t * loss.alpha + (1 - t))
            return (w.view(-1, 1) * per).sum() / (w.sum() * per.shape[1]).clamp_min(1e-12)
        log_p_t = F.log_softmax(logits, dim=1).gather(1, target.view(-1, 1)).squeeze(1)
        per = -((1 - log_p_t.exp()) ** loss.gamma) * log_p_t
        cw = loss.alpha[target] if loss.alpha is not None else torch.ones_like(per)
        return (w * cw * per).sum() / (w * cw).sum().clamp_min(1e-12)
    raise TypeError(f"no per-sample weighting for {type(loss).__name__}")
