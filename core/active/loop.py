"""The active-learning loop in the app: predict the pool, refresh the queue, retrain in the background.

Label → after ``retrain_after_labels`` new confirmed labels (workspace setting,
default 20; :func:`should_retrain`) or on request, the app fine-tunes the active
model in a separate process (``core.models.jobs.TrainingJob``) → when the new
version is promoted the pool is re-predicted with it (:func:`model_outputs`) →
the queue is refreshed (:func:`refresh_queue`). Labelling never waits: labels
written while training runs are counted against the training's start time
(:func:`mark_training_started`), so they make the next round.

Probabilities and embeddings are cached per model version (``cache.py``); only
images the cache lacks go through the network.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from datetime import datetime, timezone
from typing import Optional, Sequence

import numpy as np

from core.active.acquire import AcquisitionConfig, select_batch
from core.active.cache import ModelOutputs, load_outputs, merge, save_outputs
from core.active.rare import cost_matrix_from, rare_indices_of
from core.progress import CancelToken, ProgressCallback
from core.types import QueueItem

logger = logging.getLogger(__name__)

RETRAIN_SETTING = "retrain_after_labels"
DEFAULT_RETRAIN_AFTER = 20
LAST_TRAIN_SETTING = "active_last_train_started_at"
MC_PASSES = 20
CONFIRMED = ("human", "import", "undo")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def mark_training_started(ws) -> None:
    """Record that a training run starts now: later labels count towards the next round."""
    ws.set_setting(LAST_TRAIN_SETTING, _now())


def new_confirmed_labels(ws) -> int:
    """Confirmed labels written after the last training started (or the active model was created)."""
    since = ws.get_setting(LAST_TRAIN_SETTING)
    if since is None:
        active = ws.active_model()
        since = active.created_at if active is not None else ""
    return sum(1 for label in ws.current_labels().values()
               if label.source in CONFIRMED and (label.created_at or "") > (since or ""))


def retrain_threshold(ws) -> int:
    """The ``retrain_after_labels`` workspace setting (at least 1; default 20)."""
    return max(1, int(ws.get_setting(RETRAIN_SETTING, DEFAULT_RETRAIN_AFTER) or DEFAULT_RETRAIN_AFTER))


def should_retrain(ws, n_new: Optional[int] = None) -> bool:
    """Whether ``n_new`` (default: counted in the database) new confirmed labels reach ``retrain_after_labels``."""
    n_new = new_confirmed_labels(ws) if n_new is None else int(n_new)
    return n_new >= retrain_threshold(ws)


#: Images (or embeddings) per forward pass in the uncertainty passes: peak memory is bounded by this, not the pool.
UNCERTAINTY_BATCH = 64


def mc_dropout_passes(loaded, emb: np.ndarray, passes: int = MC_PASSES, seed: int = 0,
                      batch_size: int = UNCERTAINTY_BATCH * 16) -> np.ndarray:
    """(T, N, K) calibrated probabilities from the head with its dropout active (MC dropout on cached embeddings).

    Loupe's head is ``Dropout → Linear`` on the pooled embedding, so MC dropout
    needs only the embeddings, not the backbone. The pool goes through in chunks
    of ``batch_size`` rows, so the working memory does not grow with the pool
    (only the (T, N, K) result does).
    """
    import copy

    import torch

    from core.models.inference import calibrated_probs

    head = copy.deepcopy(loaded.net.head).train()
    if not any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in head.modules()):
        for m in head.modules():  # a head trained without dropout still gets a small one for MC passes
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.2
    gen = torch.manual_seed(seed)
    emb = np.asarray(emb, dtype=np.float32)
    k = len(loaded.classes)
    out = np.zeros((passes, len(emb), k), dtype=np.float64)
    with torch.no_grad():
        for t in range(passes):
            for i in range(0, len(emb), max(1, batch_size)):
                x = torch.from_numpy(emb[i:i + batch_size])
                out[t, i:i + len(x)] = calibrated_probs(head(x), loaded.temperature, loaded.multilabel)
    del gen
    return out


def tta_passes(loaded, items: Sequence[tuple[str, str]], device: str = "cpu",
               batch_size: int = UNCERTAINTY_BATCH) -> np.ndarray:
    """(T, N, K) probabilities of the model on T = 5 mild augmentations (identity, ±2 px shifts, ±5 % contrast).

    Images are decoded and run ``batch_size`` at a time (all five views of a
    batch, one after another), so peak memory is set by the batch, not the pool.
    """
    import torch

    from core.models.inference import calibrated_probs, load_input

    net = loaded.net.to(device).eval()
    k = len(loaded.classes)
    out = np.zeros((5, len(items), k), dtype=np.float64)
    batch_size = max(1, int(batch_size))
    with torch.inference_mode():
        for i in range(0, len(items), batch_size):
            x = torch.stack([load_input(path, loaded.spec) for _, path in items[i:i + batch_size]]).to(device)
            views = (x, torch.roll(x, 2, dims=3), torch.roll(x, -2, dims=2), x * 1.05, x * 0.95)
            for t, v in enumerate(views):
                out[t, i:i + len(x)] = calibrated_probs(net(v).float().cpu(), loaded.temperature, loaded.multilabel)
            del x, views
    return out


def model_outputs(ws, loaded=None, image_ids: Optional[Sequence[str]] = None, device: str = "auto",
                  batch_size: int = 16, progress: Optional[ProgressCallback] = None,
                  cancel: Optional[CancelToken] = None) -> tuple[ModelOutputs, list[tuple[str, str]]]:
    """Probabilities and embeddings of ``image_ids`` (default: every image) by ``loaded`` (default: active).

    Cached rows are reused; the rest are predicted (also stored as the version's
    predictions) and added to the cache. Returns (outputs for the images that
    could be read, in the order asked, failures as (image id, reason)). Raises
    ModelError when no model is active.
    """
    from core.models.device import choose_device
    from core.models.inference import run_inference, to_predictions
    from core.models.versions import load_version

    loaded = loaded or load_version(ws)
    version = loaded.version.version
    refs = ws.images() if image_ids is None else [ws.image(i) for i in image_ids]
    damaged = ws.damaged_images()  # damaged images stay out of prediction and the queue
    refs = [r for r in refs if r.id not in damaged]
    cached = load_outputs(ws.path, version)
    have = set(cached.image_ids) if cached is not None else set()
    missing = [(r.id, r.path) for r in refs if r.id not in have]
    failed: list[tuple[str, str]] = []
    if missing:
        logger.info("predicting %d images with %s (%d cached)", len(missing), version, len(have))
        result = run_inference(loaded, missing, batch_size=batch_size, device=choose_device(device).device,
                               with_embeddings=True, progress=progress, cancel=cancel)
        failed = result.failed
        from core.models.service import mark_found_damaged

        mark_found_damaged(ws, result)
        ws.add_predictions(version, to_predictions(loaded, result))
        fresh = ModelOutputs(version, list(result.image_ids), result.probs.astype(np.float32),
                             result.embeddings.astype(np.float32))
        cached = merge(cached, fresh)
        save_outputs(ws.path, cached)
    assert cached is not None
    present = set(cached.image_ids)
    return cached.subset([r.id for r in refs if r.id in present]), failed


def redecide_predictions(ws, loaded=None) -> int:
    """Store the version's predictions again from its cached probabilities with the thresholds now in effect
    (after a site threshold changed); no image is read. Returns how many were re-decided."""
    from core.models.inference import InferenceResult, to_predictions
    from core.models.versions import load_version

    loaded = loaded or load_version(ws)
    cached = load_outputs(ws.path, loaded.version.version)
    if cached is None or not len(cached.image_ids):
        return 0
    result = InferenceResult(list(cached.image_ids), np.empty((0, 0)), cached.probs.astype(np.float64), None)
    fresh = to_predictions(loaded, result)
    # the cache holds class probabilities only: keep each image's stored severity grade
    stored = ws.predictions(loaded.version.version)
    fresh = [dataclasses.replace(p, severity=stored[p.image_id].severity,
                                 severity_probability=stored[p.image_id].severity_probability)
             if p.image_id in stored else p for p in fresh]
    return ws.add_predictions(loaded.version.version, fresh)


def acquisition_config(ws, classes: Sequence[str], counts: Sequence[int], strategy: str, n: int,
                       seed: int = 0) -> AcquisitionConfig:
    """An :class:`AcquisitionConfig` from the workspace settings (``rare_classes`` — several, from the
    findings — or the older single ``rare_class``; ``miss_cost``, ``cost_matrix``, ``min_rare_share``,
    ``audit_share``, ``cold_start_k``, ``rare_target``) and the label counts."""
    rares = rare_indices_of(classes, counts, ws.get_setting("rare_classes") or ws.get_setting("rare_class"))
    miss = float(ws.get_setting("miss_cost", 5.0))
    cost = cost_matrix_from(ws.get_setting("cost_matrix"), classes, [classes[r] for r in rares], miss)
    return AcquisitionConfig(strategy=strategy, n=n, rare_index=rares[0] if rares else None,
                             rare_classes=tuple(rares), cost=cost, miss_cost=miss,
                             min_rare_share=float(ws.get_setting("min_rare_share", AcquisitionConfig.min_rare_share)),
                             audit_share=float(ws.get_setting("audit_share", AcquisitionConfig.audit_share)),
                             cold_start_k=int(ws.get_setting("cold_start_k", AcquisitionConfig.cold_start_k)),
                             rare_target=int(ws.get_setting("rare_target", AcquisitionConfig.rare_target)),
                             seed=seed,
                             class_names=tuple(classes))


def confirmed_labels(ws) -> dict[str, str]:
    """``{image_id: class}`` of single-class confirmed labels."""
    return {i: lab.classes[0] for i, lab in ws.current_labels().items()
            if lab.source in CONFIRMED and len(lab.classes) == 1}


def refresh_queue(ws, strategy: str = "default", n: int = 50, device: str = "auto", seed: int = 0,
                  progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None) -> list[QueueItem]:
    """Predict the pool with the active model (cached per version), pick ``n`` cases and store them as the queue.

    The pool is every image without a confirmed label outside the ``test`` split.
    Each stored :class:`QueueItem` carries the strategy's why-breakdown. Returns
    the queue items. Raises ModelError when no model is active, ValueError for an
    unknown strategy.
    """
    from core.models.versions import load_version

    loaded = load_version(ws)
    classes = list(loaded.classes)
    damaged = ws.damaged_images()
    refs = [r for r in ws.images() if r.split != "test" and r.id not in damaged]
    outputs, failed = model_outputs(ws, loaded, [r.id for r in refs], device=device, progress=progress,
                                    cancel=cancel)
    labels = confirmed_labels(ws)
    labelled = np.array([i in labels for i in outputs.image_ids], dtype=bool)
    tally = Counter(labels.values())
    counts = [tally.get(c, 0) for c in classes]
    config = acquisition_config(ws, classes, counts, strategy, n, seed)
    probs = outputs.probs
    if loaded.multilabel:  # rows of sigmoids → a distribution, so the scores stay defined
        probs = probs / np.maximum(probs.sum(axis=1, keepdims=True), 1e-12)
    stochastic = None
    if strategy == "bald":
        stochastic = mc_dropout_passes(loaded, outputs.emb, seed=seed)
    elif strategy == "tta":
        paths = {r.id: r.path for r in refs}
        stochastic = tta_passes(loaded, [(i, paths[i]) for i in outputs.image_ids])
    picks = select_batch(probs, outputs.emb, labelled, config, counts=counts, stochastic=stochastic)
    if strategy == "default":
        picks = _boost_near_flagged(ws, picks, outputs, labelled, n)
    version = loaded.version.version
    _record_audit(ws, picks, outputs, config, version)
    items = [QueueItem(image_id=outputs.image_ids[pk.index], score=pk.score, rank=r + 1, strategy=strategy,
                       why=pk.why, version=version) for r, pk in enumerate(picks)]
    ws.replace_queue(items)
    for image_id, reason in failed:
        logger.warning("left out of the queue (unreadable): %s: %s", image_id, reason)
    return items



def _boost_near_flagged(ws, picks, outputs: ModelOutputs, labelled, n: int):
    """Raise the unlabelled neighbours of cases flagged "model was wrong" (see ``core.active.flagged``)."""
    from core.active.flagged import boost_with_neighbours, flagged_ids, near_flagged

    flagged = flagged_ids(ws.current_labels())
    if not flagged or outputs.emb is None:
        return picks
    neighbours = near_flagged(outputs.emb, outputs.image_ids, flagged, ~labelled)
    return boost_with_neighbours(picks, neighbours, n)


def _record_audit(ws, picks, outputs: ModelOutputs, config: AcquisitionConfig, version: str) -> None:
    """Keep the audit slice's picks per version, so readers' labels on them give its miss rate."""
    default_rare = (config.class_names[config.rare_index]
                    if config.rare_index is not None and config.rare_index < len(config.class_names) else None)
    by_rare: dict[str, list[tuple[str, float]]] = {}
    for pk in picks:
        if pk.why.get("reason") != "audit":
            continue
        rare = pk.why.get("rare_class") or default_rare
        if rare is None:
            continue
        p_rare = pk.why.get("p_rare")
        if p_rare is None and rare in config.class_names:
            p_rare = outputs.probs[pk.index, list(config.class_names).index(rare)]
        by_rare.setdefault(rare, []).append((outputs.image_ids[pk.index], float(p_rare or 0.0)))
    for rare, items in by_rare.items():
        ws.record_audit_picks(version, rare, items)
