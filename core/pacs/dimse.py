"""DIMSE with pynetdicom: C-FIND (study root), C-GET or C-MOVE into a folder, C-STORE of files."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Callable, Iterable, Optional

from core.progress import CancelToken, ProgressCallback, report

from .node import PacsError, PacsNode, StudyMatch

logger = logging.getLogger(__name__)

_UID = re.compile(r"^[0-9.]{1,64}$")

#: Image storage classes accepted on a C-GET. An acceptor picks ONE transfer syntax per presentation context,
#: so each image class is proposed once per transfer syntax below (8 contexts each; 128 is the limit).
_GET_IMAGE_CLASSES = (
    "ComputedRadiographyImageStorage", "DigitalXRayImageStorageForPresentation",
    "DigitalXRayImageStorageForProcessing", "DigitalMammographyXRayImageStorageForPresentation",
    "DigitalIntraOralXRayImageStorageForPresentation", "CTImageStorage", "MRImageStorage",
    "UltrasoundImageStorage", "UltrasoundMultiFrameImageStorage", "SecondaryCaptureImageStorage",
    "MultiFrameTrueColorSecondaryCaptureImageStorage", "MultiFrameGrayscaleByteSecondaryCaptureImageStorage",
    "MultiFrameGrayscaleWordSecondaryCaptureImageStorage", "VLPhotographicImageStorage",
)
#: Non-image classes (reports, selections, presentation states): uncompressed only.
_GET_OTHER_CLASSES = (
    "BasicTextSRStorage", "EnhancedSRStorage", "ComprehensiveSRStorage", "Comprehensive3DSRStorage",
    "KeyObjectSelectionDocumentStorage", "GrayscaleSoftcopyPresentationStateStorage",
)
_COMPRESSED = (
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.5",     # RLE Lossless
)


def _get_contexts():
    """``(contexts, roles)`` for a C-GET: what this workstation accepts as a storage SCP."""
    from pynetdicom import build_context, build_role
    from pynetdicom import sop_class
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    uncompressed = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    contexts, roles = [], []
    for name in _GET_IMAGE_CLASSES + _GET_OTHER_CLASSES:
        uid = getattr(sop_class, name)
        contexts.append(build_context(uid, uncompressed))
        if name in _GET_IMAGE_CLASSES:
            contexts += [build_context(uid, syntax) for syntax in _COMPRESSED]
        roles.append(build_role(uid, scp_role=True))
    return contexts, roles


def _ae(node: PacsNode):
    from pynetdicom import AE

    ae = AE(ae_title=node.aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = node.timeout
    return ae


def _associate(ae, node: PacsNode, **kwargs):
    assoc = ae.associate(node.host, int(node.port), ae_title=node.called_aet, **kwargs)
    if not assoc.is_established:
        why = "rejected the association" if assoc.is_rejected else "could not be reached (or hung up at once)"
        raise PacsError(f"the DICOM node {node.describe()} {why}: check host, port and AE titles "
                        f"(this workstation calls as '{node.aet}')")
    return assoc


def _find(assoc, identifier, model) -> list:
    out = []
    for status, found in assoc.send_c_find(identifier, model):
        if not status:
            raise PacsError("the DICOM node stopped answering the query (connection lost or timed out)")
        code = int(status.Status)
        if code in (0xFF00, 0xFF01):
            if found is not None:
                out.append(found)
        elif code != 0x0000:
            raise PacsError(f"the DICOM node refused the query (status 0x{code:04X})")
    return out


def query(node: PacsNode, patient_id: Optional[str] = None, study_uid: Optional[str] = None) -> list[StudyMatch]:
    """C-FIND at study level (study root) by patient id and/or study UID.

    Modalities and instance counts are collected with series- and image-level
    queries, which every Query/Retrieve SCP answers (``ModalitiesInStudy`` and
    ``NumberOfStudyRelatedInstances`` are optional keys many do not support).
    Raises :class:`PacsError` when the node cannot be reached or refuses.
    """
    from pydicom.dataset import Dataset
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

    ae = _ae(node)
    ae.add_requested_context(FIND)
    assoc = _associate(ae, node)
    try:
        ident = Dataset()
        ident.QueryRetrieveLevel = "STUDY"
        ident.PatientID = patient_id or ""
        ident.StudyInstanceUID = study_uid or ""
        ident.StudyDate = ""
        ident.PatientName = ""
        studies = _find(assoc, ident, FIND)
        matches = []
        for study in studies:
            uid = str(study.get("StudyInstanceUID", ""))
            if not uid:
                continue
            series_q = Dataset()
            series_q.QueryRetrieveLevel = "SERIES"
            series_q.StudyInstanceUID = uid
            series_q.SeriesInstanceUID = ""
            series_q.Modality = ""
            series = _find(assoc, series_q, FIND)
            n = 0
            for se in series:
                image_q = Dataset()
                image_q.QueryRetrieveLevel = "IMAGE"
                image_q.StudyInstanceUID = uid
                image_q.SeriesInstanceUID = str(se.get("SeriesInstanceUID", ""))
                image_q.SOPInstanceUID = ""
                n += len(_find(assoc, image_q, FIND))
            modalities = tuple(sorted({str(se.get("Modality", "")) for se in series} - {""}))
            matches.append(StudyMatch(study_uid=uid, patient_id=str(study.get("PatientID", "") or ""),
                                      study_date=str(study.get("StudyDate", "") or ""), modalities=modalities,
                                      n_instances=n, patient_name=str(study.get("PatientName", "") or ""),
                                      series=tuple(str(se.get("SeriesInstanceUID", "")) for se in series)))
        return matches
    finally:
        assoc.release()


class _Receiver:
    """The storage SCP side of a retrieve: each arriving instance is written atomically as ``<SOP UID>.dcm``."""

    def __init__(self, folder: Path, cancel: CancelToken):
        self.folder, self.cancel = folder, cancel
        self.written: list[Path] = []
        self.failures: list[dict] = []

    def on_store(self, event) -> int:
        if self.cancel.cancelled:
            return 0xA700  # refused: the user cancelled
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
            uid = str(ds.SOPInstanceUID)
            if not _UID.match(uid):
                raise ValueError(f"bad SOP Instance UID '{uid}'")
            path = self.folder / f"{uid}.dcm"
            tmp = path.with_suffix(".part")
            ds.save_as(tmp, enforce_file_format=True)
            tmp.replace(path)
            self.written.append(path)
            return 0x0000
        except Exception as exc:  # a bad instance is reported, the others still arrive
            logger.warning("could not store a retrieved instance: %s", exc)
            self.failures.append({"path": "", "reason": f"could not store a retrieved instance: {exc}"})
            return 0xA700


def _study_identifier(study_uid: str):
    from pydicom.dataset import Dataset

    ident = Dataset()
    ident.QueryRetrieveLevel = "STUDY"
    ident.StudyInstanceUID = study_uid
    return ident


def _follow(responses, receiver: _Receiver, progress: Optional[ProgressCallback]) -> Optional[int]:
    """Read a C-GET/C-MOVE's pending responses to the final status, reporting progress."""
    final = None
    for status, _ in responses:
        if not status:
            raise PacsError("the DICOM node stopped answering the retrieve (connection lost or timed out)")
        final = int(status.Status)
        remaining = int(status.get("NumberOfRemainingSuboperations", 0) or 0)
        done = len(receiver.written)
        report(progress, done, done + remaining, f"received {done} instance(s)")
    return final


