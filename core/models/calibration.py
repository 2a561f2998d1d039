"""Calibration: expected calibration error, reliability curves, Brier score, temperature scaling.

Pure functions on numpy arrays, no Qt and no torch. Conventions shared with
:mod:`core.models.metrics`:

* multi-class: ``y_true`` is ``(n,)`` integer class indices, ``probs`` is ``(n, k)``;
* binary shorthand: ``probs`` may be ``(n,)``, the probability of class 1, with ``y_true`` 0/1;
* multi-label: ``y_true`` is an ``(n, k)`` 0/1 matrix and ``probs`` ``(n, k)`` independent
  per-label probabilities; every (sample, label) entry is then treated as one binary prediction.

Undefined results (no samples) are ``None``, never NaN.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_BINS = 15
T_MIN, T_MAX = 0.05, 20.0


def _as_float_probs(probs) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:  # binary shorthand: probability of class 1
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2:
        raise ValueError(f"probabilities must be a (n, k) array, got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("probabilities contain NaN or infinite values")
    return p


def top_label(y_true, probs, multilabel: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Confidence of the predicted label and whether it was right, for every prediction.

    Multi-class (or binary): confidence = max_k p_k, correct = (argmax == y_true).
    Multi-label: each (sample, label) entry is a binary prediction with confidence
    max(p, 1 - p) and correct = ((p >= 0.5) == y).

    Returns ``(confidence, correct)`` as 1-D float and bool arrays of the same length.
    Raises ``ValueError`` on mismatched shapes or non-finite probabilities.
    """
    y = np.asarray(y_true)
    if multilabel:
        p = np.asarray(probs, dtype=np.float64)
        if p.shape != y.shape:
            raise ValueError(f"multi-label y_true {y.shape} and probs {p.shape} differ in shape")
        if not np.all(np.isfinite(p)):
            raise ValueError("probabilities contain NaN or infinite values")
        p, y = p.ravel(), y.ravel().astype(bool)
        return np.maximum(p, 1.0 - p), (p >= 0.5) == y
    p = _as_float_probs(probs)
    y = y.astype(np.int64).ravel()
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels but {len(p)} rows of probabilities")
    if len(p) == 0:
        return np.zeros(0), np.zeros(0, dtype=bool)
    return p.max(axis=1), p.argmax(axis=1) == y


def _bin_index(conf: np.ndarray, n_bins: int) -> np.ndarray:
    # Bins are (lo, hi]; confidence 0 goes to the first bin, 1 to the last (Guo et al. 2017).
    return np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)


def reliability_curve(y_true, probs, n_bins: int = DEFAULT_BINS, multilabel: bool = False) -> dict:
    """Per-bin statistics for a reliability diagram (equal-width bins on top-label confidence).

    Returns ``{"edges": [n_bins + 1 floats], "confidence": [...], "accuracy": [...],
    "count": [...]}``: each bin's mean confidence and accuracy (``None`` for an empty bin)
    and its number of predictions. JSON-serialisable. Raises ``ValueError`` on bad input.
    """
    if n_bins < 1:
        raise ValueError("n_bins must be at least 1")
    conf, correct = top_label(y_true, probs, multilabel)
    idx = _bin_index(conf, n_bins)
    count = np.bincount(idx, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=correct.astype(np.float64), minlength=n_bins)
    safe = np.maximum(count, 1)
    return {
        "edges": [float(e) for e in np.linspace(0.0, 1.0, n_bins + 1)],
        "confidence": [float(s / c) if n else None for s, c, n in zip(conf_sum, safe, count)],
        "accuracy": [float(s / c) if n else None for s, c, n in zip(acc_sum, safe, count)],
        "count": [int(n) for n in count],
    }


def expected_calibration_error(y_true, probs, n_bins: int = DEFAULT_BINS, multilabel: bool = False):
    """Expected calibration error: sum over bins of (bin size / n) * |accuracy - confidence|.

    Uses ``n_bins`` equal-width bins on the top-label confidence (see :func:`top_label`).
    Returns a float in [0, 1], or ``None`` when there are no predictions.
    """
    conf, correct = top_label(y_true, probs, multilabel)
    if len(conf) == 0:
        return None
    idx = _bin_index(conf, n_bins)
    gap = np.bincount(idx, weights=correct - conf, minlength=n_bins)  # sum of (acc - conf) per bin
    return float(np.abs(gap).sum() / len(conf))


