"""Severity grades from the ordinal (CORAL) head: predicted grade, its probability, names, evaluation.

The head gives K-1 logits ``l_k`` with ``sigmoid(l_k)`` = P(grade > k). The
grade is the number of thresholds passed (:func:`core.models.losses.coral_predict`)
and its probability comes from the implied distribution over grades:
P(0) = 1 - P(>0), P(k) = P(>k-1) - P(>k), P(K-1) = P(>K-2).
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np

logger = logging.getLogger(__name__)

#: Names used when the workspace defines no severity scale of the model's length (the label panel's four).
DEFAULT_FOUR = ("none", "mild", "moderate", "severe")


def grade_distribution(severity_logits) -> np.ndarray:
    """``(N, K)`` probabilities of each grade from ``(N, K-1)`` CORAL logits (rows sum to 1).

    A head whose cumulative probabilities are not monotone would give a negative
    difference; those are clipped at 0 and the row renormalised.
    """
    logits = np.asarray(severity_logits, dtype=np.float64)
    if logits.ndim != 2:
        raise ValueError(f"severity logits must be (N, K-1), got shape {logits.shape}")
    above = 1.0 / (1.0 + np.exp(-logits))  # P(grade > k)
    n = len(above)
    cum = np.concatenate([np.ones((n, 1)), above, np.zeros((n, 1))], axis=1)
    dist = np.clip(cum[:, :-1] - cum[:, 1:], 0.0, None)
    total = dist.sum(axis=1, keepdims=True)
    return dist / np.where(total > 0, total, 1.0)


def predict_grades(severity_logits) -> tuple[np.ndarray, np.ndarray]:
    """(grade per row, probability of that grade) from ``(N, K-1)`` CORAL logits.

    The grade is :func:`~core.models.losses.coral_predict` (thresholds passed); its
    probability is that grade's share of :func:`grade_distribution`.
    """
    import torch

    from core.models.losses import coral_predict

    logits = np.asarray(severity_logits, dtype=np.float32)
    if len(logits) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    grades = coral_predict(torch.as_tensor(logits)).numpy().astype(np.int64)
    dist = grade_distribution(logits)
    return grades, dist[np.arange(len(grades)), grades]


def severity_scale(workspace, levels: int) -> list[str]:
    """Names of the ``levels`` grades: the workspace's severity scale when it has that many, else defaults.

    The scale is read from the findings setting (``{"severity": [...]}``) or the
    ``severity_scale`` setting; without one of the right length the grades are
    ``none, mild, moderate, severe`` for four levels and ``grade k`` otherwise.
    """
    if levels <= 0:
        return []
    for key in ("findings", "severity_scale"):
        value = workspace.get_setting(key) if workspace is not None else None
        names = value.get("severity") if isinstance(value, dict) else value
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",") if n.strip()]
        if isinstance(names, (list, tuple)) and len(names) == levels:
            return [str(n) for n in names]
    if levels == len(DEFAULT_FOUR):
        return list(DEFAULT_FOUR)
    return [f"grade {k}" for k in range(levels)]


def evaluate_severity(true_grades, predicted_grades, levels: int, names: Optional[Sequence[str]] = None,
                      n_boot: int = 1000, seed: int = 0) -> dict:
    """Quadratic-weighted kappa of predicted against labelled grades, with a bootstrap 95 % interval.

    Rows whose true grade is negative (no severity labelled) are left out.
    Returns ``{"n", "kappa", "ci95": [lo, hi] | None, "confusion": [[int]] (rows =
    labelled grade), "grades": [names], "per_grade": {name: {"n", "correct",
    "recall"}}}``; ``kappa`` is None when undefined (no rows, or one grade only).
    """
    from core.models.metrics import confusion_matrix, quadratic_weighted_kappa

    y = np.asarray(true_grades, dtype=np.int64).ravel()
    q = np.asarray(predicted_grades, dtype=np.int64).ravel()
    if len(y) != len(q):
        raise ValueError(f"{len(y)} labelled grades for {len(q)} predicted ones")
    keep = y >= 0
    y, q = y[keep], np.clip(q[keep], 0, levels - 1)
    if len(y) and y.max() >= levels:
        raise ValueError(f"labelled severity grades must lie in 0..{levels - 1}")
    names = list(names) if names is not None else [f"grade {k}" for k in range(levels)]
    kappa = quadratic_weighted_kappa(y, q, levels) if len(y) else None
    ci = None
    if kappa is not None and n_boot > 0 and len(y) >= 2:
        rng = np.random.default_rng(seed)
        values = []
        for _ in range(n_boot):
            idx = rng.integers(0, len(y), len(y))
            v = quadratic_weighted_kappa(y[idx], q[idx], levels)
            if v is not None:
                values.append(v)
        if len(values) >= max(10, n_boot // 10):
            ci = [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]
    cm = confusion_matrix(y, q, levels) if len(y) else np.zeros((levels, levels), dtype=np.int64)
    per_grade = {}
    for k, name in enumerate(names):
        n_k = int(cm[k].sum())
        per_grade[name] = {"n": n_k, "correct": int(cm[k, k]), "recall": (float(cm[k, k] / n_k) if n_k else None)}
    return {"n": int(len(y)), "kappa": None if kappa is None else float(kappa), "ci95": ci,
            "confusion": cm.astype(int).tolist(), "grades": names, "per_grade": per_grade}
