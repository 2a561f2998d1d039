"""Diversity inside a batch: k-center greedy on embeddings (Sener & Savarese, 2018).

Greedy k-center repeatedly picks the candidate farthest from everything chosen
so far (and from the already-labelled set), so a batch covers the embedding
space instead of being ten near-duplicates of the most uncertain case.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np

logger = logging.getLogger(__name__)


def l2_normalise(emb) -> np.ndarray:
    """Rows scaled to unit length (cosine geometry); zero rows stay zero."""
    x = np.asarray(emb, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _sq_dist_to(x: np.ndarray, center: np.ndarray, x_sq: np.ndarray) -> np.ndarray:
    return np.maximum(x_sq - 2.0 * (x @ center) + float(center @ center), 0.0)


def k_center_greedy(emb, candidates: Sequence[int], k: int, anchors: Sequence[int] = (),
                    weights: Optional[np.ndarray] = None, first: Optional[int] = None) -> list[int]:
    """Pick ``k`` of ``candidates`` (indices into ``emb``) by greedy k-center.

    Args:
        emb: (N, D) embeddings.
        candidates: indices that may be picked.
        k: how many to pick (fewer when there are fewer candidates).
        anchors: indices already covered (labelled, or picked earlier); distances start from them.
        weights: optional (N,) non-negative informativeness; the next pick maximises
            distance × weight, trading coverage against score (plain k-center when None).
        first: candidate to start with when there are no anchors (default: the
            highest-weight candidate, else the one nearest the candidates' mean).

    Returns:
        the picked indices in pick order.
    """
    cand = np.asarray(list(candidates), dtype=np.int64)
    k = min(int(k), len(cand))
    if k <= 0:
        return []
    x = np.asarray(emb, dtype=np.float32)[cand]
    x_sq = np.einsum("ij,ij->i", x, x)
    w = np.ones(len(cand)) if weights is None else np.maximum(np.asarray(weights, dtype=np.float64)[cand], 1e-9)
    min_d = np.full(len(cand), np.inf)
    anchors = [int(a) for a in anchors]
    full = np.asarray(emb, dtype=np.float32)
    for start in range(0, len(anchors), 2048):
        a = full[anchors[start:start + 2048]]
        d = np.maximum(x_sq[:, None] - 2.0 * x @ a.T + np.einsum("ij,ij->i", a, a)[None, :], 0.0)
        min_d = np.minimum(min_d, d.min(axis=1))
    picked: list[int] = []
    taken = np.zeros(len(cand), dtype=bool)
    if not anchors:
        if first is not None and first in set(cand.tolist()):
            j = int(np.where(cand == first)[0][0])
        elif weights is not None:
            j = int(np.argmax(w))
        else:
            j = int(np.argmin(((x - x.mean(axis=0)) ** 2).sum(axis=1)))
        picked.append(j)
        taken[j] = True
        min_d = _sq_dist_to(x, x[j], x_sq)
    while len(picked) < k:
        gain = np.where(taken, -np.inf, np.sqrt(min_d) * w)
        j = int(np.argmax(gain))
        picked.append(j)
        taken[j] = True
        min_d = np.minimum(min_d, _sq_dist_to(x, x[j], x_sq))
    return [int(cand[j]) for j in picked]


def diverse_subset(emb, ranked: Sequence[int], k: int, anchors: Sequence[int] = (),
                   scores: Optional[np.ndarray] = None, shortlist_factor: int = 5) -> list[int]:
    """k-center greedy over a shortlist of the ``shortlist_factor × k`` best-ranked candidates.

    ``ranked`` is best first; the top candidate always goes in first so the most
    informative case is never lost to diversity. Returns indices in pick order.
    """
    ranked = [int(i) for i in ranked]
    shortlist = ranked[: max(k, shortlist_factor * k)]
    if not shortlist or k <= 0:
        return []
    head = shortlist[0]
    rest = k_center_greedy(emb, shortlist[1:], k - 1, anchors=list(anchors) + [head], weights=scores)
    return [head] + rest
