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


def class_cost_matrix(n_classes: int, miss_costs: Sequence[float]) -> np.ndarray:
    """``C[true, decided]`` with one miss cost per class: row ``i`` off the diagonal is ``miss_costs[i]``.

    Several rare (or costly) classes each keep their own cost: missing melanoma may
    cost 10, missing a dermatofibroma 5, any other mistake 1.
    """
    costs = np.asarray(list(miss_costs), dtype=np.float64)
    if costs.shape != (n_classes,):
        raise ValueError(f"need one miss cost per class ({n_classes}), got {len(costs)}")
    if (costs < 0).any():
        raise ValueError("costs must not be negative")
    return (np.ones((n_classes, n_classes)) - np.eye(n_classes)) * costs[:, None]


def miss_costs_for(n_classes: int, rare: Sequence[int], miss_cost: float = DEFAULT_MISS_COST,
                   costs: Optional[dict] = None) -> list[float]:
    """Per-class miss costs: ``costs[i]`` where given, else ``miss_cost`` for a rare class and 1 for the rest."""
    out = [float(miss_cost) if i in set(rare) else 1.0 for i in range(n_classes)]
    for i, value in (costs or {}).items():
        if 0 <= int(i) < n_classes:
            out[int(i)] = float(value)
    return out


def cost_matrix_from(spec, classes: Sequence[str], rare_class,
                     miss_cost: float = DEFAULT_MISS_COST) -> np.ndarray:
    """A cost matrix from a setting: None (default), a K×K list, or ``{"true>decided": cost}`` overrides.

    ``rare_class`` is one class name or a list of several: each rare class's miss
    costs ``miss_cost`` in the default matrix the overrides start from.
    Raises ValueError for a matrix of the wrong shape or negative costs.
    """
    k = len(classes)
    names = [rare_class] if isinstance(rare_class, str) or rare_class is None else list(rare_class)
    rare = [list(classes).index(c) for c in names if c in classes]
    base = class_cost_matrix(k, miss_costs_for(k, rare, miss_cost))
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


def rare_miss_costs(probs, rare: Sequence[int], cost: np.ndarray) -> np.ndarray:
    """(N, R) P(rare class r) × cost of missing r, one column per rare class (see :func:`miss_cost_score`)."""
    p = np.asarray(probs, dtype=np.float64)
    if not len(rare):
        return np.zeros((len(p), 0))
    return np.stack([miss_cost_score(p, r, cost) for r in rare], axis=1)


def risk_driver(probs, cost: np.ndarray) -> np.ndarray:
    """(N,) the true class that contributes most to each case's Bayes risk: the miss the best decision fears most.

    With ``d`` the cost-optimal decision, the risk is ``Σ_i p_i C[i, d]``; the
    driver is ``argmax_i p_i C[i, d]`` — what "why this case" names.
    """
    p = np.asarray(probs, dtype=np.float64)
    c = np.asarray(cost, dtype=np.float64)
    if not len(p):
        return np.zeros(0, dtype=np.int64)
    decided = (p @ c).argmin(axis=1)
    contrib = p * c[:, decided].T
    return contrib.argmax(axis=1)


def rare_indices_of(classes: Sequence[str], counts: Optional[Sequence[int]] = None,
                    rare_classes: Optional[Sequence[str] | str] = None) -> list[int]:
    """Indices of the rare classes: the named ones that exist (a list, or one name, or ``"A,B"``), else the rarest.

    Returns [] when nothing is named and there are no counts to find the rarest from.
    """
    if isinstance(rare_classes, str):
        rare_classes = [c.strip() for c in rare_classes.split(",") if c.strip()]
    named = [list(classes).index(c) for c in (rare_classes or []) if c in classes]
    if named:
        return sorted(set(named), key=named.index)
    one = rare_index_of(classes, counts, None)
    return [] if one is None else [one]


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
    rank order, the indices added for the share). One rare class; several: :func:`enforce_rare_shares`.
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


def share_quota(need: int, rare: Sequence[int], counts: Optional[Sequence[int]], target: int) -> dict[int, int]:
    """How many of ``need`` rare-share slots each rare class gets.

    The slots go to the rare classes still *short* of labels (fewer than
    ``target`` confirmed ones; all of them when none is short), the class with
    the fewest labels first, split as evenly as the count allows.
    """
    rare = list(rare)
    if need <= 0 or not rare:
        return {}
    if counts is not None and len(counts):
        short = [r for r in rare if r < len(counts) and int(counts[r]) < target] or list(rare)
        short.sort(key=lambda r: (int(counts[r]) if r < len(counts) else 0, rare.index(r)))
    else:
        short = list(rare)
    quota = {r: need // len(short) for r in short}
    for r in short[: need % len(short)]:
        quota[r] += 1
    return {r: q for r, q in quota.items() if q}


def enforce_rare_shares(selected: Sequence[int], p: np.ndarray, rare: Sequence[int], candidates: np.ndarray,
                        min_share: float, threshold: float = 0.5, scores: Optional[np.ndarray] = None,
                        counts: Optional[Sequence[int]] = None,
                        target: int = 50) -> tuple[list[int], dict[int, int]]:
    """The rare-share floor for several rare classes: ``ceil(min_share × len(selected))`` likely-rare picks in all,
    spread across the rare classes still short of labels (:func:`share_quota`).

    A pick is *likely r* when ``P(r) >= threshold``; a selected case already likely
    r counts towards r's quota. For each class still short of its quota the most
    informative likely-r cases by ``scores`` are added (the highest P(r) stand in
    when too few are likely r), replacing the lowest-ranked picks that are not likely
    rare of any class. Returns (new selection in rank order, {added index: rare class index}).
    """
    selected = list(selected)
    p = np.asarray(p, dtype=np.float64)
    rare = list(rare)
    n = len(selected)
    need = int(np.ceil(min_share * n - 1e-9)) if n else 0
    quota = share_quota(need, rare, counts, target)
    if not quota:
        return selected, {}
    likely = {r: p[:, r] >= threshold for r in rare}
    any_rare = lambda i: any(likely[r][i] for r in rare)  # noqa: E731
    chosen = set(selected)
    added: dict[int, int] = {}
    s = np.asarray(scores, dtype=np.float64) if scores is not None else None
    for r, q in quota.items():
        have = sum(1 for i in selected if likely[r][i])
        missing = q - have
        if missing <= 0:
            continue
        pool = [int(i) for i in np.argsort(-p[:, r], kind="stable") if candidates[i] and int(i) not in chosen]
        if s is not None:
            top = sorted((i for i in pool if likely[r][i]), key=lambda i: -s[i])
            pool = top + [i for i in pool if not likely[r][i]]
        for new in pool[:missing]:
            for pos in range(len(selected) - 1, -1, -1):
                if not any_rare(selected[pos]) and selected[pos] not in added:
                    selected.pop(pos)  # stays in ``chosen``: it is never re-added as a stand-in
                    break
            else:
                break
            selected.append(new)
            chosen.add(new)
            added[new] = r
    return selected, added
