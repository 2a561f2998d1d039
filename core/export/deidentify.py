"""De-identification of DICOM headers: the PS3.15 Basic Application Level Confidentiality Profile.

Implements the Basic Profile (PS3.15 Annex E, Table E.1-1) for the attributes
found in projection-radiograph, secondary-capture and photograph headers, with
the *Retain Longitudinal Temporal Information with Modified Dates* option:

* UIDs (every UI value outside the DICOM root ``1.2.840.10008``, at any depth,
  File Meta included) are remapped to ``2.25.<int>`` by a salted SHA-256, so the
  same source UID maps to the same new UID everywhere in one export (SR, Secondary
  Capture, CSV/JSON) and to an unrelated one in the next export (new salt).
* Patient Name / Patient ID are replaced by consistent pseudonyms ("D"); Accession
  Number, Study ID, Referring Physician, Birth Date, Patient's Sex are emptied ("Z");
  the attributes of :data:`REMOVE` are removed ("X"), and so is every other person
  name (PN) and every free-text ST/LT/UT value, which the profile removes or which
  may carry names.
* Dates (DA, and the date part of DT) are shifted back by a per-patient offset of
  1 to 10 years derived from the salt, so intervals within a patient are kept;
  unparseable dates are emptied. Times of day are kept.
* Private attributes and overlay/curve groups (60xx, 50xx) are removed; the File
  Meta is rebuilt (no source implementation UID or AE titles).
* Patient Identity Removed = YES, De-identification Method and its Code Sequence
  (DCM 113100, 113107) and Longitudinal Temporal Information Modified = MODIFIED are set.

Not handled: burned-in text in pixel data (callers skip images whose header says
Burned In Annotation = YES), and attributes of modalities Loupe does not import.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import os
import re
from copy import deepcopy
from typing import Optional

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import BaseTag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

logger = logging.getLogger(__name__)

#: UIDs under this root are DICOM-defined (SOP classes, transfer syntaxes, coding schemes): never remapped.
DICOM_ROOT = "1.2.840.10008."

#: "X": removed (PS3.15 Table E.1-1, the attributes radiograph/SC/photo headers carry).
REMOVE = (
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "InstitutionCodeSequence",
    "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers", "ReferringPhysicianIdentificationSequence",
    "PhysiciansOfRecord", "PhysiciansOfRecordIdentificationSequence", "PerformingPhysicianName",
    "PerformingPhysicianIdentificationSequence", "NameOfPhysiciansReadingStudy",
    "PhysiciansReadingStudyIdentificationSequence", "OperatorsName", "OperatorIdentificationSequence",
    "RequestingPhysician", "RequestingService", "ConsultingPhysicianName",
    "AdmittingDiagnosesDescription", "AdmittingDiagnosesCodeSequence", "StationName", "StudyDescription",
    "SeriesDescription", "ProtocolName", "PerformedProcedureStepDescription", "PerformedProcedureStepID",
    "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime", "PerformedProcedureStepEndDate",
    "PerformedProcedureStepEndTime", "RequestedProcedureDescription", "RequestedProcedureID",
    "ScheduledProcedureStepDescription", "ScheduledProcedureStepID", "RequestAttributesSequence",
    "ReferencedPatientSequence", "ReferencedStudySequence", "ReferencedPerformedProcedureStepSequence",
    "DerivationDescription", "ImageComments", "AcquisitionComments", "StudyComments", "VisitComments",
    "TimezoneOffsetFromUTC", "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence", "PatientBirthTime",
    "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames", "PatientBirthName", "PatientAge",
    "PatientSize", "PatientWeight", "PatientAddress", "PatientMotherBirthName", "MilitaryRank",
    "BranchOfService", "MedicalRecordLocator", "PatientTelephoneNumbers", "EthnicGroup", "Occupation",
    "AdditionalPatientHistory", "PatientComments", "CountryOfResidence", "RegionOfResidence",
    "PatientInsurancePlanCodeSequence", "PatientReligiousPreference", "MedicalAlerts", "Allergies",
    "SmokingStatus", "PregnancyStatus", "LastMenstrualDate", "ResponsiblePerson", "ResponsibleOrganization",
    "PatientState", "AdmissionID", "IssuerOfAdmissionIDSequence", "CurrentPatientLocation",
    "PatientInstitutionResidence", "ServiceEpisodeID", "ServiceEpisodeDescription",
    "DeviceSerialNumber", "DetectorID", "PlateID", "GantryID", "GeneratorID", "CassetteID",
    "SoftwareVersions", "DateOfLastCalibration", "TimeOfLastCalibration", "DateOfLastDetectorCalibration",
    "TimeOfLastDetectorCalibration", "AcquisitionDeviceProcessingDescription", "ModifiedAttributesSequence",
    "OriginalAttributesSequence", "ContentSequence", "GraphicAnnotationSequence", "TextString",
    "FrameComments", "DigitalSignaturesSequence", "DataSetTrailingPadding", "StorageMediaFileSetID",
    "OrderEnteredBy", "OrderEntererLocation", "OrderCallbackPhoneNumber", "PersonName", "PersonAddress",
    "PersonTelephoneNumbers", "VerifyingObserverName", "VerifyingOrganization", "AuthorObserverSequence",
    "ParticipantSequence", "InstanceCreatorUID",
)

#: "Z": kept but emptied.
EMPTY = ("AccessionNumber", "StudyID", "ReferringPhysicianName", "PatientBirthDate", "PatientSex",
         "ContrastBolusAgent", "FillerOrderNumberImagingServiceRequest", "PlacerOrderNumberImagingServiceRequest")

#: Basic Profile + option, as recorded in the De-identification Method Code Sequence (CID 7050).
METHOD_CODES = (("113100", "Basic Application Confidentiality Profile"),
                ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"))
METHOD_TEXT = "Loupe: PS3.15 Basic Profile; dates shifted; UIDs remapped"

_FREE_TEXT_VRS = {"ST", "LT", "UT"}
_DATE_RE = re.compile(r"^(\d{4})\.?(\d{2})\.?(\d{2})")


class Deidentifier:
    """One export's de-identification state: the salt and the pseudonyms derived from it.

    Every mapping is a pure function of (salt, original value), so the same
    patient, study or image gets the same pseudonym, UID and date shift in every
    object of one export. ``salt`` defaults to 16 random bytes (a new mapping per
    export); pass a fixed salt for reproducible output (tests).
    """

    def __init__(self, salt: Optional[bytes] = None) -> None:
        self._salt = salt if salt is not None else os.urandom(16)

    def _digest(self, kind: str, value: str) -> bytes:
        return hashlib.sha256(self._salt + kind.encode() + b"\0" + str(value).encode("utf-8")).digest()

    def uid(self, uid: str) -> str:
        """The remapped UID (``2.25.<128-bit int>``); DICOM-defined UIDs and empty values are returned unchanged."""
        uid = str(uid).strip().rstrip("\0")
        if not uid or uid.startswith(DICOM_ROOT):
            return uid
        return "2.25." + str(int.from_bytes(self._digest("uid", uid)[:16], "big"))

    def pseudonym(self, kind: str, value: Optional[str], length: int = 10) -> str:
        """A stable opaque name ``<kind>-<hex>`` for a value (a patient, image id, annotator …)."""
        return f"{kind}-{self._digest(kind, value or '').hex()[:length]}"

    def patient_id(self, value: Optional[str]) -> str:
        """Pseudonymous Patient ID."""
        return self.pseudonym("LOUPE", value).upper()

    def patient_name(self, value: Optional[str]) -> str:
        """Pseudonymous Patient Name (``ANONYMOUS^<hex>``), keyed on the patient id."""
        return "ANONYMOUS^" + self._digest("name", value or "").hex()[:8].upper()

    def day_offset(self, patient_key: Optional[str]) -> int:
        """Days every date of this patient moves (negative: 365 to 3649 days back)."""
        return -(365 + int.from_bytes(self._digest("days", patient_key or "")[:4], "big") % 3285)

    def shift_date(self, value: str, patient_key: Optional[str]) -> str:
        """A DA value (``YYYYMMDD`` or ACR-NEMA ``YYYY.MM.DD``) shifted; ``""`` when unparseable."""
        match = _DATE_RE.match(str(value).strip())
        if not match:
            return ""
        try:
            day = _dt.date(*(int(g) for g in match.groups()))
        except ValueError:
            return ""
        return (day + _dt.timedelta(days=self.day_offset(patient_key))).strftime("%Y%m%d")

    def shift_datetime(self, value: str, patient_key: Optional[str]) -> str:
        """A DT value with its date shifted and its UTC offset dropped; ``""`` when unparseable."""
        text = re.split(r"[+-]", str(value).strip())[0]
        date = self.shift_date(text[:8], patient_key)
        return date + text[8:] if date else ""

    def shift_iso(self, value: Optional[str], patient_key: Optional[str]) -> Optional[str]:
        """An ISO 8601 timestamp (e.g. a label's ``created_at``) shifted by the patient's offset."""
        if not value:
            return value
        try:
            stamp = _dt.datetime.fromisoformat(str(value))
        except ValueError:
            return None
        return (stamp + _dt.timedelta(days=self.day_offset(patient_key))).isoformat()

    def deidentify(self, ds: Dataset) -> Dataset:
        """A de-identified deep copy of ``ds`` (the input is not changed). See the module docstring."""
        out = deepcopy(ds)
        patient_key = str(ds.get("PatientID", "") or ds.get("PatientName", "") or "")
        out.remove_private_tags()
        self._clean(out, patient_key)
        meta = getattr(out, "file_meta", None)
        if meta is not None:
            out.file_meta = self._file_meta(meta)
        out.PatientName = self.patient_name(patient_key)
        out.PatientID = self.patient_id(patient_key)
        out.PatientIdentityRemoved = "YES"
        out.DeidentificationMethod = METHOD_TEXT
        out.DeidentificationMethodCodeSequence = method_code_sequence()
        out.LongitudinalTemporalInformationModified = "MODIFIED"
        return out

    def _file_meta(self, meta: FileMetaDataset) -> FileMetaDataset:
        """A new File Meta with the SOP class, remapped instance UID and transfer syntax only.

        The source's implementation UID and application entity titles name the sending site's software.
        """
        clean = FileMetaDataset()
        for keyword in ("MediaStorageSOPClassUID", "TransferSyntaxUID"):
            if keyword in meta:
                setattr(clean, keyword, meta[keyword].value)
        if "MediaStorageSOPInstanceUID" in meta:
            clean.MediaStorageSOPInstanceUID = self.uid(meta.MediaStorageSOPInstanceUID)
        clean.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        return clean

    def _clean(self, ds: Dataset, patient_key: str) -> None:
        for elem in list(ds):
            tag: BaseTag = elem.tag
            keyword = elem.keyword
            group = tag.group
            if tag.is_private or 0x5000 <= group <= 0x50FF or 0x6000 <= group <= 0x60FF:
                del ds[tag]
            elif keyword in REMOVE:
                del ds[tag]
            elif keyword in EMPTY:
                elem.value = ""
            elif keyword == "PatientName":  # at any depth: the pseudonym of the dataset's patient
                elem.value = self.patient_name(patient_key)
            elif keyword == "PatientID":
                elem.value = self.patient_id(patient_key)
            elif elem.VR == "PN" or elem.VR in _FREE_TEXT_VRS:
                del ds[tag]  # any other person name, and free text that may carry one
            elif elem.VR == "SQ":
                for item in elem.value:
                    self._clean(item, patient_key)
            elif elem.VR == "UI" and elem.value:
                elem.value = ([self.uid(v) for v in elem.value] if elem.VM > 1 else self.uid(elem.value))
            elif elem.VR == "DA" and elem.value:
                elem.value = ([self.shift_date(v, patient_key) for v in elem.value] if elem.VM > 1
                              else self.shift_date(elem.value, patient_key))
            elif elem.VR == "DT" and elem.value:
                elem.value = self.shift_datetime(elem.value, patient_key)


def method_code_sequence() -> DicomSequence:
    """The De-identification Method Code Sequence items (DCM 113100 and 113107)."""
    items = []
    for value, meaning in METHOD_CODES:
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        items.append(item)
    return DicomSequence(items)


def mark_deidentified(ds: Dataset) -> None:
    """Set the de-identification attributes on an object built from de-identified sources (SR, SC)."""
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = METHOD_TEXT
    ds.DeidentificationMethodCodeSequence = method_code_sequence()
    ds.LongitudinalTemporalInformationModified = "MODIFIED"
