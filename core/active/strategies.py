"""Acquisition scores on a model's class probabilities: higher = more worth a label.

Every function takes a probability matrix ``probs`` (N, K) (rows sum to 1) — or,
for BALD and TTA variance, a stack of T stochastic probability matrices (T, N, K)
— and returns an (N,) float array. Least confidence, margin and entropy use
modAL's own implementations (``modAL.uncertainty._proba_*``) when modAL is
installed, so the app ranks exactly as modAL's ``uncertainty_sampling`` /
``margin_sampling`` / ``entropy_sampling`` would; a NumPy fallback gives the
same numbers without it.
"""

from __future__ import annotations

import logging
from typing import Callable, Optional

import numpy as np
from core.active.names import STRATEGIES  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)

_EPS = 1e-12

try:  # modAL's proba-level helpers (private names, stable since 0.4)
    from modAL.uncertainty import _proba_entropy as _modal_entropy
    from modAL.uncertainty import _proba_margin as _modal_margin
    from modAL.uncertainty import _proba_uncertainty as _modal_uncertainty
except ImportError:  # pragma: no cover - modAL is a dependency, but the app must not need it
    _modal_entropy = _modal_margin = _modal_uncertainty = None


def _check(probs) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probabilities must be an (N, K) matrix, got shape {p.shape}")
    return p


def least_confidence(probs) -> np.ndarray:
    """1 − max_k p_k (modAL ``classifier_uncertainty``)."""
    p = _check(probs)
    if len(p) == 0:
        return np.zeros(0)
    if _modal_uncertainty is not None:
        return np.asarray(_modal_uncertainty(p), dtype=np.float64)
    return 1.0 - p.max(axis=1)


def margin(probs) -> np.ndarray:
    """1 − (p_top1 − p_top2): high when the two best classes are close (modAL's margin, flipped).

    modAL's ``classifier_margin`` returns the raw margin and ``margin_sampling``
    takes its *minimum*; here the score is flipped so that every strategy maximises.
    """
    p = _check(probs)
    if len(p) == 0:
        return np.zeros(0)
    if p.shape[1] == 1:
        return np.zeros(len(p))
    if _modal_margin is not None:
        raw = np.asarray(_modal_margin(p), dtype=np.float64)
    else:
        top = np.sort(p, axis=1)
        raw = top[:, -1] - top[:, -2]
    return 1.0 - raw


def entropy(probs, normalise: bool = False) -> np.ndarray:
    """Shannon entropy −Σ p log p in nats (modAL ``classifier_entropy``); / log K when ``normalise``."""
    p = _check(probs)
    if len(p) == 0:
        return np.zeros(0)
    if _modal_entropy is not None:
        h = np.asarray(_modal_entropy(p), dtype=np.float64)
    else:
        h = -(p * np.log(np.clip(p, _EPS, 1.0))).sum(axis=1)
    if normalise and p.shape[1] > 1:
        h = h / np.log(p.shape[1])
    return h


def random_scores(n: int, seed: Optional[int] = None) -> np.ndarray:
    """Uniform random scores in [0, 1) (the passive-learning baseline)."""
    return np.random.default_rng(seed).random(int(n))


def _check_stack(samples) -> np.ndarray:
    s = np.asarray(samples, dtype=np.float64)
    if s.ndim != 3:
        raise ValueError(f"stochastic probabilities must be (T, N, K), got shape {s.shape}")
    return s


def bald(samples) -> np.ndarray:
    """BALD mutual information from T stochastic passes (MC dropout), (T, N, K) → (N,).

    I = H[mean_t p_t] − mean_t H[p_t]: high when the passes disagree with each
    other with confidence (epistemic uncertainty), zero when they all agree.
    """
    s = _check_stack(samples)
    mean = s.mean(axis=0)
    h_mean = -(mean * np.log(np.clip(mean, _EPS, 1.0))).sum(axis=1)
    mean_h = -(s * np.log(np.clip(s, _EPS, 1.0))).sum(axis=2).mean(axis=0)
    return np.clip(h_mean - mean_h, 0.0, None)


def tta_variance(samples) -> np.ndarray:
    """Test-time-augmentation variance: mean over classes of the variance across T augmented passes."""
    s = _check_stack(samples)
    return s.var(axis=0).mean(axis=1)


#: Single-matrix scores by strategy name.
PROBA_SCORES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "least_confidence": least_confidence,
    "margin": margin,
    "entropy": entropy,
}
#: Scores that need T stochastic passes.
STOCHASTIC_SCORES: dict[str, Callable[[np.ndarray], np.ndarray]] = {"bald": bald, "tta": tta_variance}
#: Every strategy name the queue builder accepts (``default`` = the combination, see ``queue.py``).


def top_k(scores, k: int, exclude: Optional[np.ndarray] = None) -> np.ndarray:
    """Indices of the ``k`` highest scores, best first (ties by index), leaving out ``exclude`` (bool mask)."""
    s = np.asarray(scores, dtype=np.float64).copy()
    if exclude is not None:
        s[np.asarray(exclude, dtype=bool)] = -np.inf
    order = np.lexsort((np.arange(len(s)), -s))
    order = order[np.isfinite(s[order])]
    return order[: max(0, int(k))]