def _outcome(final: Optional[int], receiver: _Receiver, study_uid: str, how: str) -> tuple[list[Path], list[dict]]:
    if final not in (0x0000, 0xB000, 0xFE00) and not receiver.written:
        if how == "C-MOVE" and final == 0xA801:
            raise PacsError(f"the DICOM node does not know this workstation as a move destination "
                            f"(status 0xA801): add its AE title, host and C-MOVE port to the node's configuration")
        raise PacsError(f"the DICOM node could not send study {study_uid} with {how} "
                        f"(status 0x{(final or 0):04X}); is the study UID right?")
    if final == 0xB000:
        receiver.failures.append({"path": "", "reason": "the node reported that some instances could not be sent"})
    return receiver.written, receiver.failures


def retrieve(node: PacsNode, study_uid: str, folder: Path, progress: Optional[ProgressCallback] = None,
             cancel: Optional[CancelToken] = None) -> tuple[list[Path], list[dict]]:
    """Every instance of a study into ``folder`` (one file per SOP instance): C-GET, or C-MOVE when
    ``node.move_port`` is set.

    Returns the files written and the failures (``{"path", "reason"}``). Raises
    :class:`PacsError` when the node cannot be reached or the retrieve fails as a whole.
    """
    if not _UID.match(study_uid or ""):
        raise PacsError(f"'{study_uid}' is not a DICOM UID (digits and dots)")
    folder.mkdir(parents=True, exist_ok=True)
    receiver = _Receiver(folder, cancel or CancelToken())
    if node.move_port:
        return _retrieve_move(node, study_uid, receiver, progress)
    from pynetdicom import evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GET

    ae = _ae(node)
    ae.add_requested_context(GET)
    contexts, roles = _get_contexts()
    for context in contexts:
        ae.add_requested_context(context.abstract_syntax, context.transfer_syntax)
    assoc = _associate(ae, node, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, receiver.on_store)])
    try:
        final = _follow(assoc.send_c_get(_study_identifier(study_uid), GET), receiver, progress)
    finally:
        assoc.release()
    return _outcome(final, receiver, study_uid, "C-GET")


