"""The queue builder: one acquisition batch from probabilities and embeddings, with a why per pick.

``select_batch`` is pure NumPy: it takes the model's outputs for every image, a
mask of the labelled ones and an :class:`AcquisitionConfig`, and returns
:class:`Pick` objects (index, score, why-breakdown) in rank order. The
``default`` strategy combines, in this order:

1. cold start (``cold_start.py``) while a class has fewer than ``cold_start_k`` labels;
2. a score = mean of normalised entropy and normalised cost-sensitive risk
   (``rare.bayes_risk`` with one miss cost per class: ``AcquisitionConfig.cost_matrix``),
   plus any named *boost* terms the caller passes (``select_batch(boosts=...)``);
3. k-center greedy on the embeddings over a shortlist of the best-scored cases,
   weighted by the score, so the batch is diverse;
4. a minimum share of likely-rare cases, spread across the rare classes still short
   of labels (``rare.enforce_rare_shares``);
5. an audit slice: a small random share of confident negatives of each rare class in turn,
   so the miss rate among cases the model would wave through can be estimated honestly.

Several rare classes: ``rare_classes`` (indices) with ``class_costs`` ({index: miss cost});
the older single ``rare_index`` / ``miss_cost`` still work and mean one rare class.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

import numpy as np

from core.active import strategies as st
from core.active.cold_start import cold_start_batch, needs_cold_start
from core.active.diversity import diverse_subset, l2_normalise
from core.active.rare import (bayes_risk, class_cost_matrix, enforce_rare_shares, miss_costs_for, rare_miss_costs,
                              risk_driver)

logger = logging.getLogger(__name__)


@dataclass
class AcquisitionConfig:
    """Options of one acquisition (the app passes workspace settings in; core reads none)."""

    strategy: str = "default"
    n: int = 20
    rare_index: Optional[int] = None  # one rare class (older form); ``rare_classes`` wins when given
    cost: Optional[np.ndarray] = None  # (K, K) C[true, decided]; default from the per-class miss costs
    miss_cost: float = 5.0  # the miss cost of a rare class without its own entry in ``class_costs``
    rare_classes: Sequence[int] = ()  # several rare classes, most important first
    class_costs: Optional[Mapping[int, float]] = None  # {class index: cost of missing it}; others 1 (rare: miss_cost)
    rare_target: int = 50  # a rare class is "short" of labels below this many: the rare-share floor serves it
    risk_weight: float = 0.5  # combined score = (1 − w) × normalised entropy + w × normalised cost-sensitive risk
    # chosen on the validation splits of both benchmark domains (docs/benchmarks.md, Active learning): a cold
    # start that stops at one label per class and half of each batch kept for likely-rare cases
    min_rare_share: float = 0.5
    rare_threshold: float = 0.5
    audit_share: float = 0.05
    audit_confidence: float = 0.95
    diversity: bool = True
    shortlist_factor: int = 2  # k-center over the 2n best: 5n measured worse on PneumoniaMNIST
    cold_start_k: int = 1
    seed: int = 0
    class_names: Sequence[str] = field(default_factory=tuple)

    def rares(self) -> tuple[int, ...]:
        """The rare classes' indices (``rare_classes``, else ``rare_index``, else none)."""
        if self.rare_classes:
            return tuple(int(r) for r in self.rare_classes)
        return () if self.rare_index is None else (int(self.rare_index),)

    def cost_matrix(self, k: int) -> np.ndarray:
        """``C[true, decided]`` for ``k`` classes: ``cost`` when set, else one miss cost per class."""
        if self.cost is not None:
            return np.asarray(self.cost, dtype=np.float64)
        return class_cost_matrix(k, miss_costs_for(k, self.rares(), self.miss_cost, self.class_costs))

    def costly(self, k: int) -> list[int]:
        """Classes whose miss costs more than the cheapest mistake: the rare ones and any with a higher cost."""
        c = self.cost_matrix(k)
        row = np.array([c[i, [j for j in range(k) if j != i]].mean() if k > 1 else 0.0 for i in range(k)])
        base = row.min() if k else 0.0
        out = list(self.rares())
        out += [i for i in range(k) if row[i] > base + 1e-12 and i not in out]
        return out


@dataclass(frozen=True)
class Pick:
    """One selected case: its row index, its score and why it was picked."""

    index: int
    score: float
    why: dict


def _r(x: float) -> float:
    return round(float(x), 4)


def _name(config: AcquisitionConfig, i: Optional[int]) -> str:
    if i is None:
        return ""
    return config.class_names[i] if i < len(config.class_names) else str(i)


