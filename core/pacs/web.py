"""DICOMweb with dicomweb-client: QIDO-RS (query), WADO-RS (retrieve), STOW-RS (send)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Optional

from core.progress import CancelToken, ProgressCallback, report

from .node import PacsError, PacsNode, StudyMatch

logger = logging.getLogger(__name__)

# DICOM JSON tags (PS3.18 F.2)
_PATIENT_ID, _PATIENT_NAME, _STUDY_UID, _STUDY_DATE = "00100020", "00100010", "0020000D", "00080020"
_MODALITIES, _N_INSTANCES, _DESCRIPTION = "00080061", "00201208", "00081030"


def _client(node: PacsNode):
    from dicomweb_client.api import DICOMwebClient

    return DICOMwebClient(url=node.dicomweb.rstrip("/"))


def _value(item: dict, tag: str, default=""):
    values = item.get(tag, {}).get("Value") or []
    if not values:
        return default
    first = values[0]
    if isinstance(first, dict):  # person name
        return first.get("Alphabetic", default)
    return first


def _web_errors(node: PacsNode, what: str):
    import requests

    class _Guard:
        def __enter__(self):
            return self

        def __exit__(self, kind, exc, tb):
            if exc is None or isinstance(exc, PacsError):
                return False
            if isinstance(exc, requests.exceptions.ConnectionError):
                raise PacsError(f"the DICOMweb server {node.dicomweb} could not be reached") from exc
            if isinstance(exc, requests.exceptions.HTTPError):
                code = getattr(exc.response, "status_code", "?")
                raise PacsError(f"the DICOMweb server refused to {what} (HTTP {code})") from exc
            if isinstance(exc, (requests.exceptions.RequestException, ValueError)):
                raise PacsError(f"the DICOMweb server could not {what}: {exc}") from exc
            return False

    return _Guard()


def query(node: PacsNode, patient_id: Optional[str] = None, study_uid: Optional[str] = None) -> list[StudyMatch]:
    """QIDO-RS study search by patient id and/or study UID."""
    filters = {}
    if patient_id:
        filters["PatientID"] = patient_id
    if study_uid:
        filters["StudyInstanceUID"] = study_uid
    with _web_errors(node, "search"):
        found = _client(node).search_for_studies(
            search_filters=filters, fields=["ModalitiesInStudy", "NumberOfStudyRelatedInstances", "StudyDescription"])
    matches = []
    for item in found:
        modalities = item.get(_MODALITIES, {}).get("Value") or []
        matches.append(StudyMatch(study_uid=str(_value(item, _STUDY_UID)), patient_id=str(_value(item, _PATIENT_ID)),
                                  study_date=str(_value(item, _STUDY_DATE)), modalities=tuple(sorted(modalities)),
                                  n_instances=int(_value(item, _N_INSTANCES, 0) or 0),
                                  patient_name=str(_value(item, _PATIENT_NAME)),
                                  description=str(_value(item, _DESCRIPTION))))
    return matches


def retrieve(node: PacsNode, study_uid: str, folder: Path, progress: Optional[ProgressCallback] = None,
             cancel: Optional[CancelToken] = None) -> tuple[list[Path], list[dict]]:
    """WADO-RS: every instance of the study, one file per SOP instance in ``folder``."""
    from .dimse import _UID

    if not _UID.match(study_uid or ""):
        raise PacsError(f"'{study_uid}' is not a DICOM UID (digits and dots)")
    folder.mkdir(parents=True, exist_ok=True)
    cancel = cancel or CancelToken()
    written, failures = [], []
    with _web_errors(node, "send the study"):
        client = _client(node)
        instances = client.search_for_instances(study_instance_uid=study_uid)
        total = len(instances)
        for k, item in enumerate(instances):
            cancel.check()
            series_uid, sop_uid = str(_value(item, "0020000E")), str(_value(item, "00080018"))
            try:
                ds = client.retrieve_instance(study_uid, series_uid, sop_uid)
                path = folder / f"{sop_uid}.dcm"
                tmp = path.with_suffix(".part")
                ds.save_as(tmp, enforce_file_format=True)
                tmp.replace(path)
                written.append(path)
            except Exception as exc:
                failures.append({"path": "", "reason": f"instance {sop_uid} could not be retrieved: {exc}"})
            report(progress, k + 1, total, f"received {len(written)} of {total}")
    if not written and not failures:
        raise PacsError(f"the DICOMweb server has no study {study_uid}")
    return written, failures


def send(node: PacsNode, files: Iterable[Path], progress: Optional[ProgressCallback] = None,
         cancel: Optional[CancelToken] = None) -> tuple[int, list[dict]]:
    """STOW-RS the files (one request per file, so one bad file does not sink the others)."""
    from pydicom import dcmread

    files = list(files)
    cancel = cancel or CancelToken()
    sent, failures = 0, []
    client = _client(node)
    for k, path in enumerate(files):
        cancel.check()
        try:
            ds = dcmread(path, force=True)
            ds.SOPInstanceUID
        except Exception as exc:
            failures.append({"path": str(path), "reason": f"not a DICOM object that can be stored: {exc}"})
            continue
        try:
            with _web_errors(node, "store the file"):
                client.store_instances([ds])
            sent += 1
        except PacsError as exc:
            failures.append({"path": str(path), "reason": str(exc)})
        report(progress, k + 1, len(files), f"sent {sent} of {len(files)}")
    return sent, failures
