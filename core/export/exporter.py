"""``export_workspace``: a workspace's labels, predictions and explanation maps as CSV, JSON or DICOM.

Formats:

* ``csv`` / ``json``: ``out`` is a file, one row per image (see :mod:`core.export.tabular`).
* ``dicom-sr``: ``out`` is a new (or empty) folder holding

  - ``PH-00001.dcm`` … : one VL Photographic Image per labelled or explained photograph
    (PNG/JPEG/TIFF have no DICOM header, so the photograph itself is written as the
    object the SR and SC reference; its UIDs are derived from workspace keys, so they
    are the same in every export without ``deidentify``; :mod:`core.export.photo_dicom`),
  - ``SR-00001.dcm`` … : one TID 1500 Comprehensive SR per labelled image, DICOM or
    photograph (:mod:`core.export.sr`),
  - ``SC-00001.dcm`` … : one Secondary Capture per cached explanation map of the active
    model (:mod:`core.export.secondary_capture`),
  - ``manifest.json``: which file belongs to which image (``kind`` ``photo``, ``sr`` or ``sc``).

  File names are counters, never identifiers. Each study gets one SR series and one SC
  series (and its photographs one photo series); ``counts`` has ``photo``, ``sr``, ``sc``
  and ``skipped``.

With ``deidentify`` every DICOM object is built from the source header after
:meth:`~core.export.deidentify.Deidentifier.deidentify` (PS3.15 Basic Profile), so
patient, study and UIDs are pseudonymised consistently across SRs, SCs, manifest
and CSV/JSON of the same export; a fresh salt makes each export's mapping new. A
photograph's object goes through the same call before it is written or referenced.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from core.errors import LoupeError
from core.export.deidentify import Deidentifier, mark_deidentified
from core.export.tabular import annotator_name, build_rows, write_csv, write_json
from core.progress import CancelToken, ProgressCallback, report

logger = logging.getLogger(__name__)

FORMATS = ("csv", "json", "dicom-sr")


@dataclass
class ExportReport:
    """What an export wrote: files (paths), counts by kind, and skipped images with reasons."""

    format: str
    out: str
    deidentified: bool
    files: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    #: images held back from a de-identified export because their pixels may carry burned-in text
    held_back: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (the ``loupe export --json`` document)."""
        return {"format": self.format, "out": self.out, "deidentified": self.deidentified, "files": self.files,
                "counts": self.counts, "skipped": self.skipped, "held_back": self.held_back}


def export_workspace(ws, out, fmt: str, deidentify: bool = False, progress: Optional[ProgressCallback] = None,
                     cancel: Optional[CancelToken] = None, salt: Optional[bytes] = None,
                     actor: str = "system", include_burned_in: bool = False) -> ExportReport:
    """Export the workspace ``ws`` to ``out`` in format ``fmt`` (``csv``, ``json`` or ``dicom-sr``).

    ``deidentify`` applies the PS3.15 Basic Profile (pseudonymous ids, remapped UIDs,
    shifted dates, no paths or notes); ``salt`` fixes its mapping (default: random).
    De-identification cannot remove text burned into pixels: a de-identified ``dicom-sr``
    export therefore holds back every image whose header says Burned In Annotation = YES,
    and every photograph (which may show a name, a label or a face), unless
    ``include_burned_in``; they are listed in ``held_back``. CSV and JSON carry no pixels.
    The export is recorded in the audit log as ``export.<fmt>`` by ``actor``.
    Returns an :class:`ExportReport`. Raises :class:`~core.errors.LoupeError` for an
    unknown format or an ``out`` folder that is not empty, ``Cancelled`` when cancelled.
    """
    if fmt not in FORMATS:
        raise LoupeError(f"unknown export format '{fmt}': use {', '.join(FORMATS)}")
    out = Path(out)
    deid = Deidentifier(salt) if deidentify else None
    result = ExportReport(format=fmt, out=str(out), deidentified=deidentify)
    if fmt in ("csv", "json"):
        if out.is_dir():
            raise LoupeError(f"{out} is a folder: give a file name for the {fmt.upper()} export")
        rows, classes, version = build_rows(ws, deid)
        report(progress, 0, 1, f"writing {out.name}")
        (write_csv(rows, classes, out) if fmt == "csv"
         else write_json(rows, classes, version, deidentify, out))
        result.files.append(str(out))
        result.counts = {"images": len(rows), "labelled": sum(1 for r in rows if r["label"]),
                         "predicted": sum(1 for r in rows if r["predicted"])}
        report(progress, 1, 1, "done")
    else:
        _export_dicom(ws, out, deid, result, progress, cancel, hold_back=deidentify and not include_burned_in)
    ws.audit(actor, f"export.{fmt}", str(out), {"deidentified": deidentify, "counts": result.counts,
                                         "files": len(result.files), "skipped": len(result.skipped),
                                         "held_back": len(result.held_back),
                                         "include_burned_in": bool(include_burned_in)})
    logger.info("exported %s to %s: %s", fmt, out, result.counts)
    return result


