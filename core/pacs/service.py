"""One door to the PACS for the window and the command line: the node picks DIMSE or DICOMweb."""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from pathlib import Path
from typing import Iterable, Optional

from core.progress import CancelToken, ProgressCallback

from . import dimse, web
from .node import PacsError, PacsNode, StudyMatch, check_filters

logger = logging.getLogger(__name__)


def _backend(node: PacsNode):
    node.validate()
    return web if node.is_web else dimse


def query(node: PacsNode, patient_id: Optional[str] = None, study_uid: Optional[str] = None) -> list[StudyMatch]:
    """Studies on ``node`` matching a patient id and/or a study UID (C-FIND or QIDO-RS).

    Raises :class:`PacsError` for an unusable node, no filter, or a node that refuses.
    """
    check_filters(patient_id, study_uid)
    return _backend(node).query(node, patient_id, study_uid)


def retrieve(node: PacsNode, study_uid: str, folder: Path, progress: Optional[ProgressCallback] = None,
             cancel: Optional[CancelToken] = None) -> tuple[list[Path], list[dict]]:
    """Every instance of the study from ``node`` into ``folder`` (C-GET or WADO-RS); see :mod:`.dimse`."""
    return _backend(node).retrieve(node, study_uid, Path(folder), progress, cancel)


def retrieve_and_import(workspace, node: PacsNode, study_uid: str, store: Path, actor: str = "pacs",
                        progress: Optional[ProgressCallback] = None, cancel: Optional[CancelToken] = None):
    """Retrieve a study into a temporary folder, move it under ``store/<study uid>``, then import it.

    The files stay under ``store`` because the workspace refers to images by
    path. Instances that fail to arrive are listed in the import report's
    errors. Returns the :class:`~core.types.ImportReport`.
    """
    from core.importer import import_paths
    from core.types import ImportIssue

    backend = _backend(node)
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    final = store / study_uid
    with tempfile.TemporaryDirectory(prefix=".retrieve-", dir=store) as tmp:
        files, failures = backend.retrieve(node, study_uid, Path(tmp), progress, cancel)
        final.mkdir(exist_ok=True)
        for path in files:
            os.replace(path, final / path.name)  # same file system: atomic
    logger.info("retrieved %d instance(s) of %s from %s", len(files), study_uid, node.describe())
    report = import_paths(workspace, [final], actor=actor, progress=progress, cancel=cancel)
    if failures:
        extra = tuple(ImportIssue(path=f.get("path") or study_uid, reason=f["reason"]) for f in failures)
        report = dataclasses.replace(report, errors=tuple(report.errors) + extra)
    workspace.audit(actor, "pacs.retrieve", study_uid, {"node": node.describe(), "instances": len(files),
                                                          "imported": report.imported, "failed": len(failures)})
    return report


def dicom_files(paths: Iterable[Path]) -> list[Path]:
    """Files named directly, and every file under folders named (sorted); ``manifest.json`` is left out."""
    out = []
    for path in map(Path, paths):
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() != ".json")
        elif path.exists():
            out.append(path)
        else:
            raise PacsError(f"{path} does not exist")
    return out


def send(node: PacsNode, paths: Iterable[Path], progress: Optional[ProgressCallback] = None,
         cancel: Optional[CancelToken] = None) -> dict:
    """Send DICOM files or folders to ``node`` (C-STORE or STOW-RS).

    Returns ``{"sent": int, "failed": [{"path", "reason"}]}``.
    """
    files = dicom_files(paths)
    if not files:
        raise PacsError("nothing to send: no files found")
    sent, failures = _backend(node).send(node, files, progress, cancel)
    return {"sent": sent, "failed": failures}
