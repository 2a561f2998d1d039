"""DICOM Structured Reports (TID 1500 Measurement Report) of image-level findings, built with highdicom.

One Comprehensive SR per labelled DICOM image:

* Observation context (TID 1001): the annotator as person observer and, when a
  model is active, the model version as device observer (name ``Loupe <version>``,
  model name = architecture, a UID derived from the version and its weights hash).
* Procedure reported: radiographic imaging (SCT 363680008) or imaging (SCT 363679005).
* Measurement group 1 ("annotator finding"): one qualitative evaluation per label
  class, ``<class concept> = Present (SCT 52101004)``, plus Severity (SCT 246112005)
  when graded; source image referenced by SOP Class / Instance UID.
* Measurement group 2 ("model prediction", only with a prediction of the active
  version): Algorithm Identification (name, version), ``<predicted class> = Present``
  and one probability measurement (unit UCUM ``1``) per class.

Class names map to SNOMED CT where the mapping is unambiguous (:data:`SCT_FINDINGS`);
any other class is coded in the local scheme ``99LOUPE``.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Optional

import highdicom as hd
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from core.types import Label, ModelVersion, Prediction

logger = logging.getLogger(__name__)

LOCAL_SCHEME = "99LOUPE"
MANUFACTURER = "Loupe"

#: Lower-cased class name → (SNOMED CT code, meaning) for obvious findings.
SCT_FINDINGS = {
    "pneumonia": ("233604007", "Pneumonia"),
    "pneumothorax": ("36118008", "Pneumothorax"),
    "cardiomegaly": ("8186001", "Cardiomegaly"),
    "pleural effusion": ("60046008", "Pleural effusion"),
    "effusion": ("60046008", "Pleural effusion"),
    "normal": ("17621005", "Normal"),
    "melanoma": ("372244006", "Malignant melanoma"),
    "basal cell carcinoma": ("254701007", "Basal cell carcinoma"),
}

PRESENT = CodedConcept("52101004", "SCT", "Present")
SEVERITY = CodedConcept("246112005", "SCT", "Severity")
RADIOGRAPHY = CodedConcept("363680008", "SCT", "Radiographic imaging procedure")
IMAGING = CodedConcept("363679005", "SCT", "Imaging")
NO_UNITS = CodedConcept("1", "UCUM", "no units")
_RADIOGRAPH_MODALITIES = {"CR", "DX", "RG", "DR", "MG", "PX", "IO"}


def finding_code(name: str) -> CodedConcept:
    """The coded concept for a label class: SNOMED CT when obvious, else ``99LOUPE``."""
    known = SCT_FINDINGS.get(name.strip().lower().replace("_", " "))
    if known:
        return CodedConcept(known[0], "SCT", known[1])
    value = re.sub(r"[^A-Za-z0-9_.-]+", "-", name.strip())[:16] or "UNNAMED"
    return CodedConcept(value, LOCAL_SCHEME, name[:64])


def model_device_uid(model: ModelVersion) -> str:
    """A stable UID for a model version (``2.25.<int>`` of its version name and weights hash)."""
    digest = hashlib.sha256(f"loupe-model\0{model.version}\0{model.file_hash}".encode()).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))


def _person_name(name: str) -> str:
    """A PN value: a one-word name (``alice``, a pseudonym) gets the trailing caret PS3.5 asks for."""
    name = (name or "unknown").strip() or "unknown"
    return name if "^" in name else name + "^"


def _observation_context(annotator: str, model: Optional[ModelVersion]) -> hd.sr.ObservationContext:
    person = hd.sr.ObserverContext(
        observer_type=codes.DCM.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name=_person_name(annotator)))
    device = None
    if model is not None:
        device = hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=model_device_uid(model), name=f"Loupe {model.version}"[:64],
                manufacturer_name=MANUFACTURER, model_name=model.arch[:64]))
    return hd.sr.ObservationContext(observer_person_context=person, observer_device_context=device)


#: Type 2 patient/study attributes highdicom copies from the source: present (maybe empty) in its input.
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
          "ReferringPhysicianName", "StudyID", "AccessionNumber")


def complete_header(source: Dataset) -> Dataset:
    """``source`` with the Type 2 patient and study attributes added empty where missing (changed in place)."""
    for keyword in _TYPE2:
        if keyword not in source:
            setattr(source, keyword, "")
    return source


def _source(source: Dataset) -> list:
    return [hd.sr.SourceImageForMeasurementGroup(referenced_sop_class_uid=source.SOPClassUID,
                                                 referenced_sop_instance_uid=source.SOPInstanceUID)]


def _human_group(source: Dataset, label: Label) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    evaluations = [hd.sr.QualitativeEvaluation(finding_code(c), PRESENT) for c in label.classes]
    if label.severity is not None:
        k = int(label.severity)
        evaluations.append(hd.sr.QualitativeEvaluation(
            SEVERITY, CodedConcept(f"SEV{k}", LOCAL_SCHEME, f"Severity grade {k}")))
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="annotator finding"),
        qualitative_evaluations=evaluations, source_images=_source(source))


def _model_group(source: Dataset, model: ModelVersion,
                 prediction: Prediction) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    algorithm = hd.sr.AlgorithmIdentification(name=f"Loupe {model.arch}"[:64], version=model.version[:64])
    measurements = [
        hd.sr.Measurement(name=CodedConcept(f"P-{finding_code(c).value}"[:16], LOCAL_SCHEME,
                                            f"Probability of {c}"[:64]),
                          value=round(float(p), 6), unit=NO_UNITS, algorithm_id=algorithm)
        for c, p in prediction.probs.items()]
    evaluations = ([hd.sr.QualitativeEvaluation(finding_code(prediction.predicted), PRESENT)]
                   if prediction.predicted else [])
    if prediction.severity is not None:  # the severity head's grade, coded as the annotator's is
        k = int(prediction.severity)
        evaluations.append(hd.sr.QualitativeEvaluation(
            SEVERITY, CodedConcept(f"SEV{k}", LOCAL_SCHEME, f"Severity grade {k}")))
        if prediction.severity_probability is not None:
            measurements.append(hd.sr.Measurement(
                name=CodedConcept("P-SEV", LOCAL_SCHEME, f"Probability of severity grade {k}"),
                value=round(float(prediction.severity_probability), 6), unit=NO_UNITS, algorithm_id=algorithm))
    evaluations = evaluations or None
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="model prediction"),
        algorithm_id=algorithm, measurements=measurements or None, qualitative_evaluations=evaluations,
        source_images=_source(source))


def build_sr(source: Dataset, label: Label, *, annotator: str, model: Optional[ModelVersion],
             prediction: Optional[Prediction], series_uid: str, instance_number: int,
             series_number: int = 9901) -> hd.sr.ComprehensiveSR:
    """A TID 1500 Comprehensive SR of one image's label (and the model's prediction).

    ``source`` is the image's header dataset (already de-identified when the export
    is); its patient and study attributes are copied into the SR, which joins the
    source's study in the series ``series_uid``. ``annotator`` is the observer name as
    exported. Raises ``ValueError``/``TypeError`` from highdicom for a header lacking
    the SOP Class / Instance, Study or Series UIDs.
    """
    complete_header(source)
    modality = str(source.get("Modality", "") or "")
    groups = [_human_group(source, label)]
    if model is not None and prediction is not None:
        groups.append(_model_group(source, model, prediction))
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(annotator, model),
        procedure_reported=RADIOGRAPHY if modality in _RADIOGRAPH_MODALITIES else IMAGING,
        imaging_measurements=groups)
    sr = hd.sr.ComprehensiveSR(
        evidence=[source], content=report, series_instance_uid=series_uid, series_number=series_number,
        sop_instance_uid=hd.UID(), instance_number=instance_number, manufacturer=MANUFACTURER,
        is_complete=True, is_final=False, is_verified=False)
    sr.SeriesDescription = "Loupe findings"
    return sr
