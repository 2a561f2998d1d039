"""Model-randomisation sanity check (Adebayo et al., "Sanity Checks for Saliency Maps", 2018).

A map that explains the *model* must change when the model's learned weights
are replaced by random ones. We re-initialise every layer of a private copy
(seeded), explain the same image and target again, and compare the two maps
by Spearman rank correlation on a coarse grid: a high correlation means the
map mostly reflects the image (edges, brightness), not what the model learned.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

#: Rank correlation with the randomised model's map above which the check fails.
MAX_SPEARMAN = 0.5


def randomised_copy(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """A deep copy of ``net`` with every layer re-initialised (BatchNorm statistics reset), eval mode."""
    clone = copy.deepcopy(net)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in clone.modules():
            if hasattr(module, "reset_parameters") and module is not clone:
                module.reset_parameters()
            if hasattr(module, "reset_running_stats"):
                module.reset_running_stats()
    return clone.eval()


def _coarse(m: np.ndarray, side: int = 32) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32))[None, None]
    return F.adaptive_avg_pool2d(t, (min(side, m.shape[0]), min(side, m.shape[1])))[0, 0].numpy().ravel()


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two equally shaped maps, compared on a 32 × 32 grid (0 if one is flat)."""
    from scipy.stats import spearmanr

    x, y = _coarse(a), _coarse(b)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(spearmanr(x, y).statistic)


def model_randomisation(model_version, image, method: str, target=None, *, explanation=None, seed: int = 0,
                        **kwargs) -> dict:
    """Explain ``image`` with the trained and with a randomised model; compare the maps.

    Takes :func:`~core.explain.protocol.explain`'s arguments (``explanation``: the trained
    model's map, to avoid recomputing it). Returns ``{"spearman", "passed", "threshold",
    "randomised_map"}``; passed means the maps differ (rank correlation below
    :data:`MAX_SPEARMAN`).
    """
    from core.explain.protocol import explain

    trained = explanation or explain(model_version, image, method, target, **kwargs)
    rnd = randomised_copy(model_version.net, seed)
    randomised = explain(model_version, image, method, trained.target_index, net=rnd, **kwargs)
    r = spearman(trained.map, randomised.map)
    return {"spearman": r, "passed": bool(r < MAX_SPEARMAN), "threshold": MAX_SPEARMAN,
            "randomised_map": randomised.map}
