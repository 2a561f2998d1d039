"""Fast reading mode: whole-pool prediction with the active model's gated INT8 or distilled copy.

A fast reading version (:mod:`core.models.fast_reading`) is registered linked to
its teacher only when it passed the three quality checks. When the workspace's
``fast_reading`` setting is on and such a version exists for the *active*
version, whole-pool prediction runs with it and its predictions are stored under
its own version name; the worklist, the reading panel, queue mode and the export
read them through :func:`reading_predictions`, each prediction naming the
version that produced it. Explanations, the active-learning queue's ranking and
training stay with the teacher (the full model). When the teacher changes (a new
version is activated) its old fast copy no longer applies: prediction falls back
to the full model until a fast copy of the new teacher passes the checks.

Everything here reads the workspace only (no torch) except :func:`predict_pool`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Iterable, Optional

from core.errors import ModelError
from core.progress import CancelToken, ProgressCallback
from core.types import ModelVersion, Prediction

logger = logging.getLogger(__name__)

#: workspace setting (``loupe settings set fast_reading on|off``)
FAST_SETTING = "fast_reading"


def _number(version: str) -> int:
    m = re.fullmatch(r"v(\d+)", version)
    return int(m.group(1)) if m else -1


def is_gated(record: ModelVersion, teacher: Optional[str] = None) -> bool:
    """Whether ``record`` is a fast reading version that passed every check (of ``teacher`` when given)."""
    comp = (record.params or {}).get("compression") or {}
    checks = comp.get("checks") or []
    if not comp.get("kind") or not checks or not all(c.get("passed") for c in checks):
        return False
    if record.status == "rejected":
        return False
    if teacher is not None and (comp.get("teacher") != teacher or record.parent != teacher):
        return False
    return True


def gated_fast_version(workspace, teacher: Optional[ModelVersion] = None) -> Optional[ModelVersion]:
    """The newest fast reading version linked to ``teacher`` (default: the active version) that passed the gate.

    None when there is no active model, the teacher is itself a compressed version,
    or no compressed copy of *this* teacher passed (a copy of an earlier teacher
    never serves a newer one).
    """
    teacher = teacher if teacher is not None else workspace.active_model()
    if teacher is None or (teacher.params or {}).get("compression"):
        return None
    found = [m for m in workspace.models() if is_gated(m, teacher.version)]
    return max(found, key=lambda m: (_number(m.version), m.created_at)) if found else None


def describe_kind(record: ModelVersion) -> str:
    """"INT8" or "distilled mobilenet_v3_large" for a fast reading version."""
    comp = (record.params or {}).get("compression") or {}
    if comp.get("kind") == "int8":
        return "INT8"
    if comp.get("kind") == "distilled":
        return f"distilled {comp.get('student_arch') or record.arch}"
    return str(comp.get("kind") or record.arch)


def fast_reading_enabled(workspace) -> bool:
    """The workspace's ``fast_reading`` setting (off when never set)."""
    value = workspace.get_setting(FAST_SETTING, "off")
    return value is True or str(value).strip().lower() in ("on", "true", "1", "yes")


@dataclass(frozen=True)
class ReadingModel:
    """Which version predicts for the reader, and why.

    ``teacher``: the active version (explanations come from it); ``fast``: the gated
    version used for prediction (None when fast reading is off or none exists);
    ``requested``: the setting; ``unavailable``: why no fast version can be used
    ("" when one can).
    """

    teacher: Optional[str]
    fast: Optional[str] = None
    kind: str = ""
    requested: bool = False
    available: Optional[str] = None  # the gated version, whether or not fast reading is on
    unavailable: str = ""

    @property
    def version(self) -> Optional[str]:
        """The version whose predictions the reader sees."""
        return self.fast or self.teacher

    @property
    def on(self) -> bool:
        """True when prediction runs with the fast version."""
        return self.fast is not None

    def describe(self) -> str:
        """"Fast reading: INT8 v5 of v4", or "" when fast reading is not in use."""
        return f"Fast reading: {self.kind} {self.fast} of {self.teacher}" if self.fast else ""

    def explanation_note(self) -> str:
        """What the explanation panel says about where its maps come from ("" when fast reading is off)."""
        return (f"Explanation from the full model {self.teacher} (fast reading predicts with {self.fast})"
                if self.fast else "")

    def to_json(self) -> dict:
        """A plain dict (the window's model summary carries it)."""
        return {"teacher": self.teacher, "fast": self.fast, "kind": self.kind, "requested": self.requested,
                "available": self.available, "unavailable": self.unavailable, "version": self.version,
                "describe": self.describe(), "explanation": self.explanation_note()}

    @classmethod
    def from_json(cls, data: dict) -> "ReadingModel":
        """The inverse of :meth:`to_json`."""
        return cls(data.get("teacher"), data.get("fast"), data.get("kind", ""), bool(data.get("requested")),
                   data.get("available"), data.get("unavailable", ""))