def _retrieve_move(node: PacsNode, study_uid: str, receiver: _Receiver,
                   progress: Optional[ProgressCallback]) -> tuple[list[Path], list[dict]]:
    """C-MOVE to this workstation: a storage SCP listens on ``node.move_port`` while the move runs."""
    from pynetdicom import evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as MOVE

    scp = _ae(node)
    contexts, _roles = _get_contexts()
    for context in contexts:
        scp.add_supported_context(context.abstract_syntax, context.transfer_syntax)
    try:
        server = scp.start_server(("", int(node.move_port)), block=False,
                                  evt_handlers=[(evt.EVT_C_STORE, receiver.on_store)])
    except OSError as exc:
        raise PacsError(f"cannot listen on port {node.move_port} for C-MOVE ({exc.strerror or exc}): "
                        f"choose a free port, the one the node sends to") from exc
    try:
        ae = _ae(node)
        ae.add_requested_context(MOVE)
        assoc = _associate(ae, node)
        try:
            final = _follow(assoc.send_c_move(_study_identifier(study_uid), node.aet, MOVE), receiver, progress)
        finally:
            assoc.release()
    finally:
        server.shutdown()
    return _outcome(final, receiver, study_uid, "C-MOVE")


def send(node: PacsNode, files: Iterable[Path], progress: Optional[ProgressCallback] = None,
         cancel: Optional[CancelToken] = None) -> tuple[int, list[dict]]:
    """C-STORE DICOM files to the node; returns (sent, failures as ``{"path", "reason"}``).

    A file that is not DICOM is a failure, not an error: the others are still sent.
    """
    from pydicom import dcmread
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    files = list(files)
    datasets, failures = [], []
    for path in files:
        try:
            ds = dcmread(path, force=True)
            ds.SOPClassUID, ds.SOPInstanceUID  # both are needed to store it
            syntax = ds.file_meta.TransferSyntaxUID if "TransferSyntaxUID" in getattr(ds, "file_meta", {}) else None
            datasets.append((path, ds, syntax))
        except Exception as exc:
            failures.append({"path": str(path), "reason": f"not a DICOM object that can be stored: {exc}"})
    if not datasets:
        return 0, failures
    ae = _ae(node)
    contexts: dict[str, set] = {}
    for _, ds, syntax in datasets:
        contexts.setdefault(str(ds.SOPClassUID), {ExplicitVRLittleEndian, ImplicitVRLittleEndian}).update(
            {syntax} if syntax else set())
    if len(contexts) > 120:
        raise PacsError("too many different kinds of DICOM object in one send; send them in smaller folders")
    for uid, syntaxes in contexts.items():
        ae.add_requested_context(uid, sorted(syntaxes))
    cancel = cancel or CancelToken()
    sent = 0
    assoc = _associate(ae, node)
    try:
        for k, (path, ds, _) in enumerate(datasets):
            cancel.check()
            try:
                status = assoc.send_c_store(ds)
            except Exception as exc:
                failures.append({"path": str(path), "reason": f"could not be sent: {exc}"})
                continue
            code = int(status.Status) if status else None
            if code in (0x0000, 0xB000, 0xB007, 0xB006):
                sent += 1
            else:
                reason = "no answer from the node" if code is None else f"refused by the node (status 0x{code:04X})"
                failures.append({"path": str(path), "reason": reason})
            report(progress, k + 1, len(datasets), f"sent {sent} of {len(datasets)}")
    finally:
        assoc.release()
    return sent, failures
