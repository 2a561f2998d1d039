"""Photographs as DICOM VL Photographic Images, so a DICOM SR or Secondary Capture can reference them.

A PNG/JPEG/TIFF photograph has no DICOM header: :func:`build_photo` wraps its decoded
8-bit pixels (RGB, or MONOCHROME2 for a grayscale photograph) in a VL Photographic Image
Storage object (SOP class 1.2.840.10008.5.1.4.1.1.77.1.4, Modality ``XC``), uncompressed,
Explicit VR Little Endian.

Identity comes from the workspace record only, never from the file's path or name:

* Study Instance UID: derived from the record's study key (``folder:<hash>``), so every
  photograph of one folder ("study") shares it; Series Instance UID (one photo series per
  study) likewise; SOP Instance UID from the image key (``sha256:`` of the file bytes).
  The same workspace therefore exports the same UIDs every time (:func:`photo_uids`).
* Patient ID / Name: the record's, when an import gave one; otherwise the Patient ID is a
  stable ``LOUPE-PH-<hash>`` of the study key (one study belongs to one patient in DICOM)
  and the name is empty.
* No dates are invented (Study Date / Time are empty, Type 2), and the file's own metadata
  (EXIF: camera serial, GPS, dates, comments) is not carried over: only decoded pixels are.
  A multi-page TIFF is written as the page the caller decoded (the exporter: the first).

De-identification is the caller's: pass the result through
:meth:`~core.export.deidentify.Deidentifier.deidentify` as for a radiograph's header.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Optional

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

from core.types import PHOTO_MODALITY, ImageRecord

logger = logging.getLogger(__name__)

VL_PHOTOGRAPHIC_IMAGE = "1.2.840.10008.5.1.4.1.1.77.1.4"
SERIES_NUMBER = 9900
SERIES_DESCRIPTION = "Loupe photographs"

#: Bumped when the meaning of the derived UIDs changes (so an old and a new export cannot collide).
_UID_SCHEME = "loupe-photo-v1"
#: File formats whose pixels went through lossy compression before Loupe saw them.
_LOSSY_FORMATS = {"JPEG", "MPO"}
_LOSSLESS_FORMATS = {"PNG"}


def _derived_uid(kind: str, key: str) -> str:
    # generate_uid joins its sources without a separator: add one so ("ab", "c") != ("a", "bc").
    return str(generate_uid(entropy_srcs=[f"{_UID_SCHEME}\0{kind}\0", key]))


def _study_key(record: ImageRecord) -> str:
    return record.study_uid or f"image:{record.key}"  # a photograph with no folder key is its own study


def photo_uids(record: ImageRecord) -> tuple[str, str, str]:
    """(Study, Series, SOP Instance UID) of a photograph's DICOM object, derived from its workspace keys.

    Takes the photograph's :class:`~core.types.ImageRecord`. The study and series UIDs
    depend only on the study key, the SOP Instance UID only on the image key (the hash of
    the file's bytes), so they are the same in every export and shared within a study.
    """
    study_key = _study_key(record)
    return (_derived_uid("study", study_key), _derived_uid("series", study_key),
            _derived_uid("instance", record.key))


def photo_patient_id(record: ImageRecord) -> str:
    """The Patient ID to write: the record's, else ``LOUPE-PH-<12 hex>`` of its study key."""
    if record.patient_id:
        return record.patient_id
    return "LOUPE-PH-" + hashlib.sha256(_study_key(record).encode("utf-8")).hexdigest()[:12].upper()


def _pixels(pixels: np.ndarray) -> tuple[np.ndarray, str]:
    arr = np.asarray(pixels)
    if arr.dtype != np.uint8:
        raise ValueError(f"a VL Photographic Image holds 8-bit pixels, got {arr.dtype}: render the photograph first")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        return np.ascontiguousarray(arr), "MONOCHROME2"
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        return np.ascontiguousarray(arr[..., :3]), "RGB"
    raise ValueError(f"expected (H, W) grayscale or (H, W, 3) RGB pixels, got shape {arr.shape}")


def build_photo(record: ImageRecord, pixels: np.ndarray, *, instance_number: int = 1,
                file_format: Optional[str] = None) -> Dataset:
    """A VL Photographic Image Storage dataset (with File Meta) of one photograph.

    ``record`` is the photograph's workspace record (only its keys and patient fields are
    used, never its path); ``pixels`` its decoded frame as uint8, (H, W, 3) RGB or (H, W)
    grayscale (EXIF orientation already applied, as :func:`core.imaging.render` returns
    it). ``file_format`` (``PNG``, ``JPEG``, ``TIFF``; default: the record's series
    description, which a workspace does not keep) sets Lossy Image Compression: ``01``
    after JPEG, ``00`` after PNG, empty (unknown) otherwise. UIDs come from
    :func:`photo_uids`, the Patient ID from :func:`photo_patient_id`.
    Returns a dataset ready for ``save_as(..., enforce_file_format=True)`` and for use as
    the ``source`` of an SR or Secondary Capture. Raises ``ValueError`` for pixels that
    are not 8-bit grayscale or RGB.
    """
    arr, photometric = _pixels(pixels)
    study_uid, series_uid, sop_uid = photo_uids(record)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = VL_PHOTOGRAPHIC_IMAGE
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: a patient name from an import may not be ASCII
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = VL_PHOTOGRAPHIC_IMAGE
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.StudyTime = ""
    ds.AccessionNumber = ""
    ds.Modality = PHOTO_MODALITY
    ds.Manufacturer = ""  # the camera's maker is unknown; Loupe only re-wrapped the pixels
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = SERIES_DESCRIPTION
    ds.PatientName = record.patient_name or ""
    ds.PatientID = photo_patient_id(record)
    ds.PatientBirthDate = ds.PatientSex = ""
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = ""
    ds.SeriesNumber = SERIES_NUMBER
    ds.Laterality = ""  # Type 2C: the body part, and so whether it is paired, is unknown
    ds.InstanceNumber = int(instance_number)
    ds.PatientOrientation = ""  # Type 2C: unknown for a photograph
    ds.SamplesPerPixel = 3 if photometric == "RGB" else 1
    ds.PhotometricInterpretation = photometric
    if photometric == "RGB":
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = int(arr.shape[0]), int(arr.shape[1])
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    fmt = (file_format or record.series_description or "").upper()
    # Type 2: "01" when the source file was JPEG, "00" for PNG, unknown (empty) for TIFF.
    ds.LossyImageCompression = "01" if fmt in _LOSSY_FORMATS else ("00" if fmt in _LOSSLESS_FORMATS else "")
    if fmt in _LOSSY_FORMATS:
        ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.AcquisitionContextSequence = []
    ds.PixelData = arr.tobytes()
    logger.debug("photo object %s: %dx%d %s", sop_uid, ds.Columns, ds.Rows, photometric)
    return ds