def component_scores(probs, config: AcquisitionConfig) -> dict[str, np.ndarray]:
    """Every single-matrix score of the ``default`` strategy: entropy, margin, risk, P(rare), miss cost.

    ``p_rare`` / ``miss_cost`` are those of the first rare class (the single-rare-class form);
    ``p_rares`` / ``miss_costs`` hold one column per rare class (``config.rares()``), and
    ``risk_class`` the class whose miss drives each case's risk (``rare.risk_driver``).
    """
    p = np.asarray(probs, dtype=np.float64)
    k = p.shape[1]
    cost = config.cost_matrix(k)
    out = {"entropy": st.entropy(p, normalise=True), "margin": st.margin(p),
           "least_confidence": st.least_confidence(p), "risk": bayes_risk(p, cost)}
    # The largest risk any probability vector can have: the risk at the cost-indifference point.
    worst = bayes_risk(np.eye(k), cost).max()
    out["risk_norm"] = out["risk"] / max(_max_risk(cost), worst, 1e-12)
    out["risk_class"] = risk_driver(p, cost)
    rares = [r for r in config.rares() if 0 <= r < k]
    if rares:
        out["p_rares"] = p[:, rares]
        out["miss_costs"] = rare_miss_costs(p, rares, cost)
        out["p_rare"] = out["p_rares"][:, 0]
        out["miss_cost"] = out["miss_costs"][:, 0]
    return out


def _max_risk(cost: np.ndarray) -> float:
    """max over the probability simplex of min_j (p @ C)_j, estimated on a grid (K ≤ 3) or the vertices' mix."""
    k = cost.shape[0]
    if k == 2:
        t = np.linspace(0, 1, 1001)
        p = np.stack([t, 1 - t], axis=1)
    else:
        rng = np.random.default_rng(0)
        p = np.vstack([rng.dirichlet(np.ones(k), 4000), np.full((1, k), 1.0 / k)])
    return float(bayes_risk(p, cost).max())


def select_batch(probs, emb, labelled: np.ndarray, config: AcquisitionConfig,
                 counts: Optional[Sequence[int]] = None, stochastic: Optional[np.ndarray] = None,
                 boosts: Optional[Mapping[str, np.ndarray]] = None) -> list[Pick]:
    """Choose ``config.n`` unlabelled cases for labelling.

    Args:
        probs: (N, K) probabilities of the active model for every image.
        emb: (N, D) embeddings (penultimate layer), or None (no diversity / cold start by coverage).
        labelled: (N,) bool mask of images that already have a confirmed label.
        config: the strategy and its options.
        counts: confirmed labels per class (length K) for the cold start; None skips it.
        stochastic: (T, N, K) stochastic passes for ``bald`` (MC dropout) and ``tta``.
        boosts: extra score terms of the ``default`` strategy, ``{name: (N,) array}`` (each
            best kept in [0, 1]); they are added to the combined score before the
            shortlist, and every pick's why carries each non-zero term under its name.
            This is the hook for signals outside the model's probabilities (e.g. a case
            near one flagged "model was wrong").

    Returns:
        picks in rank order (best first); fewer than ``n`` when the pool is smaller.

    Raises:
        ValueError: unknown strategy, or ``bald``/``tta`` without stochastic passes.
    """
    p = np.asarray(probs, dtype=np.float64)
    labelled = np.asarray(labelled, dtype=bool)
    pool = ~labelled
    n = min(int(config.n), int(pool.sum()))
    name = config.strategy
    if name not in st.STRATEGIES:
        raise ValueError(f"unknown strategy '{name}': choose one of {', '.join(st.STRATEGIES)}")
    if n <= 0:
        return []
    if name == "random":
        scores = st.random_scores(len(p), config.seed)
        return [Pick(int(i), _r(scores[i]), {"random": _r(scores[i])}) for i in st.top_k(scores, n, labelled)]
    if name in st.STOCHASTIC_SCORES:
        if stochastic is None:
            raise ValueError(f"strategy '{name}' needs stochastic passes (MC dropout or test-time augmentation)")
        scores = st.STOCHASTIC_SCORES[name](stochastic)
        return [Pick(int(i), _r(scores[i]), {name: _r(scores[i])}) for i in st.top_k(scores, n, labelled)]
    comp = component_scores(p, config)
    if name in st.PROBA_SCORES or name == "cost":
        scores = comp["risk"] if name == "cost" else comp[name] if name != "entropy" else st.entropy(p)
        picks = []
        for i in st.top_k(scores, n, labelled):
            why = {name: _r(scores[i])}
            if name == "cost" and "p_rares" in comp:
                j = int(np.argmax(comp["miss_costs"][i]))
                why.update(rare_class=_name(config, config.rares()[j]), p_rare=_r(comp["p_rares"][i, j]),
                           expected_miss_cost=_r(comp["miss_costs"][i, j]))
            picks.append(Pick(int(i), _r(scores[i]), why))
        return picks
    return _default(p, emb, labelled, config, counts, comp, n, boosts)


