"""Model-randomisation sanity check (Adebayo et al., "Sanity Checks for Saliency Maps", 2018).

A map that explains the *model* must change when the model's learned weights
are replaced by random ones. We re-initialise every layer of a private copy
(seeded), explain the same image and target again, and compare the two maps
by Spearman rank correlation on a coarse grid: a high correlation means the
map mostly reflects the image (edges, brightness), not what the model learned.
A flat trained map fails (there is nothing to compare; a rank correlation of a
constant is undefined, not 0). The randomised copy is made once per network.
"""

from __future__ import annotations

import copy
import logging
import threading
import weakref

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

#: Rank correlation with the randomised model's map above which the check fails.
MAX_SPEARMAN = 0.5
#: ``all``: every layer re-initialised (the end of Adebayo et al.'s cascade); ``head``: only the classifier.
LAYERS = ("all", "head")

_rnd_lock = threading.Lock()
_randomised: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()


def randomised_copy(net: torch.nn.Module, seed: int = 0, layers: str = "all") -> torch.nn.Module:
    """A deep copy of ``net`` with its layers re-initialised (BatchNorm statistics reset), eval mode.

    ``layers="all"`` re-initialises every layer; ``"head"`` only the classifier head (``net.head``,
    the last-layer randomisation test). Made with a seeded generator, so the same seed gives the same
    weights; the caller's global RNG is left as it was.
    """
    if layers not in LAYERS:
        raise ValueError(f"layers must be one of {LAYERS}, not {layers!r}")
    clone = copy.deepcopy(net)
    root = clone if layers == "all" else getattr(clone, "head", None)
    if root is None:
        raise ValueError("this model has no classifier head to randomise")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in root.modules():
            if hasattr(module, "reset_parameters") and module is not clone:
                module.reset_parameters()
            if hasattr(module, "reset_running_stats"):
                module.reset_running_stats()
    return clone.eval()


def cached_randomised_copy(net: torch.nn.Module, seed: int = 0, layers: str = "all") -> torch.nn.Module:
    """:func:`randomised_copy`, made once per (network, seed, layers) and kept while ``net`` lives
    (a model version is checked many times; copying it each time would cost more than the check)."""
    with _rnd_lock:
        per_net = _randomised.setdefault(net, {})
        if (seed, layers) not in per_net:
            per_net[(seed, layers)] = randomised_copy(net, seed, layers)
        return per_net[(seed, layers)]


def _coarse(m: np.ndarray, side: int = 32) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32))[None, None]
    return F.adaptive_avg_pool2d(t, (min(side, m.shape[0]), min(side, m.shape[1])))[0, 0].numpy().ravel()


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two equally shaped maps, compared on a 32 × 32 grid.

    NaN when either map is constant on that grid (a rank correlation is undefined then; callers
    must not read it as "the maps differ").
    """
    from scipy.stats import spearmanr

    x, y = _coarse(a), _coarse(b)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def compare(trained_map: np.ndarray, randomised_map: np.ndarray) -> dict:
    """The check's verdict for two maps: ``{"spearman", "passed", "threshold", "reason"}``.

    Fails when the trained model's map is flat (nothing to compare: the flat-map check says why) or
    when the maps' rank correlation reaches :data:`MAX_SPEARMAN`. A flat randomised map beside a
    non-flat trained map passes: the map depends on the learned weights.
    """
    from core.explain.faithfulness import flatness

    if flatness(trained_map)["flat"]:
        return {"spearman": None, "passed": False, "threshold": MAX_SPEARMAN, "reason": "trained map is flat"}
    if flatness(randomised_map)["flat"]:
        return {"spearman": 0.0, "passed": True, "threshold": MAX_SPEARMAN, "reason": "randomised map is flat"}
    r = spearman(trained_map, randomised_map)
    r = 0.0 if np.isnan(r) else r
    return {"spearman": r, "passed": bool(r < MAX_SPEARMAN), "threshold": MAX_SPEARMAN,
            "reason": "maps differ" if r < MAX_SPEARMAN else "maps agree"}


def model_randomisation(model_version, image, method: str, target=None, *, explanation=None, trained_map=None,
                        randomise_seed: int = 0, randomise: str = "all", **kwargs) -> dict:
    """Explain ``image`` with the trained and with a randomised model; compare the maps.

    Takes :func:`~core.explain.protocol.explain`'s arguments (``explanation``: the trained
    model's Explanation, or ``trained_map``: any map in the image's geometry to test — both
    avoid recomputing it; ``target`` must then be the index it explains). ``randomise``: ``all``
    or ``head``, the layers re-initialised, with ``randomise_seed`` (:func:`randomised_copy`); named apart
    from the method parameters in ``kwargs`` (LayerCAM's ``layers``, LIME's ``seed``), which reach both
    explanations unchanged. Returns ``{"spearman", "passed", "threshold",
    "reason", "layers", "randomised_map"}``; passed means the maps differ (rank correlation below
    :data:`MAX_SPEARMAN`) and the trained map is not flat.
    """
    from core.explain.protocol import explain

    if trained_map is None:
        trained = explanation or explain(model_version, image, method, target, **kwargs)
        trained_map, target = trained.map, trained.target_index
    rnd = cached_randomised_copy(model_version.net, randomise_seed, randomise)
    randomised = explain(model_version, image, method, target, net=rnd, **kwargs)
    out = compare(trained_map, randomised.map)
    out.update({"layers": randomise, "randomised_map": randomised.map})
    return out