def cached_maps(ws, ref, model) -> list[dict]:
    """The active model's cached explanation maps of one image (every method, target and parameter set),
    as ``get_explanation`` dicts."""
    return ws.explanations_for(ref.id, model.version)


def _unpack_map(data: bytes):
    import io

    import numpy as np

    with np.load(io.BytesIO(data)) as archive:
        return archive["map"].astype(np.float32)


def _burned_in(ref) -> bool:
    """True when the image's DICOM header says Burned In Annotation = YES (False when it cannot be read)."""
    import pydicom

    try:
        ds = pydicom.dcmread(ref.path, stop_before_pixels=True, force=True, specific_tags=["BurnedInAnnotation"])
        return str(ds.get("BurnedInAnnotation", "") or "").strip().upper() == "YES"
    except Exception:  # noqa: BLE001 - an unreadable header is reported by the export itself
        return False


def _header(ref):
    import pydicom

    ds = pydicom.dcmread(ref.path, stop_before_pixels=True, force=True)
    missing = [k for k in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
               if not ds.get(k)]
    if missing:
        raise ValueError(f"the header lacks {', '.join(missing)}")
    return ds


#: File name prefix of each kind of exported object.
PREFIXES = {"photo": "PH", "sr": "SR", "sc": "SC"}


def _photo_source(ref, deid: Optional[Deidentifier], instance_number: int):
    """(VL Photographic Image dataset, de-identified when ``deid`` is given; its rendering uint8)."""
    from core.export.photo_dicom import build_photo
    from core.imaging import render
    from core.imaging.photo import sniff_photo

    image = render(ref.path)
    with open(ref.path, "rb") as fh:  # the workspace does not keep the file format; lossy or not depends on it
        fmt = sniff_photo(fh.read(16))
    photo = build_photo(ref.record, image, instance_number=instance_number, file_format=fmt)
    return (deid.deidentify(photo) if deid is not None else photo), image


HELD_BACK_PHOTO = ("a photograph may show burned-in text (a name, a label, a face) that de-identification cannot "
                   "remove; include it explicitly (--include-burned-in) to export it")
HELD_BACK_DICOM = ("its header says Burned In Annotation = YES: text in its pixels cannot be removed by "
                   "de-identification; include it explicitly (--include-burned-in) to export it")


