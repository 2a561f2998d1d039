"""The queue builder: one acquisition batch from probabilities and embeddings, with a why per pick.

``select_batch`` is pure NumPy: it takes the model's outputs for every image, a
mask of the labelled ones and an :class:`AcquisitionConfig`, and returns
:class:`Pick` objects (index, score, why-breakdown) in rank order. The
``default`` strategy combines, in this order:

1. cold start (``cold_start.py``) while a class has fewer than ``cold_start_k`` labels;
2. a score = mean of normalised entropy and normalised cost-sensitive risk
   (``rare.bayes_risk``: missing the rare class costs ``miss_cost``);
3. k-center greedy on the embeddings over a shortlist of the best-scored cases,
   weighted by the score, so the batch is diverse;
4. a minimum share of likely-rare cases (P(rare) ≥ ``rare_threshold``);
5. an audit slice: a small random share of confident negatives, so the miss rate
   among cases the model would wave through can be estimated honestly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from core.active import strategies as st
from core.active.cold_start import cold_start_batch, needs_cold_start
from core.active.diversity import diverse_subset, l2_normalise
from core.active.rare import bayes_risk, default_cost_matrix, enforce_rare_share, miss_cost_score

logger = logging.getLogger(__name__)


@dataclass
class AcquisitionConfig:
    """Options of one acquisition (the app passes workspace settings in; core reads none)."""

    strategy: str = "default"
    n: int = 20
    rare_index: Optional[int] = None
    cost: Optional[np.ndarray] = None  # (K, K) C[true, decided]; default from miss_cost
    miss_cost: float = 5.0
    min_rare_share: float = 0.2
    rare_threshold: float = 0.5
    audit_share: float = 0.05
    audit_confidence: float = 0.95
    diversity: bool = True
    shortlist_factor: int = 2  # k-center over the 2n best: 5n measured worse on PneumoniaMNIST
    cold_start_k: int = 5
    seed: int = 0
    class_names: Sequence[str] = field(default_factory=tuple)


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
    """Every single-matrix score of the ``default`` strategy: entropy, margin, risk, P(rare), miss cost."""
    p = np.asarray(probs, dtype=np.float64)
    k = p.shape[1]
    cost = config.cost if config.cost is not None else default_cost_matrix(k, config.rare_index, config.miss_cost)
    out = {"entropy": st.entropy(p, normalise=True), "margin": st.margin(p),
           "least_confidence": st.least_confidence(p), "risk": bayes_risk(p, cost)}
    # The largest risk any probability vector can have: the risk at the cost-indifference point.
    worst = bayes_risk(np.eye(k), cost).max()
    out["risk_norm"] = out["risk"] / max(_max_risk(cost), worst, 1e-12)
    if config.rare_index is not None:
        out["p_rare"] = p[:, config.rare_index]
        out["miss_cost"] = miss_cost_score(p, config.rare_index, cost)
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
                 counts: Optional[Sequence[int]] = None, stochastic: Optional[np.ndarray] = None) -> list[Pick]:
    """Choose ``config.n`` unlabelled cases for labelling.

    Args:
        probs: (N, K) probabilities of the active model for every image.
        emb: (N, D) embeddings (penultimate layer), or None (no diversity / cold start by coverage).
        labelled: (N,) bool mask of images that already have a confirmed label.
        config: the strategy and its options.
        counts: confirmed labels per class (length K) for the cold start; None skips it.
        stochastic: (T, N, K) stochastic passes for ``bald`` (MC dropout) and ``tta``.

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
            if name == "cost" and "p_rare" in comp:
                why.update(p_rare=_r(comp["p_rare"][i]), expected_miss_cost=_r(comp["miss_cost"][i]))
            picks.append(Pick(int(i), _r(scores[i]), why))
        return picks
    return _default(p, emb, labelled, config, counts, comp, n)


def _default(p, emb, labelled, config, counts, comp, n) -> list[Pick]:
    rng = np.random.default_rng(config.seed)
    pool_idx = np.flatnonzero(~labelled)
    rare = config.rare_index
    rare_name = _name(config, rare)
    combined = 0.5 * comp["entropy"] + 0.5 * comp["risk_norm"]
    cost = config.cost if config.cost is not None else default_cost_matrix(p.shape[1], rare, config.miss_cost)

    def breakdown(i: int) -> dict:
        why = {"entropy": _r(comp["entropy"][i]), "risk": _r(comp["risk"][i]), "combined": _r(combined[i])}
        if rare is not None:
            others = [j for j in range(p.shape[1]) if j != rare]
            why.update(rare_class=rare_name, p_rare=_r(comp["p_rare"][i]),
                       miss_cost=_r(np.mean(cost[rare, others]) if others else 0.0),
                       expected_miss_cost=_r(comp["miss_cost"][i]))
        return why

    # Audit slice: confident negatives (the model would not flag them), drawn at random.
    n_audit = int(np.floor(config.audit_share * n + 1e-9)) if n > 1 else 0
    if config.audit_share > 0 and n >= 10:
        n_audit = max(n_audit, 1)
    audit: list[int] = []
    if n_audit and rare is not None:
        confident_neg = pool_idx[(comp["p_rare"][pool_idx] <= 1 - config.audit_confidence)]
        if len(confident_neg):
            audit = rng.choice(confident_neg, size=min(n_audit, len(confident_neg)), replace=False).tolist()
    n_main = n - len(audit)
    candidates = np.zeros(len(p), dtype=bool)
    candidates[pool_idx] = True
    candidates[audit] = False
    labelled_idx = np.flatnonzero(labelled)
    emb_n = l2_normalise(emb) if emb is not None else None

    picks: list[Pick] = []
    if counts is not None and needs_cold_start(counts, config.cold_start_k) and emb_n is not None:
        seed = cold_start_batch(emb_n, p, np.flatnonzero(candidates), n_main, counts, labelled_idx,
                                config.cold_start_k, rare, class_names=config.class_names)
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
        shared: set[int] = set()
        if rare is not None and config.min_rare_share > 0:
            selected, shared = enforce_rare_share(selected, comp["p_rare"], candidates, config.min_rare_share,
                                                  config.rare_threshold, scores=combined)
        for d_rank, i in enumerate(selected):
            why = breakdown(i)
            why["score_rank"] = rank_of.get(i, 0)
            if config.diversity and emb_n is not None:
                why["diversity_rank"] = d_rank + 1
            why["reason"] = "rare share" if i in shared else "uncertain / costly"
            picks.append(Pick(i, _r(combined[i]), why))
        picks.sort(key=lambda pk: -pk.score)
    for i in audit:
        why = breakdown(int(i))
        why.update(reason="audit", audit="confident negative")
        picks.append(Pick(int(i), _r(combined[i]), why))
    return picks
