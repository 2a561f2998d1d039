"""Importing studies into a workspace: scan files, store records, apply a labels CSV.

This is the one entry point the CLI and the app call to import; it never raises
for a bad file (each becomes an :class:`~core.types.ImportIssue`) and commits the
good ones as they are found.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from core.errors import DamagedImageError, LoupeError
from core.imaging import scan_paths
from core.imaging.integrity import IntegrityOptions
from core.imaging.photo import picture_as
from core.imaging.scan import ScanResult, scan_file
from core.labels_csv import LabelRow, read_labels_csv
from core.progress import CancelToken, ProgressCallback
from core.types import PICTURE_MODALITIES, ImageRecord, ImageRef, ImportIssue, ImportReport
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
    integrity: Optional[IntegrityOptions] = None,
) -> ImportReport:
    """Import files and folders (recursively) into ``workspace``.

    Takes image paths, an optional labels CSV (see :mod:`core.labels_csv`) and
    the integrity options (trial decode on or off, size limit; see
    :mod:`core.imaging.integrity`). Returns an ImportReport: ``imported``
    counts new images, ``skipped`` the images already in the workspace,
    ``skipped_files`` those and the files not looked at (a labels CSV, hidden
    names), each with its reason, ``errors`` one entry per rejected
    file (damaged, unreadable, or in conflict: same identity, different
    content) or CSV row, ``replaced`` the intact files that took the place of
    a damaged stored copy. Every file not imported is in ``errors`` or
    ``skipped_files``, and in the log. Raises LabelsFileError only when the
    CSV as a whole is unusable (checked before any image is stored), and
    Cancelled if ``cancel`` is set.

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
    scan = scan_paths([Path(p) for p in paths], progress=progress, cancel=cancel, integrity=integrity)
    row_modality = {_norm(r.path): r.modality for r in label_rows if r.path is not None and r.modality}
    scan.records = [picture_as(r, row_modality.get(_norm(r.path)) or as_modality) if r.kind == "photo"
                    and (as_modality or _norm(r.path) in row_modality) else r for r in scan.records]
    plan = _plan(workspace, scan, actor, integrity)
    errors[:0] = plan.errors
    new_ids, existing_ids = workspace.add_images(plan.to_add, actor=actor)
    present = tuple(dict.fromkeys(tuple(existing_ids) + tuple(plan.kept_ids)))  # images already in the workspace
    if as_modality is not None and present:
        # an explicit --as-modality also corrects pictures imported before (DICOM is left alone)
        workspace.set_image_details({i: {"modality": as_modality} for i in present}, actor=actor)
    for issue in plan.skipped:
        logger.info("import skipped %s: %s", issue.path, issue.reason)
    for issue in plan.errors:
        logger.info("import rejected %s: %s", issue.path, issue.reason)
    labels_added = 0
    if label_rows:
        aliases = {_norm(r.path): image_id_for_key(r.key) for r in scan.records}
        labels_added, label_issues = apply_labels(workspace, label_rows, aliases)
        errors.extend(label_issues)
    logger.info("import: %d new, %d skipped, %d replaced, %d errors, %d labels",
                len(new_ids), len(plan.skipped), len(plan.replaced), len(errors), labels_added)
    return ImportReport(
        imported=len(new_ids),
        skipped=len(plan.skipped) - len(scan.skipped),  # images already present; sidecars are only listed
        errors=tuple(errors),
        image_ids=tuple(dict.fromkeys(tuple(new_ids) + present)),
        labels_added=labels_added,
        skipped_files=tuple(plan.skipped),
        replaced=tuple(plan.replaced),
    )


@dataclass
class _Plan:
    to_add: list[ImageRecord] = field(default_factory=list)
    skipped: list[ImportIssue] = field(default_factory=list)
    errors: list[ImportIssue] = field(default_factory=list)
    replaced: list[ImportIssue] = field(default_factory=list)
    kept_ids: list[str] = field(default_factory=list)


def _identity(key: str) -> str:
    return "photo content" if key.startswith("sha256:") else f"SOP Instance UID {key}"


