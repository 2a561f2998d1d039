"""Importing studies into a workspace: scan files, store records, apply a labels CSV.

This is the one entry point the CLI and the app call to import; it never raises
for a bad file (each becomes an :class:`~core.types.ImportIssue`) and commits the
good ones as they are found.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Optional

from core.imaging import scan_paths
from core.imaging.photo import picture_as
from core.labels_csv import LabelRow, read_labels_csv
from core.progress import CancelToken, ProgressCallback
from core.types import PICTURE_MODALITIES, ImageRef, ImportIssue, ImportReport
from core.workspace import image_id_for_key

logger = logging.getLogger(__name__)

IMPORT_ANNOTATOR = "import"


def import_paths(
    workspace,
    paths: Iterable[str | Path],
    labels_csv: Optional[str | Path] = None,
    actor: str = "import",
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    as_modality: Optional[str] = None,
) -> ImportReport:
    """Import files and folders (recursively) into ``workspace``.

    Takes image paths and an optional labels CSV (see :mod:`core.labels_csv`).
    Returns an ImportReport: ``imported`` counts new images, ``skipped`` the ones
    already in the workspace, ``errors`` one entry per rejected file or CSV row.
    Raises LabelsFileError only when the CSV as a whole is unusable (checked
    before any image is stored), and Cancelled if ``cancel`` is set.

    ``as_modality`` says what the non-DICOM pictures are: ``"CR"``/``"DX"``
    (radiographs: stored grayscale with a window, augmented as radiographs) or
    ``"XC"`` (photographs, what None means for new pictures). DICOM files keep
    their own Modality. Given explicitly, it also re-labels pictures imported
    before; a labels CSV ``modality`` column overrides it per row. Raises
    ValueError for another code.
    """
    if as_modality is not None:
        as_modality = as_modality.strip().upper()
        if as_modality not in PICTURE_MODALITIES:
            raise ValueError(f"--as-modality must be CR or DX (radiograph) or XC (photograph), not {as_modality!r}")
    label_rows: list[LabelRow] = []
    errors: list[ImportIssue] = []
    if labels_csv is not None:
        label_rows, csv_issues = read_labels_csv(labels_csv)
        errors.extend(csv_issues)
    scan = scan_paths([Path(p) for p in paths], progress=progress, cancel=cancel)
    errors[:0] = scan.errors
    row_modality = {_norm(r.path): r.modality for r in label_rows if r.path is not None and r.modality}
    records = [picture_as(r, row_modality.get(_norm(r.path)) or as_modality) if r.kind == "photo"
               and (as_modality or _norm(r.path) in row_modality) else r for r in scan.records]
    new_ids, existing_ids = workspace.add_images(records, actor=actor)
    if as_modality is not None and existing_ids:
        # an explicit --as-modality also corrects pictures imported before (DICOM is left alone)
        workspace.set_image_details({i: {"modality": as_modality} for i in existing_ids}, actor=actor)
    labels_added = 0
    if label_rows:
        aliases = {_norm(r.path): image_id_for_key(r.key) for r in scan.records}
        labels_added, label_issues = apply_labels(workspace, label_rows, aliases)
        errors.extend(label_issues)
    logger.info("import: %d new, %d already present, %d errors, %d labels",
                len(new_ids), len(existing_ids), len(errors), labels_added)
    return ImportReport(
        imported=len(new_ids),
        skipped=len(existing_ids),
        errors=tuple(errors),
        image_ids=tuple(new_ids) + tuple(existing_ids),
        labels_added=labels_added,
    )


def apply_labels(workspace, rows: list[LabelRow], aliases: Optional[dict[str, str]] = None
                 ) -> tuple[int, list[ImportIssue]]:
    """Store CSV label rows as confirmed labels by annotator ``import``.

    Rows are matched to imported images by resolved path, or by file name when
    the CSV gave only a name (a name shared by several images is an issue).
    A row whose label, severity and split already stand is not added again, so
    importing the same CSV twice adds nothing. ``aliases`` maps scanned paths
    to image ids, so a row naming a byte-identical copy of an imported image is
    reported as a duplicate rather than as missing. Returns (labels added, issues).
    """
    images = workspace.images()
    by_path = {_norm(ref.path): ref for ref in images}
    by_name: dict[str, list[ImageRef]] = defaultdict(list)
    for ref in images:
        by_name[os.path.basename(ref.path)].append(ref)
    current = workspace.current_labels()
    issues: list[ImportIssue] = []
    batch = []
    details: dict[str, dict] = {}
    for row in rows:
        ref = _match(row, by_path, by_name, issues, aliases or {}, images)
        if ref is None:
            continue
        if row.split is not None and row.split != ref.split:
            workspace.set_split(ref.id, row.split)
        wanted = {"modality": row.modality if ref.record.kind == "photo" else None,
                  "patient": row.patient, "group": row.group}
        if any(wanted.values()):
            details[ref.id] = wanted
        label = current.get(ref.id)
        if label is not None and tuple(label.classes) == row.classes and label.severity == row.severity:
            continue
        batch.append({"image_id": ref.id, "classes": row.classes, "annotator": IMPORT_ANNOTATOR,
                      "source": "import", "severity": row.severity})
    if details:
        workspace.set_image_details(details, actor=IMPORT_ANNOTATOR)
    if batch:
        workspace.add_labels(batch)
    return len(batch), issues


def _match(row: LabelRow, by_path: dict, by_name: dict, issues: list[ImportIssue], aliases: dict,
           images: list[ImageRef]) -> Optional[ImageRef]:
    """The image a CSV row names, or None after recording why there is none."""
    if row.path is not None:
        ref = by_path.get(_norm(row.path))
        if ref is None:
            original = next((r for r in images if r.id == aliases.get(_norm(row.path))), None)
            reason = (f"same content as the already imported {original.path}: identical images are stored once, "
                      f"so this row is not applied" if original else "no imported image at this path")
            issues.append(ImportIssue(row.where, f"labels CSV line {row.line}: {reason}"))
        return ref
    matches = by_name.get(row.file or "", [])
    if len(matches) == 1:
        return matches[0]
    reason = ("no imported image has this file name" if not matches
              else f"{len(matches)} imported images share this file name; give a path instead")
    issues.append(ImportIssue(row.where, f"labels CSV line {row.line}: {reason}"))
    return None


def _norm(path: str | Path) -> str:
    """Canonical form of a path for matching."""
    return os.path.normcase(os.path.realpath(str(path)))
