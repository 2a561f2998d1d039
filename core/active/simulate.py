"""``loupe simulate``: the whole acquisition loop with the npz labels as the oracle.

Honest and fast on a CPU: the pretrained backbone is frozen (its embeddings of
every image are computed once, ``sim_embed.py``), and each round fits only the
classification head — a class-balanced logistic regression on the labels
acquired so far, which is what Loupe's ``frozen`` training mode learns. After
each round the head is scored on the npz *test* split: macro ROC-AUC, the rare
class's average precision and its recall at the model's decision.

Strategies: ``random``, ``least_confidence``, ``margin``, ``entropy``, ``cost``,
``bald`` (MC dropout on the head's input), ``tta`` (noise on the embeddings as
the augmentation), ``default`` (the app's combination, ``acquire.py``) and
``modal`` (modAL's ``uncertainty_sampling`` driving a modAL ``ActiveLearner`` — the
reference tool, run in the same loop).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from core.active.acquire import AcquisitionConfig, select_batch
from core.active.cold_start import representatives, typiclust
from core.errors import LoupeError
from core.progress import ProgressCallback, report
from core.active.names import SIM_STRATEGIES  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)

MC_PASSES = 10


#: How the first ``seed_size`` labels are chosen: the same random draw for every strategy (the fair
#: comparison), k-means representatives, or TypiClust's typical cases of the largest clusters.
STARTS = ("random", "kmeans", "typiclust")


@dataclass
class SimConfig:
    """One simulated run."""

    strategy: str = "default"
    seed_size: int = 20
    batch: int = 20
    rounds: int = 15
    seed: int = 0
    rare_class: Optional[int] = None  # one rare class index (older form); default: the rarest in the training split
    rare_classes: Sequence[int] = ()  # several rare classes (wins over ``rare_class``)
    class_costs: Optional[dict] = None  # {class index: miss cost}; rare classes without one cost ``miss_cost``
    miss_cost: float = 5.0
    c: float = 0.1  # inverse regularisation of the logistic-regression head
    pca: int = 128  # head input: the embeddings' first principal components (0 = all dimensions)
    # The app's own rare-share floor and audit slice (audit picks spend labels on confident negatives: the
    # simulation counts them against the budget like every other label).
    min_rare_share: float = AcquisitionConfig.min_rare_share
    audit_share: float = AcquisitionConfig.audit_share
    start: str = "random"  # the seed set: one of STARTS; "random" is the same draw for every strategy
    options: Optional[dict] = None  # extra AcquisitionConfig fields for the app's strategies (benchmark tuning)


def _head(c: float, seed: int):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, class_weight="balanced", max_iter=2000, random_state=seed)


def _fit_predict(x_lab, y_lab, x_eval: Sequence[np.ndarray], k: int, c: float, seed: int):
    """Fit the head; probabilities for each array in ``x_eval``. One class only → its prior everywhere."""
    classes = np.unique(y_lab)
    if len(classes) < 2:
        prior = np.full(k, 0.5 / max(k - 1, 1))
        if len(classes):
            prior[int(classes[0])] = 0.5
        prior = prior / prior.sum()
        return None, [np.tile(prior, (len(x), 1)) for x in x_eval]
    model = _head(c, seed).fit(x_lab, y_lab)
    outs = []
    for x in x_eval:
        p = np.zeros((len(x), k))
        p[:, model.classes_] = model.predict_proba(x)
        outs.append(p)
    return model, outs


def average_precision(t: np.ndarray, score: np.ndarray) -> float:
    """Average precision, as scikit-learn's ``average_precision_score`` (ties share a threshold), in NumPy.

    Σ over distinct thresholds of (recall step) × precision; 0 when there is no positive.
    """
    t = np.asarray(t, dtype=bool)
    n_pos = int(t.sum())
    if n_pos == 0:
        return 0.0
    order = np.argsort(-np.asarray(score, dtype=np.float64), kind="mergesort")
    s, tt = np.asarray(score, dtype=np.float64)[order], t[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each distinct score
    tp = np.cumsum(tt)[last]
    precision = tp / (last + 1)
    recall_step = np.diff(np.r_[0, tp]) / n_pos
    return float((recall_step * precision).sum())


def roc_auc(t: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC by the rank statistic (ties count one half), as ``roc_auc_score``; 0.5 without both classes."""
    from scipy.stats import rankdata

    t = np.asarray(t, dtype=bool)
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if not n_pos or not n_neg:
        return 0.5
    ranks = rankdata(np.asarray(score, dtype=np.float64))
    return float((ranks[t].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _metrics(y, probs, rares: Sequence[int], names: Sequence[str]) -> dict:
    """Macro ROC-AUC, AP of every class, and the rare classes' mean AP and mean recall at the model's decision."""
    k = probs.shape[1]
    aucs, per_class = [], {}
    pred = probs.argmax(axis=1)
    recalls, aps = [], []
    for j in range(k):
        t = y == j
        if 0 < t.sum() < len(t):
            aucs.append(roc_auc(t, probs[:, j]))
        ap = average_precision(t, probs[:, j])
        per_class[names[j]] = round(ap, 4)
        if j in rares:
            aps.append(ap)
            recalls.append(float((pred[t] == j).mean()) if t.sum() else 0.0)
    return {"macro_auc": round(float(np.mean(aucs)) if aucs else 0.5, 4),
            "rare_ap": round(float(np.mean(aps)) if aps else 0.0, 4),
            "rare_recall": round(float(np.mean(recalls)) if recalls else 0.0, 4),
            "per_class_ap": per_class}


def _stochastic(model, x, kind: str, rng, k: int) -> np.ndarray:
    """(T, N, K) passes: dropout masks on the head's input (bald) or Gaussian noise on it (tta)."""
    out = []
    scale = x.std(axis=0, keepdims=True)
    for _ in range(MC_PASSES):
        if kind == "bald":
            xs = x * (rng.random(x.shape) > 0.2) / 0.8
        else:
            xs = x + rng.normal(0.0, 0.3, x.shape) * scale
        p = np.zeros((len(x), k))
        p[:, model.classes_] = model.predict_proba(xs)
        out.append(p)
    return np.stack(out)


def rare_of(train_y: np.ndarray, k: int, config: SimConfig) -> list[int]:
    """The rare classes of a run: ``rare_classes``, else ``rare_class``, else the rarest class of the pool."""
    if config.rare_classes:
        return [int(r) for r in config.rare_classes]
    if config.rare_class is not None:
        return [int(config.rare_class)]
    counts = np.bincount(train_y, minlength=k)
    return [int(np.argmin(np.where(counts > 0, counts, 1 << 30)))]


def seed_set(emb: np.ndarray, n: int, size: int, start: str, seed: int) -> list[int]:
    """The first ``size`` labels: a random draw (``random``, the same for every strategy given ``seed``),
    k-means representatives (``kmeans``) or TypiClust (``typiclust``)."""
    if start not in STARTS:
        raise LoupeError(f"unknown start '{start}': choose one of {', '.join(STARTS)}")
    size = min(size, n)
    if start == "kmeans":
        return representatives(emb, range(n), size, seed=seed)
    if start == "typiclust":
        return typiclust(emb, range(n), size, seed=seed)
    return np.random.default_rng(seed).choice(n, size=size, replace=False).tolist()


def run_simulation(train_emb: np.ndarray, train_y: np.ndarray, test_emb: np.ndarray, test_y: np.ndarray,
                   config: SimConfig, class_names: Optional[Sequence[str]] = None,
                   progress: Optional[ProgressCallback] = None) -> dict:
    """Simulate ``config.rounds`` acquisition rounds on precomputed embeddings; the CLI.md JSON document.

    Returns ``{"strategy", "rare_class", "rare_classes", "curve": [{"labels", "macro_auc", "rare_ap",
    "rare_recall", "rare_found", "per_class_ap"}], ...}`` with one curve point after the seed set and after
    every round, measured on ``test_emb``/``test_y`` (pass the validation split to tune settings).
    Every strategy starts from the same seed set for a given ``config.seed`` and ``config.start``.
    Raises LoupeError for an unknown strategy or start, or an empty pool.
    """
    from sklearn.preprocessing import StandardScaler

    if config.strategy not in SIM_STRATEGIES:
        raise LoupeError(f"unknown strategy '{config.strategy}': choose one of {', '.join(SIM_STRATEGIES)}")
    if len(train_y) == 0:
        raise LoupeError("the npz has no training images to draw from")
    k = int(max(train_y.max(), test_y.max() if len(test_y) else 0)) + 1
    k = max(k, 2, len(class_names or ()))
    names = list(class_names) if class_names else [str(i) for i in range(k)]
    names += [str(i) for i in range(len(names), k)]
    rares = rare_of(train_y, k, config)
    bad = [r for r in rares if not 0 <= r < k]
    if bad:
        raise LoupeError(f"rare class index {bad[0]} is outside the {k} classes")
    scaler = StandardScaler().fit(train_emb)
    x_pool, x_test = scaler.transform(train_emb), scaler.transform(test_emb)
    if config.pca and x_pool.shape[1] > config.pca and len(x_pool) > config.pca:
        # Unsupervised, on the pool only (allowed: the pool is unlabelled data we have); makes each
        # round's head fit ~10x faster with no loss in AP on these features.
        from sklearn.decomposition import PCA

        pca = PCA(n_components=config.pca, random_state=0).fit(x_pool)
        x_pool, x_test = pca.transform(x_pool), pca.transform(x_test)
        sd = x_pool.std(axis=0)
        sd = np.where(sd > 1e-8, sd, 1.0)  # a component without variance (tiny pools) stays as it is
        x_pool, x_test = x_pool / sd, x_test / sd
    rng = np.random.default_rng([config.seed, 1])
    n = len(train_y)
    labelled = np.zeros(n, dtype=bool)
    first = seed_set(train_emb, n, config.seed_size, config.start, config.seed)
    labelled[first] = True
    is_rare = np.isin(train_y, rares)
    curve = []
    learner = None
    for r in range(config.rounds + 1):
        lab = np.flatnonzero(labelled)
        model, (p_pool, p_test) = _fit_predict(x_pool[lab], train_y[lab], [x_pool, x_test], k, config.c, config.seed)
        point = {"labels": int(labelled.sum()), **_metrics(test_y, p_test, rares, names),
                 "rare_found": int((labelled & is_rare).sum())}
        curve.append(point)
        report(progress, r, config.rounds, f"{config.strategy}: {int(labelled.sum())} labels")
        if r == config.rounds or labelled.all():
            break
        picks = _acquire(config, model, p_pool, x_pool, train_emb, train_y, labelled, k, rares, names, rng, r)
        if config.strategy == "modal":
            picks, learner = _modal_query(learner, x_pool, train_y, labelled, config, rng)
        labelled[picks] = True
    return {"strategy": config.strategy, "rare_class": names[rares[0]], "rare_classes": [names[r] for r in rares],
            "seed": config.seed, "seed_size": len(first), "batch": config.batch, "start": config.start,
            "curve": curve}


def _acquire(config, model, p_pool, x_pool, emb, y, labelled, k, rares, names, rng, round_no) -> list[int]:
    name = config.strategy
    if name == "modal":
        return []
    if model is None and name != "random":  # one class so far: no model to ask, cover the space instead
        name = "default"
    stochastic = _stochastic(model, x_pool, name, rng, k) if name in ("bald", "tta") else None
    counts = np.bincount(y[labelled], minlength=k).tolist()
    acq = AcquisitionConfig(strategy=name, n=config.batch, rare_index=rares[0], rare_classes=tuple(rares),
                            class_costs=config.class_costs, miss_cost=config.miss_cost,
                            min_rare_share=config.min_rare_share, audit_share=config.audit_share,
                            seed=config.seed * 1000 + round_no, class_names=tuple(names),
                            **(config.options or {}))
    picks = select_batch(p_pool, emb, labelled, acq, counts=counts, stochastic=stochastic)
    return [p.index for p in picks]


def _modal_query(learner, x_pool, y, labelled, config, rng):
    """One round of modAL's ActiveLearner + uncertainty_sampling (random picks while only one class is known)."""
    from modAL.models import ActiveLearner
    from modAL.uncertainty import uncertainty_sampling

    lab = np.flatnonzero(labelled)
    pool = np.flatnonzero(~labelled)
    if len(np.unique(y[lab])) < 2:
        return rng.choice(pool, size=min(config.batch, len(pool)), replace=False).tolist(), None
    learner = ActiveLearner(estimator=_head(config.c, config.seed), query_strategy=uncertainty_sampling,
                            X_training=x_pool[lab], y_training=y[lab])
    idx, _ = learner.query(x_pool[pool], n_instances=min(config.batch, len(pool)))
    return pool[np.asarray(idx, dtype=np.int64)].tolist(), learner


def group_holdout(labels: np.ndarray, groups: Optional[np.ndarray], share: float = 0.2, seed: int = 0) -> np.ndarray:
    """(N,) bool mask of a held-out share of the rows, drawn by *group* (a lesion or patient id) and stratified
    by each group's first label, so no group has rows on both sides. Without groups every row is its own group."""
    labels = np.asarray(labels)
    groups = np.arange(len(labels)).astype(str) if groups is None else np.asarray(groups).astype(str)
    rng = np.random.default_rng(seed)
    first: dict[str, int] = {}
    for g, y in zip(groups, labels):
        first.setdefault(g, int(y))
    held: set[str] = set()
    for cls in sorted(set(first.values())):
        members = sorted(g for g, y in first.items() if y == cls)
        rng.shuffle(members)
        held.update(members[: int(round(share * len(members)))])
    return np.array([g in held for g in groups], dtype=bool)


def npz_groups(npz_path: str | Path, split: str) -> Optional[np.ndarray]:
    """The npz's ``{split}_groups`` array (lesion or patient ids) when it has one, read without the images."""
    with np.load(npz_path) as data:
        key = f"{split}_groups"
        return np.asarray(data[key]).astype(str) if key in data.files else None


def simulate(npz_path: str | Path, config: SimConfig, cache_dir: str | Path, class_names: Optional[Sequence[str]] = None,
             arch: str = "efficientnet_lite0", pretrained: str = "default", size: int = 224,
             torch_cache_dir: Optional[str] = None, progress: Optional[ProgressCallback] = None,
             eval_split: str = "test") -> dict:
    """:func:`run_simulation` on a MedMNIST npz: embeddings computed once (cached in ``cache_dir``).

    ``eval_split="val"`` scores the curve on the npz's validation split (for choosing settings); an npz
    without ``val_*`` arrays gets one held out of ``train_*`` by :func:`group_holdout` — by ``train_groups``
    when the npz has them, so a lesion's photographs stay on one side — and the pool shrinks accordingly.
    Raises LoupeError when the npz is missing or malformed.
    """
    from core.active.sim_embed import npz_embeddings

    if eval_split not in ("test", "val"):
        raise LoupeError(f"unknown evaluation split '{eval_split}': choose test or val")
    data = npz_embeddings(npz_path, cache_dir, arch, pretrained, size, torch_cache_dir)
    train_emb, train_y = data["train_emb"], data["train_labels"]
    eval_emb, eval_y = data["test_emb"], data["test_labels"]
    if eval_split == "val":
        if "val_emb" in data:
            eval_emb, eval_y = data["val_emb"], data["val_labels"]
        else:
            held = group_holdout(train_y, npz_groups(npz_path, "train"), 0.2, seed=0)
            eval_emb, eval_y = train_emb[held], train_y[held]
            train_emb, train_y = train_emb[~held], train_y[~held]
    result = run_simulation(train_emb, train_y, eval_emb, eval_y, config, class_names, progress)
    result["eval_split"] = eval_split
    return result
