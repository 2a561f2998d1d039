"""The reading worklist: every image with its review status, prediction and label.

Status, in order of precedence: ``damaged`` (the image's pixel data was found
incomplete or broken when shown: it is left out of prediction, the queue and
training, and the row carries the reason), ``flagged`` (the current label says the model
was wrong), ``disagreement`` (labelled, and the active model predicts another
class), ``labelled``, ``queued`` (waiting in the active-learning queue),
``unlabelled``. The app shows these rows; it decides nothing itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

from core.types import ImageRef, Label, Prediction

logger = logging.getLogger(__name__)

STATUSES = ("unlabelled", "queued", "labelled", "flagged", "disagreement", "damaged")


@dataclass(frozen=True)
class WorklistRow:
    """One image as the worklist shows it."""

    ref: ImageRef
    status: str
    label: Optional[Label]
    prediction: Optional[Prediction]
    queue_rank: Optional[int] = None
    damaged: Optional[str] = None  # why the image is damaged (None: whole)

    @property
    def confidence(self) -> Optional[float]:
        """Probability of the predicted class (the highest one for multi-label)."""
        if self.prediction is None or not self.prediction.probs:
            return None
        first = self.prediction.predicted.split(";")[0]
        return self.prediction.probs.get(first, max(self.prediction.probs.values()))

    @property
    def patient_key(self) -> str:
        """Patient id, or a readable stand-in for photographs without one."""
        return self.ref.record.patient_id or "(no patient id)"

    @property
    def study_key(self) -> str:
        """Study description/UID, readable."""
        rec = self.ref.record
        if rec.study_description:
            return rec.study_description
        if rec.study_date:
            return f"Study {rec.study_date}"
        return f"Study …{rec.study_uid[-8:]}" if rec.study_uid else "(no study)"

    @property
    def series_key(self) -> Optional[str]:
        """Series description (or number/UID tail) with the modality, readable; None for an image without a series
        (photographs), which the worklist shows directly under its study."""
        rec = self.ref.record
        if not rec.series_uid:
            return None
        name = rec.series_description or f"Series …{rec.series_uid[-8:]}"
        return f"{name}  [{rec.modality}]"


def status_of(label: Optional[Label], prediction: Optional[Prediction], queued: bool, damaged: bool = False) -> str:
    """The worklist status for one image (see the module docstring for precedence)."""
    if damaged:
        return "damaged"
    if label is not None and label.classes:
        if label.flag_wrong:
            return "flagged"
        if prediction is not None and prediction.predicted and set(prediction.predicted.split(";")) != set(label.classes):
            return "disagreement"
        return "labelled"
    return "queued" if queued else "unlabelled"


def worklist_row(workspace, image_id: str, version: Optional[str] = None) -> WorklistRow:
    """One image's worklist row, as :func:`worklist_rows` would list it, read with per-image queries (no table of
    the workspace is read whole: this runs after every label). Raises :class:`core.errors.NotFound`."""
    ref = workspace.image(image_id)
    hidden = getattr(workspace, "model_hidden", lambda: False)()  # blinded double reading
    if hidden:
        prediction = None
    elif version is None:  # what the reader sees: the active model's, or its fast reading copy's
        from core.models.fast_mode import reading_predictions

        prediction = reading_predictions(workspace, [image_id]).get(image_id)
    else:
        prediction = workspace.prediction(version, image_id)
    label = workspace.current_label(image_id)
    rank = workspace.queue_rank(image_id)
    why = workspace.damaged_reason(image_id)
    return WorklistRow(ref, status_of(label, prediction, rank is not None, why is not None), label, prediction, rank,
                       why)


def worklist_rows(workspace, version: Optional[str] = None) -> list[WorklistRow]:
    """All images in worklist order with status, current label and the ``version``'s prediction.

    ``version`` defaults to the version the reader's predictions come from: the active model, or its gated
    fast reading copy when fast reading is on (:func:`core.models.fast_mode.reading_predictions`); without a
    model there are no predictions.
    """
    hidden = getattr(workspace, "model_hidden", lambda: False)()  # blinded double reading
    if version is None:
        from core.models.fast_mode import reading_predictions

        predictions = reading_predictions(workspace) if not hidden else {}
    else:
        predictions = workspace.predictions(version) if not hidden else {}
    labels = workspace.current_labels()
    queue = {item.image_id: item.rank for item in workspace.queue()}
    damaged = workspace.damaged_images()
    rows = []
    for ref in workspace.images():
        label = labels.get(ref.id)
        pred = predictions.get(ref.id)
        why = damaged.get(ref.id)
        rows.append(WorklistRow(ref, status_of(label, pred, ref.id in queue, why is not None), label, pred,
                                queue.get(ref.id), why))
    return rows
