"""Losses for imbalanced classes: class-weighted cross-entropy and focal loss.

Multi-class heads use softmax losses; multi-label heads the sigmoid variants.
The ordinal severity head uses a cumulative-link (CORAL) binary loss.

Every finding loss takes an optional ``sample_weight`` (N,) tensor that is
multiplied into the per-sample loss (for example a larger weight for cases a
reader flagged "model was wrong"); without it each loss equals its usual form.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

LOSSES = ("ce", "weighted", "focal")


def class_weights(counts: Sequence[int], power: float = 1.0) -> torch.Tensor:
    """Inverse-frequency weights normalised to mean 1.

    ``counts[i]`` is the number of training labels of class i; a class with no
    label gets the largest weight seen (it cannot be learnt, but must not divide
    by zero). ``power`` < 1 softens the correction (0.5 = inverse square root).
    """
    counts = np.asarray(counts, dtype=np.float64)
    safe = np.where(counts > 0, counts, max(counts.min(initial=1.0), 1.0))
    weights = (safe.sum() / (len(safe) * safe)) ** power
    weights = weights / weights.mean()
    return torch.tensor(weights, dtype=torch.float32)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): ``-α_t (1 - p_t)^γ log p_t``.

    ``alpha`` is an optional per-class weight tensor; ``gamma`` = 0 gives
    (weighted) cross-entropy. ``multilabel`` switches to the sigmoid form.
    """

    def __init__(self, gamma: float = 2.0, alpha: Optional[torch.Tensor] = None, multilabel: bool = False):
        super().__init__()
        self.gamma = float(gamma)
        self.multilabel = multilabel
        self.register_buffer("alpha", alpha if alpha is not None else None, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                sample_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.multilabel:
            target = target.float()
            bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
            p_t = torch.exp(-bce)
            loss = (1 - p_t) ** self.gamma * bce
            if self.alpha is not None:
                loss = loss * (target * self.alpha + (1 - target))
            return _weighted_mean(loss.mean(dim=1), None, sample_weight)
        log_p = F.log_softmax(logits, dim=1)
        log_p_t = log_p.gather(1, target.view(-1, 1)).squeeze(1)
        loss = -((1 - log_p_t.exp()) ** self.gamma) * log_p_t
        return _weighted_mean(loss, self.alpha[target] if self.alpha is not None else None, sample_weight)


def _weighted_mean(per_sample: torch.Tensor, class_weight: Optional[torch.Tensor],
                   sample_weight: Optional[torch.Tensor]) -> torch.Tensor:
    """Σ w·l / Σ w with w = class weight × sample weight (plain mean when both are None)."""
    w = class_weight
    if sample_weight is not None:
        sw = sample_weight.to(per_sample.dtype)
        w = sw if w is None else w * sw
    if w is None:
        return per_sample.mean()
    return (per_sample * w).sum() / w.sum().clamp_min(1e-12)


class ClassWeightedCE(nn.CrossEntropyLoss):
    """:class:`torch.nn.CrossEntropyLoss` (optionally class-weighted) that also takes ``sample_weight``."""

    def forward(self, input: torch.Tensor, target: torch.Tensor,  # noqa: A002 - torch's argument name
                sample_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        if sample_weight is None:
            return super().forward(input, target)
        per = F.cross_entropy(input, target, reduction="none")
        return _weighted_mean(per, self.weight[target] if self.weight is not None else None, sample_weight)


class PosWeightedBCE(nn.BCEWithLogitsLoss):
    """:class:`torch.nn.BCEWithLogitsLoss` (optionally ``pos_weight``-ed) that also takes ``sample_weight``."""

    def forward(self, input: torch.Tensor, target: torch.Tensor,  # noqa: A002 - torch's argument name
                sample_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        if sample_weight is None:
            return super().forward(input, target)
        per = F.binary_cross_entropy_with_logits(input, target.float(), pos_weight=self.pos_weight,
                                                 reduction="none").mean(dim=1)
        return _weighted_mean(per, None, sample_weight)


def make_loss(kind: str, counts: Sequence[int], multilabel: bool = False, gamma: float = 2.0) -> nn.Module:
    """The training loss for ``kind`` in :data:`LOSSES` given per-class label counts."""
    if kind not in LOSSES:
        raise ValueError(f"unknown loss {kind!r}; choose one of {', '.join(LOSSES)}")
    weights = class_weights(counts) if kind in ("weighted", "focal") else None
    if kind == "focal":
        return FocalLoss(gamma=gamma, alpha=weights, multilabel=multilabel)
    if multilabel:
        return PosWeightedBCE(pos_weight=weights)
    return ClassWeightedCE(weight=weights)


def coral_loss(severity_logits: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Ordinal (CORAL) loss: K-1 binary tasks "severity > k" for integer ``levels`` in [0, K-1].

    Rows whose level is negative (no severity given) are ignored; with none
    given the loss is zero.
    """
    mask = levels >= 0
    if not bool(mask.any()):
        return severity_logits.sum() * 0.0
    k = torch.arange(severity_logits.shape[1], device=levels.device)
    targets = (levels[mask].view(-1, 1) > k.view(1, -1)).float()
    return F.binary_cross_entropy_with_logits(severity_logits[mask], targets)


def coral_predict(severity_logits: torch.Tensor) -> torch.Tensor:
    """Predicted ordinal level: the number of thresholds passed (sigmoid > 0.5)."""
    return (torch.sigmoid(severity_logits) > 0.5).sum(dim=1)
