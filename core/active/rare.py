"""Rare-class priority: cost-sensitive acquisition and a minimum share of likely-rare cases.

A *cost matrix* ``C[true, decided]`` says what each mistake costs; the default
one makes missing the rare class (deciding anything else when it is true) cost
``miss_cost`` (5 by default) and every other mistake cost 1. Given the model's
probabilities, the cost-optimal decision for a case is ``argmin_j Σ_i p_i C[i, j]``
and its *expected cost* (the Bayes risk) is that minimum. A case with a high risk
is one where even the best decision is expensive: near the cost-shifted decision
boundary, which sits at low P(rare) when misses are expensive. That is the
``cost`` score.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_MISS_COST = 5.0


def default_cost_matrix(n_classes: int, rare_index: Optional[int], miss_cost: float = DEFAULT_MISS_COST) -> np.ndarray:
    """``C[true, decided]``: 0 on the diagonal, ``miss_cost`` for missing the rare class, else 1."""
    c = np.ones((n_classes, n_classes)) - np.eye(n_classes)
    if rare_index is not None and 0 <= rare_index < n_classes:
        c[rare_index, :] = miss_cost
        c[rare_index, rare_index] = 0.0
    return c


def cost_matrix_from(spec, classes: Sequence[str], rare_class: Optional[str],
                     miss_cost: float = DEFAULT_MISS_COST) -> np.ndarray:
    """A cost matrix from a setting: None (default), a K×K list, or ``{"true>decided": cost}`` overrides.

    Raises ValueError for a matrix of the wrong shape or negative costs.
    """
    k = len(classes)
    rare = list(classes).index(rare_class) if rare_class in classes else None
    base = default_cost_matrix(k, rare, miss_cost)
    if spec is None:
        return base
    if isinstance(spec, dict):
        for key, value in spec.items():
            true, _, decided = str(key).partition(">")
            if true in classes and decided in classes:
                base[list(classes).index(true), list(classes).index(decided)] = float(value)
        m = base
    else:
        m = np.asarray(spec, dtype=np.float64)
    if m.shape != (k, k):
        raise ValueError(f"cost matrix must be {k}×{k} for classes {', '.join(classes)}, got {m.shape}")
    if (m < 0).any():
        raise ValueError("costs must not be negative")
    return m


def expected_costs(probs, cost: np.ndarray) -> np.ndarray:
    """(N, K) expected cost of deciding each class: ``probs @ C``."""
    return np.asarray(probs, dtype=np.float64) @ np.asarray(cost, dtype=np.float64)


def bayes_risk(probs, cost: np.ndarray) -> np.ndarray:
    """(N,) expected cost of the cost-optimal decision (the ``cost`` acquisition score)."""
    e = expected_costs(probs, cost)
    return e.min(axis=1) if e.size else np.zeros(len(e))


def miss_cost_score(probs, rare_index: int, cost: np.ndarray) -> np.ndarray:
    """(N,) P(rare) × cost of missing it (the mean cost of the non-rare decisions): the 'why' figure."""
    p = np.asarray(probs, dtype=np.float64)
    others = [j for j in range(p.shape[1]) if j != rare_index]
    miss = float(np.mean(cost[rare_index, others])) if others else 0.0
    return p[:, rare_index] * miss


def rare_index_of(classes: Sequence[str], counts: Optional[Sequence[int]] = None,
                  rare_class: Optional[str] = None) -> Optional[int]:
    """The rare class's index: ``rare_class`` when given and known, else the class with the fewest labels."""
    if rare_class is not None and rare_class in classes:
        return list(classes).index(rare_class)
    if counts is not None and len(counts) == len(classes) and len(classes) > 1:
        return int(np.argmin(np.asarray(counts)))
    return None


def enforce_rare_share(selected: Sequence[int], p_rare, candidates: np.ndarray, min_share: float,
                       threshold: float = 0.5, scores: Optional[np.ndarray] = None) -> tuple[list[int], set[int]]:
    """Make at least ``ceil(min_share × len(selected))`` picks *likely rare*.

    A case is likely rare when ``p_rare >= threshold``. The likely-rare cases
    added are the most informative ones by ``scores`` (when given; else the
    highest P(rare)): a case the model is already sure is rare teaches it little,
    and filling the share with those cost average precision on PneumoniaMNIST.
    When too few likely-rare cases exist, the highest P(rare) cases stand in.
    Missing rare picks replace the lowest-ranked picks that are not likely rare.
    ``candidates`` is a bool mask of selectable cases. Returns (new selection in
    rank order, the indices added for the share).
    """
    selected = list(selected)
    n = len(selected)
    need = int(np.ceil(min_share * n - 1e-9)) if n else 0
    p = np.asarray(p_rare, dtype=np.float64)
    is_rare = lambda i: p[i] >= threshold  # noqa: E731
    have = sum(1 for i in selected if is_rare(i))
    if need <= have:
        return selected, set()
    chosen = set(selected)
    pool = [int(i) for i in np.argsort(-p, kind="stable") if candidates[i] and int(i) not in chosen]
    if scores is not None:
        s = np.asarray(scores, dtype=np.float64)
        likely = sorted((i for i in pool if is_rare(i)), key=lambda i: -s[i])
        pool = likely + [i for i in pool if not is_rare(i)]
    extra = pool[: need - have]
    added: set[int] = set()
    for new in extra:
        for pos in range(len(selected) - 1, -1, -1):
            if not is_rare(selected[pos]) and selected[pos] not in added:
                selected.pop(pos)
                break
        else:
            break
        selected.append(new)
        added.add(new)
    return selected, added