def _export_dicom(ws, out: Path, deid: Optional[Deidentifier], result: ExportReport,
                  progress: Optional[ProgressCallback], cancel: Optional[CancelToken], hold_back: bool = False) -> None:
    import highdicom as hd

    from core.export.secondary_capture import build_sc
    from core.export.sr import build_sr
    from core.imaging import render

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LoupeError(f"{out} already exists and is not an empty folder: choose a new folder for the DICOM export")
    out.mkdir(parents=True, exist_ok=True)
    labels = ws.current_labels()
    model = ws.active_model()
    from core.models.fast_mode import reading_predictions

    predictions = reading_predictions(ws) if model else {}  # the fast reading copy's when fast reading is on
    producers = {v: ws.model(v) for v in {p.version for p in predictions.values()} if model and v != model.version}
    refs = ws.images()
    series: dict[tuple[str, str], str] = {}
    manifest: list[dict] = []
    counts = {"photo": 0, "sr": 0, "sc": 0}

    def shown(image_id: str) -> str:
        return deid.pseudonym("img", image_id, 12) if deid else image_id

    def write(ds, kind: str, ref, referenced: Optional[str]) -> None:
        if deid is not None:
            mark_deidentified(ds)
        counts[kind] += 1
        name = f"{PREFIXES[kind]}-{counts[kind]:05d}.dcm"
        ds.save_as(out / name, enforce_file_format=True)
        result.files.append(str(out / name))
        manifest.append({"file": name, "kind": kind, "image_id": shown(ref.id), "sop_class_uid": ds.SOPClassUID,
                         "sop_instance_uid": ds.SOPInstanceUID, "referenced_sop_instance_uid": referenced})

    for done, ref in enumerate(refs):
        if cancel is not None:
            cancel.check()
        report(progress, done, len(refs), f"exporting image {done + 1} of {len(refs)}")
        label = labels.get(ref.id)
        label = label if label is not None and label.classes else None
        maps = cached_maps(ws, ref, model) if model is not None else []
        if label is None and not maps:
            continue
        if hold_back and ref.record.kind != "dicom":
            result.held_back.append({"id": shown(ref.id), "reason": HELD_BACK_PHOTO})
            continue
        if hold_back and _burned_in(ref):
            result.held_back.append({"id": shown(ref.id), "reason": HELD_BACK_DICOM})
            continue
        image = None
        if ref.record.kind != "dicom":
            try:
                source, image = _photo_source(ref, deid, counts["photo"] + 1)
            except Exception as error:  # unreadable or moved photograph: report, keep going
                why = getattr(error, "strerror", None) or error  # an OSError's text names the path
                result.skipped.append({"id": shown(ref.id), "reason": f"cannot read the photograph: {why}"})
                continue
            write(source, "photo", ref, None)
        else:
            try:
                source = _header(ref)
            except Exception as error:  # unreadable or incomplete header: report, keep going
                result.skipped.append({"id": shown(ref.id), "reason": f"cannot use its DICOM header: {error}"})
                continue
            if deid is not None:
                source = deid.deidentify(source)
        study = str(source.StudyInstanceUID)
        if label is not None:
            prediction = predictions.get(ref.id)
            sr = build_sr(source, label, annotator=annotator_name(label.annotator, deid),
                          model=producers.get(prediction.version, model) if prediction else model,
                          prediction=prediction,
                          series_uid=series.setdefault((study, "sr"), hd.UID()), instance_number=counts["sr"] + 1)
            write(sr, "sr", ref, str(source.SOPInstanceUID))
        # burned-in images reach this point in a de-identified export only when included explicitly
        if maps and image is None:
            image = render(ref.path)
        for hit in maps:
            meta = hit.get("meta") or {}
            description = (f"Loupe explanation map: {hit['method']} for target {meta.get('target', hit['target'])} "
                           f"by model {hit['version']}")
            sc = build_sc(source, image, _unpack_map(hit["data"]), description=description,
                          series_uid=series.setdefault((study, "sc"), hd.UID()), instance_number=counts["sc"] + 1)
            write(sc, "sc", ref, str(source.SOPInstanceUID))
    (out / "manifest.json").write_text(json.dumps({"deidentified": deid is not None, "files": manifest}, indent=1))
    result.counts = {**counts, "skipped": len(result.skipped)}
    report(progress, len(refs), len(refs), "done")