def _plan(workspace, scan: ScanResult, actor: str, integrity: Optional[IntegrityOptions]) -> _Plan:
    """Decide, per scanned image, between adding, skipping (with why), replacing a damaged copy and a conflict."""
    plan = _Plan()
    keys = [r.key for r in scan.records] + list(scan.damaged_keys.values())
    stored = workspace.images_by_keys(keys) if keys else {}
    first_in_batch: dict[str, ImageRecord] = {}
    for rec in scan.records:
        path = os.path.abspath(rec.path)
        earlier = first_in_batch.get(rec.key)
        if earlier is not None:
            if same_content(earlier.path, path, rec.key):
                plan.skipped.append(ImportIssue(path, f"identical copy of {earlier.path} (imported once)"))
            else:
                plan.errors.append(ImportIssue(path, f"conflict: same image identity ({_identity(rec.key)}) as "
                                                     f"{earlier.path} but different content; only {earlier.path} "
                                                     f"was imported"))
            continue
        first_in_batch[rec.key] = rec
        old = stored.get(rec.key)
        if old is None:
            plan.to_add.append(rec)
            continue
        old_path = old["path"]
        if _norm(old_path) == _norm(path):
            plan.skipped.append(ImportIssue(path, "already imported"))
            plan.kept_ids.append(old["id"])
        elif not os.path.exists(old_path):
            plan.to_add.append(rec)  # add_images points the stored image at its new place
            plan.skipped.append(ImportIssue(path, f"already imported from {old_path}, which no longer exists: "
                                                  f"the image now points to this file"))
        elif same_content(old_path, path, rec.key):
            plan.skipped.append(ImportIssue(path, f"identical copy of the already imported {old_path}"))
            plan.kept_ids.append(old["id"])
        else:
            damage = old["damaged"] or _stored_damage(old_path, integrity)
            if damage:
                workspace.replace_image_file(old["id"], rec, actor=actor, reason=damage)
                plan.replaced.append(ImportIssue(path, f"replaced the damaged copy {old_path} ({damage})"))
                plan.kept_ids.append(old["id"])
                logger.warning("import: intact %s replaced damaged %s (%s)", path, old_path, damage)
            else:
                plan.errors.append(ImportIssue(path, f"conflict: same image identity ({_identity(rec.key)}) as the "
                                                     f"already imported {old_path} but different content; the "
                                                     f"stored copy was kept"))
    # A damaged file whose identity is known elsewhere is a damaged copy of that image: say which.
    intact = {k: os.path.abspath(r.path) for k, r in first_in_batch.items()}
    intact.update({k: v["path"] for k, v in stored.items() if k not in intact})
    for i, issue in enumerate(scan.errors):
        key = scan.damaged_keys.get(issue.path)
        other = intact.get(key) if key else None
        if other and _norm(other) != _norm(issue.path):
            scan.errors[i] = ImportIssue(issue.path, f"{issue.reason}; it is a damaged copy of {other}, "
                                                     f"which is imported")
    plan.errors[:0] = scan.errors
    plan.skipped.extend(scan.skipped)
    return plan


def _stored_damage(path: str, integrity: Optional[IntegrityOptions]) -> Optional[str]:
    """The reason the stored file at ``path`` is damaged, or None when it passes the import checks."""
    try:
        scan_file(path, integrity)
    except DamagedImageError as exc:
        return str(exc)
    except LoupeError:
        return None
    return None


def same_content(a: str, b: str, key: str = "") -> bool:
    """True when two files hold the same bytes (photographs: same key means same bytes)."""
    if key.startswith("sha256:"):
        return True
    try:
        if os.path.getsize(a) != os.path.getsize(b):
            return False
        return _sha256(a) == _sha256(b)
    except OSError:
        return False


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fp:
        for block in iter(lambda: fp.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def report_details(report: ImportReport, limit: int = 30) -> str:
    """Every file the import did not take, one line each (rejected, skipped, replaced), for a window or a log.

    At most ``limit`` lines per kind, then a count of the rest.
    """
    lines: list[str] = []
    for title, items in (("not imported", report.errors), ("skipped", report.skipped_files),
                         ("replaced a damaged copy", report.replaced)):
        for issue in items[:limit]:
            lines.append(f"{title}: {os.path.basename(issue.path)}: {issue.reason}")
        if len(items) > limit:
            lines.append(f"… and {len(items) - limit} more {title}")
    return "\n".join(lines)


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
