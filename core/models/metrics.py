"""Classification metrics for ``loupe evaluate``: per-class rates, AUC/AP, kappa, bootstrap CIs.

Pure functions on numpy arrays (numpy + scikit-learn), no Qt. Conventions:

* multi-class: ``y_true`` is ``(n,)`` integer class indices and ``probs`` ``(n, k)``;
* multi-label: ``y_true`` is an ``(n, k)`` 0/1 matrix and ``probs`` ``(n, k)`` per-label probabilities.

Every value that is undefined on the data at hand (AUC with one class present, sensitivity with
no positives, ...) is ``None`` (JSON ``null``): never NaN, never an exception.
Calibration (ECE, reliability curve, temperature scaling) lives in :mod:`core.models.calibration`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Optional

import numpy as np

from core.models.calibration import brier_score, expected_calibration_error

logger = logging.getLogger(__name__)

SMALL_N = 30  # fewer positives or negatives than this: estimates are too noisy to trust alone


def _num(x):
    """float(x), or None when x is None or not finite (JSON has no NaN)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _ratio(a, b):
    return float(a) / float(b) if b else None


def _check(y_true, probs, multilabel: bool) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1 and not multilabel:
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2:
        raise ValueError(f"probabilities must be a (n, k) array, got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("probabilities contain NaN or infinite values")
    y = np.asarray(y_true)
    if multilabel:
        if y.shape != p.shape:
            raise ValueError(f"multi-label y_true {y.shape} and probs {p.shape} differ in shape")
        if y.size and not np.isin(y, (0, 1)).all():
            raise ValueError("multi-label y_true must contain only 0 and 1")
        return y.astype(np.int64), p
    y = y.ravel().astype(np.int64)
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels but {len(p)} rows of probabilities")
    if len(y) and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(f"class indices must lie in 0..{p.shape[1] - 1}")
    return y, p


def one_vs_rest(y_true, n_classes: int) -> np.ndarray:
    """An ``(n, k)`` 0/1 matrix: unchanged for multi-label input, one-hot for class indices."""
    y = np.asarray(y_true)
    if y.ndim == 2:
        return y.astype(np.int64)
    out = np.zeros((len(y), n_classes), dtype=np.int64)
    out[np.arange(len(y)), y.astype(np.int64)] = 1
    return out


def _threshold_vector(thresholds, classes: Sequence[str], default):
    """Per-class thresholds as a float array; NaN where a class has none."""
    t = np.full(len(classes), np.nan if default is None else float(default))
    if thresholds is None:
        return t
    if isinstance(thresholds, Mapping):
        unknown = set(thresholds) - set(classes)
        if unknown:
            raise ValueError(f"thresholds for unknown classes: {sorted(unknown)}")
        items = [(classes.index(c), v) for c, v in thresholds.items()]
    else:
        if len(thresholds) != len(classes):
            raise ValueError(f"{len(thresholds)} thresholds for {len(classes)} classes")
        items = list(enumerate(thresholds))
    for i, v in items:
        if v is not None:
            t[i] = float(v)
    return t


def predict(probs, thresholds=None, multilabel: bool = False) -> np.ndarray:
    """Turn probabilities into predictions.

    Multi-label: ``(n, k)`` 0/1 matrix, label c predicted when p_c >= threshold_c (default 0.5).
    Multi-class: ``(n,)`` class indices. Without thresholds this is the argmax. With per-class
    thresholds (an array with NaN, or a sequence with None, for classes that have none) the
    rare-class operating rule applies: the classes with p_c >= threshold_c are candidates, the one
    with the highest p_c / threshold_c wins; when no class passes, the argmax.
    """
    p = np.asarray(probs, dtype=np.float64)
    k = p.shape[1]
    t = np.array([np.nan if v is None else float(v) for v in thresholds], dtype=np.float64) \
        if thresholds is not None else np.full(k, np.nan)
    if multilabel:
        t = np.where(np.isnan(t), 0.5, t)
        return (p >= t).astype(np.int64)
    pred = p.argmax(axis=1)
    has = ~np.isnan(t)
    if has.any():
        safe_t = np.where(has, np.maximum(t, 1e-12), 1.0)
        ratio = np.where(has & (p >= np.where(has, t, np.inf)), p / safe_t, -np.inf)
        passing = np.isfinite(ratio).any(axis=1)
        pred = np.where(passing, ratio.argmax(axis=1), pred)
    return pred


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """``(k, k)`` integer counts, rows = true class, columns = predicted class."""
    y, q = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    return np.bincount(y * n_classes + q, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _kappa_from_confusion(cm: np.ndarray, weights: np.ndarray):
    n = cm.sum()
    if n == 0:
        return None
    expected = np.outer(cm.sum(axis=1), cm.sum(axis=0)) / n
    denom = (weights * expected).sum()
    if denom <= 0:  # both raters used one and the same category: chance agreement is total
        return None
    return _num(1.0 - (weights * cm).sum() / denom)


def cohen_kappa(a, b, n_classes: int | None = None):
    """Unweighted Cohen's kappa between two integer labelings (e.g. truth and prediction).

    Returns a float in [-1, 1], or ``None`` when undefined (no samples, or both labelings use a
    single and identical class so that chance agreement is 1).
    """
    a, b = np.asarray(a, dtype=np.int64).ravel(), np.asarray(b, dtype=np.int64).ravel()
    if len(a) != len(b):
        raise ValueError(f"labelings have different lengths: {len(a)} and {len(b)}")
    if len(a) == 0:
        return None
    k = n_classes or int(max(a.max(), b.max())) + 1
    return _kappa_from_confusion(confusion_matrix(a, b, k), 1.0 - np.eye(k))


def quadratic_weighted_kappa(a, b, n_levels: int):
    """Quadratic-weighted kappa between two ordinal ratings in ``0..n_levels - 1`` (severity grades).

    Disagreement weight (i - j)^2 / (n_levels - 1)^2. Returns ``None`` when undefined (no samples,
    or a single level used by both). Raises ``ValueError`` for ratings outside the levels.
    """
    a, b = np.asarray(a, dtype=np.int64).ravel(), np.asarray(b, dtype=np.int64).ravel()
    if len(a) != len(b):
        raise ValueError(f"ratings have different lengths: {len(a)} and {len(b)}")
    if len(a) == 0 or n_levels < 2:
        return None
    if min(a.min(), b.min()) < 0 or max(a.max(), b.max()) >= n_levels:
        raise ValueError(f"ratings must lie in 0..{n_levels - 1}")
    i, j = np.meshgrid(np.arange(n_levels), np.arange(n_levels), indexing="ij")
    w = (i - j) ** 2 / (n_levels - 1) ** 2
    return _kappa_from_confusion(confusion_matrix(a, b, n_levels), w)


def binary_auc(y, scores):
    """ROC AUC of scores for a 0/1 target; ``None`` when only one class is present."""
    y = np.asarray(y)
    if len(y) == 0 or y.min() == y.max():
        return None
    from sklearn.metrics import roc_auc_score  # lazy: sklearn costs ~2 s of start-up before a first prediction

    return _num(roc_auc_score(y, scores))


def binary_ap(y, scores):
    """Average precision of scores for a 0/1 target; ``None`` when there are no positives."""
    y = np.asarray(y)
    if len(y) == 0 or y.max() == 0:
        return None
    from sklearn.metrics import average_precision_score

    return _num(average_precision_score(y, scores))


def binary_rates(y, pred) -> dict:
    """Counts and rates of a binary prediction: tp, fp, tn, fn, sensitivity, specificity, precision, f1."""
    y, pred = np.asarray(y).astype(bool), np.asarray(pred).astype(bool)
    tp, fp = int(np.sum(y & pred)), int(np.sum(~y & pred))
    fn, tn = int(np.sum(y & ~pred)), int(np.sum(~y & ~pred))
    return {
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "sensitivity": _ratio(tp, tp + fn), "specificity": _ratio(tn, tn + fp),
        "precision": _ratio(tp, tp + fp), "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }


def bootstrap_binary(y, scores, pred, n_boot: int = 1000, seed=0) -> dict:
    """Percentile 95 % bootstrap CIs of sensitivity, specificity and AUC for one binary problem.

    Resampling is stratified: positives and negatives are resampled separately, keeping their
    counts, so every resample contains both classes whenever the data do. Vectorised: AUC per
    resample comes from weighted Mann-Whitney counts over sorted negatives (ties count half).
    Returns ``{"sensitivity": [lo, hi] | None, "specificity": ..., "auc": ...}``; deterministic for a seed.
    """
    y = np.asarray(y).astype(bool)
    s, pred = np.asarray(scores, dtype=np.float64), np.asarray(pred).astype(bool)
    out = {"sensitivity": None, "specificity": None, "auc": None}
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    n_pos, n_neg = len(pos), len(neg)
    if n_boot <= 0 or (n_pos == 0 and n_neg == 0):
        return out
    rng = np.random.default_rng(seed)

    def counts(m: int) -> np.ndarray:  # (n_boot, m): times each item is drawn in each resample
        draws = rng.integers(0, m, size=(n_boot, m)) + np.arange(n_boot)[:, None] * m
        return np.bincount(draws.ravel(), minlength=n_boot * m).reshape(n_boot, m).astype(np.float64)

    def ci(values: np.ndarray) -> list[float]:
        lo, hi = np.percentile(values, [2.5, 97.5])
        return [float(lo), float(hi)]

    w_pos = counts(n_pos) if n_pos else None
    w_neg = counts(n_neg) if n_neg else None
    if n_pos:
        out["sensitivity"] = ci(w_pos @ pred[pos].astype(np.float64) / n_pos)
    if n_neg:
        out["specificity"] = ci(w_neg @ (~pred[neg]).astype(np.float64) / n_neg)
    if n_pos and n_neg:
        order = np.argsort(s[neg], kind="stable")
        s_neg = s[neg][order]
        cum = np.concatenate([np.zeros((n_boot, 1)), np.cumsum(w_neg[:, order], axis=1)], axis=1)
        lo_i = np.searchsorted(s_neg, s[pos], side="left")
        hi_i = np.searchsorted(s_neg, s[pos], side="right")
        below = 0.5 * (cum[:, lo_i] + cum[:, hi_i])  # (n_boot, n_pos): negatives beaten, ties half
        out["auc"] = ci(np.sum(w_pos * below, axis=1) / (n_pos * n_neg))
    return out


def _small_n_warning(name: str, n_pos: int, n_neg: int):
    parts = []
    if n_pos < SMALL_N:
        parts.append(f"{n_pos} positive{'s' if n_pos != 1 else ''}")
    if n_neg < SMALL_N:
        parts.append(f"{n_neg} negative{'s' if n_neg != 1 else ''}")
    if not parts:
        return None
    return (f"'{name}' has only {' and '.join(parts)} (fewer than {SMALL_N}); "
            f"its sensitivity, specificity and AUC are imprecise — read the 95% intervals.")


def evaluate(y_true, probs, classes: Sequence[str], thresholds=None, n_boot: int = 1000,
             seed: int = 0, multilabel: bool = False) -> dict:
    """All evaluation metrics as one JSON-ready dict (the ``loupe evaluate`` contract).

    Takes ``y_true`` (class indices, or an ``(n, k)`` 0/1 matrix when ``multilabel``), ``probs``
    ``(n, k)``, the class names, optional per-class ``thresholds`` (a dict by class name or a
    sequence; see :func:`predict` for the rule), the number of bootstrap resamples and its seed.

    Returns the contract keys ``n, accuracy, macro_auc, kappa, ece, confusion, classes, per_class``
    (per class: ``n`` positives, ``sensitivity, specificity, precision, f1, auc, ap`` and
    ``ci95: {sensitivity, auc, specificity}``) plus ``brier, balanced_accuracy, macro_ap, multilabel``
    and per class ``n_negative, threshold, brier, small_n, warning``. Multi-label: ``accuracy`` is
    exact-match accuracy, ``kappa`` the mean per-label kappa, ``balanced_accuracy`` the mean of
    per-label (sensitivity + specificity) / 2, and ``confusion[i][j]`` counts samples with true
    label i and predicted label j (the 2x2 tables are in ``per_class[c]["counts"]``).
    Undefined values are ``None``. Raises ``ValueError`` on inconsistent shapes or labels.
    """
    classes = [str(c) for c in classes]
    y, p = _check(y_true, probs, multilabel)
    n, k = p.shape[0], p.shape[1]
    if k != len(classes):
        raise ValueError(f"{len(classes)} class names for {k} probability columns")
    t = _threshold_vector(thresholds, classes, 0.5 if multilabel else None)
    pred = predict(p, [None if np.isnan(v) else v for v in t], multilabel)
    y_bin = one_vs_rest(y, k)
    pred_bin = pred if multilabel else one_vs_rest(pred, k)

    per_class, kappas, bal = {}, [], []
    for c, name in enumerate(classes):
        rates = binary_rates(y_bin[:, c], pred_bin[:, c])
        n_pos = int(y_bin[:, c].sum())
        n_neg = n - n_pos
        boot = bootstrap_binary(y_bin[:, c], p[:, c], pred_bin[:, c], n_boot, seed=[seed, c])
        warning = _small_n_warning(name, n_pos, n_neg)
        per_class[name] = {
            "n": n_pos, "n_negative": n_neg,
            "sensitivity": rates["sensitivity"], "specificity": rates["specificity"],
            "precision": rates["precision"], "f1": rates["f1"],
            "auc": binary_auc(y_bin[:, c], p[:, c]), "ap": binary_ap(y_bin[:, c], p[:, c]),
            "ci95": boot,
            "threshold": None if np.isnan(t[c]) else float(t[c]),
            "brier": _num(np.mean((p[:, c] - y_bin[:, c]) ** 2)) if n else None,
            "counts": {key: rates[key] for key in ("tp", "fp", "tn", "fn")},
            "small_n": warning is not None, "warning": warning,
        }
        if warning:
            logger.info(warning)
        if multilabel:
            kappas.append(cohen_kappa(y_bin[:, c], pred_bin[:, c], 2))
            if rates["sensitivity"] is not None and rates["specificity"] is not None:
                bal.append(0.5 * (rates["sensitivity"] + rates["specificity"]))
        elif rates["sensitivity"] is not None:
            bal.append(rates["sensitivity"])

    if multilabel:
        accuracy = _num(np.mean(np.all(pred == y, axis=1))) if n else None
        confusion = y_bin.T @ pred_bin
        defined = [x for x in kappas if x is not None]
        kappa = float(np.mean(defined)) if defined else None
    else:
        accuracy = _num(np.mean(pred == y)) if n else None
        confusion = confusion_matrix(y, pred, k)
        kappa = cohen_kappa(y, pred, k)

    aucs = [v["auc"] for v in per_class.values() if v["auc"] is not None]
    aps = [v["ap"] for v in per_class.values() if v["ap"] is not None]
    return {
        "n": int(n),
        "accuracy": accuracy,
        "macro_auc": float(np.mean(aucs)) if aucs else None,
        "kappa": kappa,
        "ece": expected_calibration_error(y, p, multilabel=multilabel),
        "confusion": [[int(v) for v in row] for row in confusion],
        "classes": classes,
        "per_class": per_class,
        "brier": brier_score(y, p, multilabel=multilabel),
        "balanced_accuracy": float(np.mean(bal)) if bal else None,
        "macro_ap": float(np.mean(aps)) if aps else None,
        "multilabel": bool(multilabel),
        "n_boot": int(n_boot),
    }


def roc_points(y_true, probs, class_index: int) -> dict:
    """ROC curve of one class against the rest, for plotting.

    ``y_true`` is class indices or a multi-label 0/1 matrix. Returns ``{"fpr": [...], "tpr": [...],
    "thresholds": [...], "auc": float | None}``; all lists empty and ``auc`` ``None`` when the class
    is absent or is every sample. The first threshold (nothing predicted positive) is the largest
    score nudged up, so the output stays JSON-serialisable.
    """
    p = np.asarray(probs, dtype=np.float64)
    y = one_vs_rest(y_true, p.shape[1])[:, class_index]
    s = p[:, class_index]
    if len(y) == 0 or y.min() == y.max():
        return {"fpr": [], "tpr": [], "thresholds": [], "auc": None}
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(y, s)
    thr = np.where(np.isfinite(thr), thr, np.nextafter(s.max(), np.inf))
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thresholds": thr.tolist(), "auc": binary_auc(y, s)}


def wilson_lower(successes: int, n: int, confidence: float = 0.95) -> float:
    """One-sided Wilson lower confidence bound of a proportion ``successes / n`` (0 when n is 0)."""
    if n <= 0:
        return 0.0
    from statistics import NormalDist

    z = NormalDist().inv_cdf(float(confidence))
    p = successes / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z * z / n))


def _operating_threshold(y: np.ndarray, s: np.ndarray, target: float, confidence: Optional[float] = None):
    pos_scores = np.sort(s[y.astype(bool)])[::-1]
    n = len(pos_scores)
    if n == 0:
        return None
    # The m-th highest positive score is the highest threshold keeping >= m positives (ties kept).
    m = int(np.clip(math.ceil(target * n - 1e-9), 1, n))
    if confidence is not None:
        # Keep enough positives that the sensitivity's lower confidence bound reaches the target; when no
        # count does (few positives), keep them all.
        m = next((k for k in range(m, n + 1) if wilson_lower(k, n, confidence) >= target), n)
    return float(pos_scores[m - 1])


def threshold_table(y_true, probs, classes: Sequence[str], target_sensitivity: float = 0.95,
                    confidence: Optional[float] = None) -> dict:
    """Per class, the operating threshold for a target sensitivity and what it achieves.

    One-vs-rest on the given data: the threshold is the highest t with sensitivity(p_c >= t) >=
    target. With ``confidence`` (e.g. 0.95) the rule is stricter: the highest t whose sensitivity's
    one-sided Wilson lower bound at that confidence reaches the target (all positives kept when
    none does), so a threshold tuned on a small validation set keeps a margin for new data.
    Returns ``{class: {"threshold", "sensitivity", "sensitivity_lower", "specificity", "precision",
    "n_positive", "n_negative"}}``; every value is ``None`` for a class without positives.
    """
    p = np.asarray(probs, dtype=np.float64)
    y_bin = one_vs_rest(y_true, p.shape[1])
    out = {}
    for c, name in enumerate(classes):
        thr = _operating_threshold(y_bin[:, c], p[:, c], target_sensitivity, confidence)
        row = {"threshold": thr, "sensitivity": None, "sensitivity_lower": None, "specificity": None,
               "precision": None,
               "n_positive": int(y_bin[:, c].sum()), "n_negative": int(len(y_bin) - y_bin[:, c].sum())}
        if thr is not None:
            rates = binary_rates(y_bin[:, c], p[:, c] >= thr)
            row.update({key: rates[key] for key in ("sensitivity", "specificity", "precision")})
            row["sensitivity_lower"] = wilson_lower(rates["tp"], rates["tp"] + rates["fn"], confidence or 0.95)
        out[str(name)] = row
    return out


def operating_thresholds(y_true, probs, classes: Sequence[str], target_sensitivity: float = 0.95,
                         confidence: Optional[float] = None) -> dict:
    """``{class: threshold}``: per class, the highest threshold reaching ``target_sensitivity``.

    See :func:`threshold_table` for the rule (and ``confidence``) and the achieved
    sensitivity/specificity; ``None`` for a class that has no positives in the data.
    """
    table = threshold_table(y_true, probs, classes, target_sensitivity, confidence)
    return {name: row["threshold"] for name, row in table.items()}


def sensitivity_at_specificity(y_true, scores, specificity: float) -> Optional[float]:
    """Highest sensitivity a score reaches while keeping at least ``specificity`` (one class vs the rest).

    ``y_true`` is 0/1 for the class, ``scores`` its probabilities. Used to compare two models at the same
    operating point, so a model that calls everything positive cannot look more sensitive. None when a
    side has no cases.
    """
    y = np.asarray(y_true).astype(int)
    if y.min(initial=1) == y.max(initial=0):
        return None
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, np.asarray(scores, dtype=np.float64))
    ok = fpr <= (1.0 - float(specificity)) + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0
