"""Cold start: a diverse, class-covering seed batch while some class has fewer than k labels.

Before the model has seen enough of every class its uncertainty is not worth
much, so the first batches aim for coverage instead: for each class that is
short of labels, the cases the model finds most likely to be that class (picked
far apart from each other), then k-center greedy over everything for the rest of
the batch. It works with zero labels, one class, or a model that predicts only
one class: it never divides by a count and never needs two classes.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np

from core.active.diversity import k_center_greedy

logger = logging.getLogger(__name__)

DEFAULT_MIN_LABELS = 5


def short_classes(counts: Sequence[int], k: int = DEFAULT_MIN_LABELS) -> list[int]:
    """Indices of the classes with fewer than ``k`` confirmed labels."""
    return [i for i, c in enumerate(counts) if int(c) < int(k)]


def needs_cold_start(counts: Sequence[int], k: int = DEFAULT_MIN_LABELS) -> bool:
    """True when any class has fewer than ``k`` labels (or there are no classes yet)."""
    return not len(counts) or bool(short_classes(counts, k))


def cold_start_batch(emb, probs, candidates: Sequence[int], n: int, counts: Sequence[int],
                     labelled: Sequence[int] = (), k: int = DEFAULT_MIN_LABELS,
                     rare_index: Optional[int] = None, share_per_class: float = 0.5,
                     class_names: Optional[Sequence[str]] = None,
                     rare_classes: Sequence[int] = ()) -> list[tuple[int, dict]]:
    """A seed batch of up to ``n`` candidates with a why-breakdown each.

    Args:
        emb: (N, D) embeddings (normalised or not; Euclidean distance).
        probs: (N, K) model probabilities, or None when no model has been trained.
        candidates: selectable indices (unlabelled images).
        n: batch size.
        counts: confirmed labels per class (length K; may be all zero).
        labelled: indices already labelled (k-center starts from them).
        k: labels a class needs before the cold start ends.
        rare_index: the rare class, served first (one rare class; older form).
        share_per_class: at most this share of the batch goes to class-targeted picks
            (split evenly between the short classes); the rest is pure k-center coverage.
        class_names: for the why text.
        rare_classes: several rare classes, served first in this order (wins over ``rare_index``).

    Returns:
        [(index, why)] in rank order.
    """
    cand = [int(i) for i in candidates]
    n = min(int(n), len(cand))
    if n <= 0:
        return []
    chosen: list[tuple[int, dict]] = []
    taken: set[int] = set()
    short = short_classes(counts, k) if probs is not None and len(counts) > 1 else []
    first = [int(r) for r in rare_classes] if len(rare_classes) else ([] if rare_index is None else [rare_index])
    for r in reversed(first):
        if r in short:
            short.remove(r)
            short.insert(0, r)
    p = None if probs is None else np.asarray(probs, dtype=np.float64)
    if short and p is not None and p.shape[1] == len(counts):
        # A class the model gives no probability anywhere (no label yet) cannot be targeted: coverage finds it.
        short = [c for c in short if float(p[cand, c].max(initial=0.0)) > 1e-9] if cand else []
    if short and p is not None and p.shape[1] == len(counts):
        budget = max(1, int(round(n * share_per_class)))
        per_class = max(1, budget // len(short))
        for c in short:
            if len(chosen) >= budget:
                break
            pool = [i for i in cand if i not in taken]
            if not pool:
                break
            order = np.asarray(pool)[np.argsort(-p[pool, c], kind="stable")]
            shortlist = order[: max(per_class * 4, per_class)].tolist()
            picks = k_center_greedy(emb, shortlist, per_class, weights=p[:, c] + 1e-3, first=shortlist[0])
            name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
            for i in picks:
                taken.add(i)
                chosen.append((i, {"reason": "cold start", "target_class": name,
                                   f"P({name})": round(float(p[i, c]), 4),
                                   "labels_of_class": int(counts[c])}))
    rest = [i for i in cand if i not in taken]
    anchors = list(labelled) + [i for i, _ in chosen]
    if anchors:
        coverage = k_center_greedy(emb, rest, n - len(chosen), anchors=anchors)
    else:
        coverage = representatives(emb, rest, n - len(chosen))
    for rank, i in enumerate(coverage):
        chosen.append((i, {"reason": "cold start", "coverage_rank": rank + 1}))
    logger.info("cold start batch: %d picks (%d class-targeted; short classes %s)", len(chosen), len(taken), short)
    return chosen


def representatives(emb, candidates: Sequence[int], n: int, seed: int = 0) -> list[int]:
    """``n`` typical, mutually distant candidates: the one nearest each k-means centroid.

    Used when nothing is labelled: k-center greedy alone starts with outliers,
    while cluster representatives are typical cases spread over the data.
    """
    from sklearn.cluster import MiniBatchKMeans

    cand = np.asarray(list(candidates), dtype=np.int64)
    n = min(int(n), len(cand))
    if n <= 0:
        return []
    if n == len(cand):
        return cand.tolist()
    x = np.asarray(emb, dtype=np.float32)[cand]
    km = MiniBatchKMeans(n_clusters=n, random_state=seed, n_init=3, batch_size=1024).fit(x)
    picked: list[int] = []
    used: set[int] = set()
    for center in km.cluster_centers_:
        order = np.argsort(((x - center) ** 2).sum(axis=1))
        j = next((int(o) for o in order if int(o) not in used), None)
        if j is not None:
            used.add(j)
            picked.append(int(cand[j]))
    return picked


def typicality(x: np.ndarray, knn: int = 20) -> np.ndarray:
    """(n,) 1 / mean Euclidean distance to the ``knn`` nearest other rows: high in dense, typical regions."""
    n = len(x)
    if n <= 1:
        return np.ones(n)
    k = min(knn, n - 1)
    sq = np.einsum("ij,ij->i", x, x)
    out = np.empty(n)
    for start in range(0, n, 1024):
        block = x[start:start + 1024]
        d = np.maximum(sq[start:start + 1024, None] - 2.0 * block @ x.T + sq[None, :], 0.0)
        d[np.arange(len(block)), np.arange(start, start + len(block))] = np.inf
        near = np.sqrt(np.partition(d, k - 1, axis=1)[:, :k])
        out[start:start + len(block)] = 1.0 / (near.mean(axis=1) + 1e-12)
    return out


def typiclust(emb, candidates: Sequence[int], n: int, labelled: Sequence[int] = (), seed: int = 0,
              knn: int = 20, min_cluster: int = 5, max_clusters: int = 500) -> list[int]:
    """TypiClust (Hacohen, Dekel & Weinshall, ICML 2022): the most typical case of each of the largest clusters
    that hold no labelled case yet.

    The candidates and the labelled cases are clustered by k-means into ``len(labelled) + n`` clusters
    (at most ``max_clusters``); each pick takes the cluster with the fewest labelled cases, largest first, and
    within it the case of highest :func:`typicality`. Clusters smaller than ``min_cluster`` are used last.
    A low-budget cold start: typical cases teach a small model more than outliers do.
    """
    from sklearn.cluster import MiniBatchKMeans

    cand = np.asarray(list(candidates), dtype=np.int64)
    lab = np.asarray(list(labelled), dtype=np.int64)
    n = min(int(n), len(cand))
    if n <= 0:
        return []
    if n == len(cand):
        return cand.tolist()
    every = np.concatenate([cand, lab])
    x = np.asarray(emb, dtype=np.float32)[every]
    n_clusters = int(min(max_clusters, len(lab) + n, len(every)))
    km = MiniBatchKMeans(n_clusters=n_clusters, random_state=seed, n_init=3, batch_size=1024).fit(x)
    assign = km.labels_
    is_cand = np.zeros(len(every), dtype=bool)
    is_cand[: len(cand)] = True
    size = np.bincount(assign, minlength=n_clusters)
    covered = np.bincount(assign[~is_cand], minlength=n_clusters)
    typ = np.zeros(len(every))
    for c in range(n_clusters):
        members = np.flatnonzero(assign == c)
        typ[members] = typicality(x[members], knn)
    taken = np.zeros(len(every), dtype=bool)
    picked: list[int] = []
    while len(picked) < n:
        free = np.array([((assign == c) & is_cand & ~taken).any() for c in range(n_clusters)])
        if not free.any():
            break
        small = size < min_cluster
        order = np.lexsort((-size, covered, small))  # uncovered first, then big, small clusters last
        c = next(int(o) for o in order if free[o])
        members = np.flatnonzero((assign == c) & is_cand & ~taken)
        j = int(members[np.argmax(typ[members])])
        taken[j] = True
        covered[c] += 1
        picked.append(int(every[j]))
    return picked
