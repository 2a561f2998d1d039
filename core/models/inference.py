"""Batched inference: decode in worker threads while the model computes.

Images are decoded and preprocessed (``core.imaging.model_input`` →
``preprocess.to_tensor``, the same path training uses) by a small thread pool
one batch ahead of the model, so the CPU decodes batch i+1 while batch i runs.
Probabilities are temperature-calibrated with the version's fitted temperature.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch

from core.errors import DamagedImageError, ImageReadError, LoupeError
from core.progress import CancelToken, ProgressCallback, report
from core.types import Prediction

logger = logging.getLogger(__name__)


@dataclass
class InferenceResult:
    """Outputs for the images that could be read, in input order, plus the failures."""

    image_ids: list[str]
    logits: np.ndarray  # (N, K) raw logits
    probs: np.ndarray  # (N, K) calibrated probabilities
    embeddings: Optional[np.ndarray]  # (N, D) pooled backbone features
    failed: list[tuple[str, str]] = field(default_factory=list)  # (image id, reason)
    severity_logits: Optional[np.ndarray] = None  # (N, K-1) CORAL logits when the model has a severity head
    damaged: list[str] = field(default_factory=list)  # ids among ``failed`` whose pixel data is damaged


def load_input(path: str, spec) -> torch.Tensor:
    """One image as a normalised model-input tensor — the single path shared by training and inference."""
    from core.imaging import model_input
    from core.models.preprocess import to_tensor

    return to_tensor(model_input(path), spec)


def calibrated_probs(logits: torch.Tensor | np.ndarray, temperature: float, multilabel: bool) -> np.ndarray:
    """Probabilities from logits divided by the fitted temperature (softmax, or sigmoid for multi-label)."""
    t = torch.as_tensor(logits, dtype=torch.float32) / max(float(temperature), 1e-6)
    return (torch.sigmoid(t) if multilabel else torch.softmax(t, dim=1)).numpy()


def run_inference(loaded, items: Sequence[tuple[str, str]], batch_size: int = 16, device: str = "cpu",
                  with_embeddings: bool = True, workers: int = 2, progress: Optional[ProgressCallback] = None,
                  cancel: Optional[CancelToken] = None) -> InferenceResult:
    """Run ``loaded`` (a :class:`~core.models.versions.LoadedModel`) over ``items`` = (image id, path) pairs.

    Batched under ``torch.inference_mode``; an image that cannot be decoded is
    listed in ``failed`` with its reason and the rest go on. Raises Cancelled
    between batches when ``cancel`` is set.
    """
    int8 = (loaded.version.params.get("compression") or {}).get("kind") == "int8"
    if int8:
        device = "cpu"  # quantized kernels are CPU kernels
    # channels-last is the layout the CPU (oneDNN) and GPU convolution kernels are fastest in: ~1.8× here.
    # An INT8 network stays contiguous: fbgemm takes it as fast, and its float layers then round exactly as
    # when the fast-reading gate checked it (core.models.fast_reading).
    layout = torch.contiguous_format if int8 else torch.channels_last
    net = loaded.net.to(device, memory_format=layout).eval()
    batches = [list(items[i:i + batch_size]) for i in range(0, len(items), batch_size)]
    ids: list[str] = []
    logits_out: list[torch.Tensor] = []
    emb_out: list[torch.Tensor] = []
    sev_out: list[torch.Tensor] = []
    failed: list[tuple[str, str]] = []
    damaged: list[str] = []

    def decode(item):
        image_id, path = item
        try:
            return image_id, load_input(path, loaded.spec), None
        except DamagedImageError as exc:
            damaged.append(image_id)  # list.append is atomic: safe from the pool's threads
            return image_id, None, str(exc)
        except (ImageReadError, LoupeError, OSError) as exc:
            return image_id, None, str(exc)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending = [pool.submit(decode, it) for it in batches[0]] if batches else []
        for b in range(len(batches)):
            if cancel is not None:
                cancel.check()
            decoded = [f.result() for f in pending]
            pending = [pool.submit(decode, it) for it in batches[b + 1]] if b + 1 < len(batches) else []
            good = [(i, t) for i, t, err in decoded if t is not None]
            failed += [(i, err) for i, t, err in decoded if t is None]
            if good:
                x = torch.stack([t for _, t in good]).to(device).contiguous(memory_format=layout)
                with torch.inference_mode():
                    out = net.forward_all(x)
                ids += [i for i, _ in good]
                logits_out.append(out["logits"].float().cpu())
                if with_embeddings:
                    emb_out.append(out["embedding"].float().cpu())
                if out.get("severity_logits") is not None:
                    sev_out.append(out["severity_logits"].float().cpu())
            report(progress, min((b + 1) * batch_size, len(items)), len(items), "predicting")
    k = len(loaded.classes)
    logits = torch.cat(logits_out) if logits_out else torch.zeros((0, k))
    probs = calibrated_probs(logits, loaded.temperature, loaded.multilabel)
    embeddings = torch.cat(emb_out).numpy() if emb_out else (np.zeros((0, net.embedding_dim)) if with_embeddings else None)
    levels = int(getattr(net, "severity_levels", 0) or 0)
    severity = (torch.cat(sev_out).numpy() if sev_out else np.zeros((0, levels - 1), dtype=np.float32)) \
        if levels else None
    for image_id, reason in failed:
        logger.warning("could not predict %s: %s", image_id, reason)
    return InferenceResult(ids, logits.numpy(), probs, embeddings, failed, severity_logits=severity, damaged=damaged)


def to_predictions(loaded, result: InferenceResult) -> list[Prediction]:
    """Predictions to store: calibrated probabilities per class and the predicted class.

    The predicted class follows the version's operating thresholds (the rare
    class wins when it passes its threshold), else the most probable class; for
    multi-label models every finding above its threshold, joined with ';'.
    With a severity head, the predicted grade and its probability come with it
    (:func:`core.models.severity.predict_grades`).
    """
    from core.models.metrics import predict
    from core.models.severity import predict_grades

    classes = loaded.classes
    thresholds = [loaded.thresholds.get(c) for c in classes]
    predicted = predict(result.probs, thresholds, multilabel=loaded.multilabel) if len(result.probs) else []
    grades, grade_p = (predict_grades(result.severity_logits)
                       if result.severity_logits is not None and len(result.severity_logits) == len(result.image_ids)
                       else (None, None))
    preds = []
    for row, (image_id, p, pred) in enumerate(zip(result.image_ids, result.probs, predicted)):
        if loaded.multilabel:
            name = ";".join(c for c, on in zip(classes, pred) if on)
        else:
            name = classes[int(pred)]
        preds.append(Prediction(image_id=image_id, version=loaded.version.version,
                                probs={c: float(v) for c, v in zip(classes, p)}, predicted=name,
                                severity=None if grades is None else int(grades[row]),
                                severity_probability=None if grade_p is None else float(grade_p[row])))
    return preds
