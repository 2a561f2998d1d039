"""The active model's prediction for one frame of a multi-frame image (stored predictions cover the first frame)."""

from __future__ import annotations

import logging
from typing import Optional

import numpy as np

logger = logging.getLogger(__name__)


def predict_frame(workspace, image_id: str, frame: int, version: Optional[str] = None):
    """Predict frame ``frame`` (0-based) of ``image_id`` with ``version`` (default: the active one).

    Returns a :class:`~core.types.Prediction` (not stored: the workspace keeps one prediction per image).
    Raises ModelError without a model, NotFound for an unknown image, ImageReadError for a frame that
    does not exist or cannot be decoded.
    """
    import torch

    from core.imaging import model_input
    from core.models.inference import InferenceResult, calibrated_probs, to_predictions
    from core.models.preprocess import to_tensor
    from core.models.versions import load_version

    loaded = load_version(workspace, version)
    ref = workspace.image(image_id)
    x = to_tensor(model_input(ref.path, frame=int(frame)), loaded.spec)[None]
    with torch.inference_mode():
        logits = loaded.net.eval()(x).float()
    probs = calibrated_probs(logits, loaded.temperature, loaded.multilabel)
    result = InferenceResult([image_id], logits.numpy(), np.asarray(probs, dtype=np.float64), None)
    prediction = to_predictions(loaded, result)[0]
    logger.info("predicted %s frame %d with %s: %s", image_id, frame, loaded.version.version, prediction.predicted)
    return prediction
