"""CSV and JSON exports: one row per image with its current label and the active model's prediction.

Columns: ``image_id, path, study_uid, series_uid, sop_uid, modality, label`` (classes
joined by ``;``), ``severity, annotator, labelled_at, label_source, flag_wrong, note,
predicted, model_version, predicted_severity, predicted_severity_probability`` (the model's
grade name and its probability, when it has a severity head) and ``prob_<class>`` per class
of the active model.

With a :class:`~core.export.deidentify.Deidentifier`, the image id becomes a salted
pseudonym, UIDs are remapped exactly as in the DICOM objects of the same export, the
``path`` column is dropped, ``labelled_at`` is shifted by the patient's date offset,
annotator names become pseudonyms (system actors such as ``import`` stay) and free-text
notes are withheld, since a note can name a patient.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any, Optional

from core.export.deidentify import Deidentifier
from core.types import ImageRef, Label, Prediction

logger = logging.getLogger(__name__)

#: Annotator names that are Loupe's own actors, not people: kept when de-identifying.
SYSTEM_ACTORS = frozenset({"import", "model", "cli", "system", "app", "oracle", "simulate"})

BASE_COLUMNS = ["image_id", "path", "study_uid", "series_uid", "sop_uid", "modality", "label", "severity",
                "annotator", "labelled_at", "label_source", "flag_wrong", "note", "predicted", "model_version",
                "predicted_severity", "predicted_severity_probability"]


def annotator_name(name: str, deid: Optional[Deidentifier]) -> str:
    """The annotator as exported: unchanged, or a pseudonym for people when de-identifying."""
    if deid is None or not name or name in SYSTEM_ACTORS:
        return name
    return deid.pseudonym("annotator", name, length=8)


def image_row(ref: ImageRef, label: Optional[Label], prediction: Optional[Prediction],
              version: Optional[str], deid: Optional[Deidentifier],
              grade_names: Optional[list[str]] = None) -> dict[str, Any]:
    """One export row (``probs`` kept as a dict; :func:`write_csv` flattens it)."""
    grade = prediction.severity if prediction else None
    names = grade_names or []
    rec = ref.record
    uid = (lambda v: deid.uid(v) if v else v) if deid else (lambda v: v)
    patient_key = rec.patient_id or rec.patient_name or ""  # as Deidentifier.deidentify keys a header
    row: dict[str, Any] = {
        "image_id": deid.pseudonym("img", ref.id, 12) if deid else ref.id,
        "path": None if deid else rec.path,
        "study_uid": uid(rec.study_uid), "series_uid": uid(rec.series_uid), "sop_uid": uid(rec.sop_uid),
        "modality": rec.modality,
        "label": ";".join(label.classes) if label else None,
        "classes": list(label.classes) if label else [],
        "severity": label.severity if label else None,
        "annotator": annotator_name(label.annotator, deid) if label else None,
        "labelled_at": (deid.shift_iso(label.created_at, patient_key) if deid else label.created_at)
        if label else None,
        "label_source": label.source if label else None,
        "flag_wrong": bool(label.flag_wrong) if label else None,
        "note": ("" if deid else label.note) if label else None,
        "predicted": prediction.predicted if prediction else None,
        "model_version": (prediction.version or version) if prediction else None,
        "predicted_severity": (names[grade] if grade < len(names) else str(grade)) if grade is not None else None,
        "predicted_severity_probability": (round(float(prediction.severity_probability), 6)
                                           if grade is not None and prediction.severity_probability is not None
                                           else None),
        "probs": dict(prediction.probs) if prediction else {},
    }
    if deid:
        del row["path"]
    return row


def build_rows(ws, deid: Optional[Deidentifier] = None) -> tuple[list[dict], list[str], Optional[str]]:
    """Rows for every image of the workspace ``ws``, the active model's classes and its version.

    Returns ``(rows, classes, version)``; ``classes`` is empty and ``version`` None without an active model.
    """
    labels = ws.current_labels()
    model = ws.active_model()
    version = model.version if model else None
    classes = list(model.classes) if model else []
    from core.models.fast_mode import reading_predictions

    predictions = reading_predictions(ws) if model else {}  # the fast reading copy's when fast reading is on
    from core.models.severity import severity_scale

    levels = int((model.params.get("config") or {}).get("severity_levels") or 0) if model else 0
    names = severity_scale(ws, levels)
    rows = [image_row(ref, labels.get(ref.id), predictions.get(ref.id), version, deid, names)
            for ref in ws.images()]
    logger.info("export: %d rows, model %s", len(rows), version)
    return rows, classes, version


def write_csv(rows: list[dict], classes: list[str], path: Path) -> None:
    """Write ``rows`` as CSV with one ``prob_<class>`` column per class (creates the parent folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = [c for c in BASE_COLUMNS if not rows or c in rows[0]] + [f"prob_{c}" for c in classes]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            flat = {k: ("" if v is None else v) for k, v in row.items() if k not in ("probs", "classes")}
            flat.update({f"prob_{c}": round(float(p), 6) for c, p in row["probs"].items() if c in classes})
            writer.writerow(flat)


def write_json(rows: list[dict], classes: list[str], version: Optional[str], deidentified: bool,
               path: Path) -> None:
    """Write one JSON document ``{"format", "schema", "deidentified", "model_version", "classes", "images"}``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format": "loupe-export", "schema": 1, "deidentified": deidentified, "model_version": version,
           "classes": classes, "images": rows}
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False), encoding="utf-8")