def brier_score(y_true, probs, multilabel: bool = False):
    """Brier score: mean over samples of sum_k (p_k - onehot_k)^2 (multi-class, range [0, 2]).

    Multi-label: mean over every (sample, label) entry of (p - y)^2 (range [0, 1]).
    Returns ``None`` when there are no samples.
    """
    y = np.asarray(y_true)
    if multilabel:
        p = np.asarray(probs, dtype=np.float64)
        if p.shape != y.shape:
            raise ValueError(f"multi-label y_true {y.shape} and probs {p.shape} differ in shape")
        return float(np.mean((p - y) ** 2)) if p.size else None
    p = _as_float_probs(probs)
    y = y.astype(np.int64).ravel()
    if len(p) == 0:
        return None
    onehot = np.zeros_like(p)
    onehot[np.arange(len(y)), y] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def _nll(logits: np.ndarray, y: np.ndarray, temperature: float, multilabel: bool) -> float:
    z = logits / temperature
    from scipy.special import log_expit, log_softmax  # lazy: scipy is not needed to predict

    if multilabel:
        return float(-np.mean(y * log_expit(z) + (1.0 - y) * log_expit(-z)))
    return float(-np.mean(log_softmax(z, axis=1)[np.arange(len(y)), y]))


def fit_temperature(logits, y_true, multilabel: bool = False) -> float:
    """Fit the temperature T that minimises the NLL of ``softmax(logits / T)`` on held-out data.

    ``logits`` is ``(n, k)`` (pre-softmax scores; sigmoid scores when ``multilabel``), ``y_true``
    integer class indices (or an ``(n, k)`` 0/1 matrix when ``multilabel``). The search is a
    bounded scalar minimisation over log T, so T always lies in [0.05, 20]. Returns 1.0 (no change)
    when there are no samples. Raises ``ValueError`` on mismatched shapes or non-finite logits.
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y_true)
    if z.ndim != 2:
        raise ValueError(f"logits must be a (n, k) array, got shape {z.shape}")
    if not np.all(np.isfinite(z)):
        raise ValueError("logits contain NaN or infinite values")
    if multilabel:
        if y.shape != z.shape:
            raise ValueError(f"multi-label y_true {y.shape} and logits {z.shape} differ in shape")
        y = y.astype(np.float64)
    else:
        y = y.astype(np.int64).ravel()
        if len(y) != len(z):
            raise ValueError(f"{len(y)} labels but {len(z)} rows of logits")
        if len(y) and (y.min() < 0 or y.max() >= z.shape[1]):
            raise ValueError(f"labels must lie in 0..{z.shape[1] - 1}")
    if len(z) == 0:
        logger.warning("fit_temperature: no samples; keeping T = 1")
        return 1.0
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(
        lambda log_t: _nll(z, y, float(np.exp(log_t)), multilabel),
        bounds=(np.log(T_MIN), np.log(T_MAX)),
        method="bounded",
        options={"xatol": 1e-5},
    )
    t = float(np.clip(np.exp(res.x), T_MIN, T_MAX))
    # The bounded search can stop just short of a better T = 1; never return something worse.
    if _nll(z, y, 1.0, multilabel) < _nll(z, y, t, multilabel):
        t = 1.0
    logger.info("fitted temperature T = %.4f on %d samples", t, len(z))
    return t


def apply_temperature(logits, temperature: float, multilabel: bool = False) -> np.ndarray:
    """Probabilities from logits scaled by 1 / T: softmax over classes, or sigmoid when ``multilabel``.

    Returns an array of the same shape as ``logits``. Raises ``ValueError`` when T is not positive.
    """
    if not (temperature > 0 and np.isfinite(temperature)):
        raise ValueError(f"temperature must be a positive number, got {temperature}")
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    if multilabel:
        return 0.5 * (1.0 + np.tanh(0.5 * z))  # the logistic sigmoid, without overflow
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