def reading_model(workspace, fast: Optional[bool] = None) -> ReadingModel:
    """The version the reader's predictions come from: the active one, or its gated fast copy when fast reading
    is on (``fast``; default: the workspace setting) and one exists."""
    requested = fast_reading_enabled(workspace) if fast is None else bool(fast)
    teacher = workspace.active_model()
    if teacher is None:
        return ReadingModel(None, requested=requested, unavailable="no model is active yet")
    if (teacher.params or {}).get("compression"):
        return ReadingModel(teacher.version, requested=requested,
                            unavailable=f"the active model {teacher.version} is itself a fast reading version; "
                                        f"activate its teacher {teacher.parent} to read fast")
    gated = gated_fast_version(workspace, teacher)
    if gated is None:
        return ReadingModel(teacher.version, requested=requested,
                            unavailable=f"no fast reading version of {teacher.version} has passed the quality "
                                        f"checks yet (Model → Make fast reading version…, or `loupe model quantize`)")
    kind = describe_kind(gated)
    return ReadingModel(teacher.version, gated.version if requested else None, kind, requested, gated.version)


def reading_predictions(workspace, image_ids: Optional[Iterable[str]] = None,
                        reading: Optional[ReadingModel] = None) -> dict[str, Prediction]:
    """``{image_id: Prediction}`` the reader sees: the fast version's when fast reading is on, else the active's.

    With fast reading on, an image the fast version has not predicted yet keeps the
    full model's prediction (its ``version`` says so). Empty without an active model.
    With fast reading off (and no ``reading`` given) only the active version is read: the
    registry is not scanned for a fast copy (the worklist row refresh after every label calls this).
    """
    if reading is None and not fast_reading_enabled(workspace):
        active = workspace.active_model()  # what reading_model(...).version is when fast reading is off
        if active is None:
            return {}
        return workspace.predictions(active.version, None if image_ids is None else list(image_ids))
    reading = reading or reading_model(workspace)
    if reading.teacher is None:
        return {}
    ids = None if image_ids is None else list(image_ids)
    out = workspace.predictions(reading.teacher, ids)
    if reading.fast:
        out.update(workspace.predictions(reading.fast, ids))
    return out


def explanation_target(workspace, image_id: str, reading: Optional[ReadingModel] = None) -> Optional[str]:
    """The class an explanation of "the predicted class" should explain under fast reading: the one the fast
    version predicted for ``image_id`` (what the reader sees), explained by the full model.

    None when fast reading is off, the fast version has not read the image, or it predicted several findings
    (multi-label): the explainer then uses the full model's own predicted class.
    """
    reading = reading or reading_model(workspace)
    if not reading.fast:
        return None
    prediction = workspace.predictions(reading.fast, [image_id]).get(image_id)
    if prediction is None or not prediction.predicted or ";" in prediction.predicted:
        return None
    return prediction.predicted


def ranked_by_note(item_version: Optional[str], reading: Optional[dict]) -> str:
    """A sentence for a queued case's reason under fast reading: the queue is ranked by the full model, whose
    probabilities the reason quotes, while the bars show the fast version's ("" when there is nothing to say).

    ``reading``: :meth:`ReadingModel.to_json` (the window's model summary carries it)."""
    fast = (reading or {}).get("fast")
    if not fast or not item_version or item_version == fast:
        return ""
    return f" Ranked by the full model {item_version}; fast reading predicts with {fast}."


def set_fast_reading(workspace, on: bool, actor: str = "system") -> ReadingModel:
    """Turn fast reading on or off (the audited ``fast_reading`` setting); returns the reading model in effect.

    Raises ModelError when turning it on while no gated fast version exists for the active model.
    """
    from core.active.settings import write_setting

    if on:
        current = reading_model(workspace, fast=True)
        if current.fast is None:
            raise ModelError(f"fast reading is not available: {current.unavailable}")
    write_setting(workspace, FAST_SETTING, "on" if on else "off", actor=actor)
    return reading_model(workspace)


def predict_pool(workspace, image_ids: Optional[list[str]] = None, fast: Optional[bool] = None,
                 only_missing: bool = False, batch_size: int = 16, device: str = "auto",
                 progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None):
    """Whole-pool prediction with the version fast reading calls for, stored under that version.

    ``fast``: None follows the workspace setting; True requires a gated fast version
    (ModelError naming why there is none); False uses the active model.
    ``only_missing`` predicts only the images that version has not predicted yet.
    Returns ``(ReadingModel, predictions, failures)``.
    """
    from core.models.service import predict_images

    reading = reading_model(workspace, fast=fast)
    if fast and reading.fast is None:
        raise ModelError(f"no fast reading version to predict with: {reading.unavailable}")
    if reading.version is None:
        raise ModelError("no model is active in this workspace; create one with `loupe model create`")
    ids = image_ids
    if only_missing:
        have = set(workspace.predictions(reading.version))
        pool = image_ids if image_ids is not None else [r.id for r in workspace.images()]
        ids = [i for i in pool if i not in have]
    predictions, failed = predict_images(workspace, ids, reading.version, batch_size=batch_size, device=device,
                                         progress=progress, cancel=cancel) if ids is None or ids else ([], [])
    logger.info("predicted %d images with %s%s", len(predictions), reading.version,
                f" ({reading.describe()})" if reading.fast else "")
    return reading, predictions, failed
