"""Label-error candidates: confirmed labels that a confident model disagrees with.

A label goes to the re-review list when the model gives its labelled class a
probability of at most ``1 - confidence`` while it is at least ``confidence``
sure of another class. Candidates are ranked by how little probability the
model leaves for the given label (the "self-confidence" of confident learning).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelErrorCandidate:
    """One confirmed label the model disputes."""

    image_id: str
    given: str
    predicted: str
    p_given: float
    p_predicted: float

    def to_json(self) -> dict:
        """Plain JSON for the CLI and the app."""
        return {"id": self.image_id, "given": self.given, "predicted": self.predicted,
                "p_given": round(self.p_given, 4), "p_predicted": round(self.p_predicted, 4)}


def label_error_candidates(image_ids: Sequence[str], probs, given: Mapping[str, str], classes: Sequence[str],
                           confidence: float = 0.9) -> list[LabelErrorCandidate]:
    """Confirmed labels (``given``: image id → class name) that the model confidently contradicts.

    ``image_ids`` and ``probs`` (N, K) are the model's outputs; images without a
    given label, or with a class the model does not know, are ignored. Returns the
    candidates, most disputed first.
    """
    p = np.asarray(probs, dtype=np.float64)
    index = {c: i for i, c in enumerate(classes)}
    out = []
    for row, image_id in enumerate(image_ids):
        label = given.get(image_id)
        if label not in index:
            continue
        top = int(np.argmax(p[row]))
        p_given = float(p[row, index[label]])
        if top != index[label] and p[row, top] >= confidence and p_given <= 1 - confidence:
            out.append(LabelErrorCandidate(image_id, label, classes[top], p_given, float(p[row, top])))
    out.sort(key=lambda c: (c.p_given, c.image_id))
    logger.info("%d label-error candidates at confidence %.2f", len(out), confidence)
    return out