def _focus(p: np.ndarray, i: int, costly: Sequence[int], cost: np.ndarray) -> Optional[int]:
    """The costly class a case is most about: the highest P(class) × cost of missing it."""
    if not costly:
        return None
    k = p.shape[1]
    miss = [float(np.mean(cost[c, [j for j in range(k) if j != c]])) if k > 1 else 0.0 for c in costly]
    return int(costly[int(np.argmax([p[i, c] * m for c, m in zip(costly, miss)]))])


def _default(p, emb, labelled, config, counts, comp, n, boosts=None) -> list[Pick]:
    rng = np.random.default_rng(config.seed)
    k = p.shape[1]
    pool_idx = np.flatnonzero(~labelled)
    rares = [r for r in config.rares() if 0 <= r < k]
    cost = config.cost_matrix(k)
    costly = [c for c in config.costly(k) if 0 <= c < k]
    combined = (1.0 - config.risk_weight) * comp["entropy"] + config.risk_weight * comp["risk_norm"]
    extra = {str(name): np.asarray(v, dtype=np.float64) for name, v in (boosts or {}).items()}
    for name, v in extra.items():
        if v.shape != combined.shape:
            raise ValueError(f"boost '{name}' has shape {v.shape}, expected {combined.shape}")
        combined = combined + v

    def breakdown(i: int, focus: Optional[int] = None) -> dict:
        why = {"entropy": _r(comp["entropy"][i]), "risk": _r(comp["risk"][i]), "combined": _r(combined[i])}
        driver = int(comp["risk_class"][i])
        if driver in costly:
            why["risk_class"] = _name(config, driver)
        c = focus if focus is not None else _focus(p, i, costly, cost)
        if c is not None:
            others = [j for j in range(k) if j != c]
            miss = float(np.mean(cost[c, others])) if others else 0.0
            why.update(rare_class=_name(config, c), p_rare=_r(p[i, c]), miss_cost=_r(miss),
                       expected_miss_cost=_r(p[i, c] * miss))
        for name, v in extra.items():
            if v[i]:
                why[name] = _r(v[i])
        return why

    # Audit slice: confident negatives (the model would not flag them) of each rare class in turn, at random.
    n_audit = int(np.floor(config.audit_share * n + 1e-9)) if n > 1 else 0
    if config.audit_share > 0 and n >= 10:
        n_audit = max(n_audit, 1)
    audit: list[tuple[int, int]] = []
    if n_audit and rares:
        taken: set[int] = set()
        for slot in range(n_audit):
            r = rares[slot % len(rares)]
            neg = [int(i) for i in pool_idx[p[pool_idx, r] <= 1 - config.audit_confidence] if int(i) not in taken]
            if neg:
                i = int(rng.choice(neg))
                taken.add(i)
                audit.append((i, r))
    n_main = n - len(audit)
    candidates = np.zeros(len(p), dtype=bool)
    candidates[pool_idx] = True
    candidates[[i for i, _ in audit]] = False
    labelled_idx = np.flatnonzero(labelled)
    emb_n = l2_normalise(emb) if emb is not None else None

    picks: list[Pick] = []
    if counts is not None and needs_cold_start(counts, config.cold_start_k) and emb_n is not None:
        seed = cold_start_batch(emb_n, p, np.flatnonzero(candidates), n_main, counts, labelled_idx,
                                config.cold_start_k, rare_classes=rares, class_names=config.class_names)
        for i, why in seed:
            picks.append(Pick(int(i), _r(combined[i]), {**breakdown(i), **why}))
    else:
        ranked = st.top_k(combined, len(p), ~candidates)
        if config.diversity and emb_n is not None:
            order = diverse_subset(emb_n, ranked, n_main, anchors=(), scores=combined + 1e-3,
                                   shortlist_factor=config.shortlist_factor)
        else:
            order = ranked[:n_main].tolist()
        rank_of = {int(i): r + 1 for r, i in enumerate(ranked)}
        selected = [int(i) for i in order]
        shared: dict[int, int] = {}
        if rares and config.min_rare_share > 0:
            selected, shared = enforce_rare_shares(selected, p, rares, candidates, config.min_rare_share,
                                                   config.rare_threshold, scores=combined, counts=counts,
                                                   target=config.rare_target)
        for d_rank, i in enumerate(selected):
            why = breakdown(i, shared.get(i))
            why["score_rank"] = rank_of.get(i, 0)
            if config.diversity and emb_n is not None:
                why["diversity_rank"] = d_rank + 1
            why["reason"] = "rare share" if i in shared else "uncertain / costly"
            picks.append(Pick(i, _r(combined[i]), why))
        picks.sort(key=lambda pk: -pk.score)
    for i, r in audit:
        why = breakdown(int(i), r)
        why.update(reason="audit", audit="confident negative")
        picks.append(Pick(int(i), _r(combined[i]), why))
    return picks
