"""Explanation maps as DICOM Secondary Capture images (highdicom ``SCImage``) linked to their source.

Each map is blended over the rendered source image as an RGB overlay (a fixed
transparent-to-red-to-yellow ramp: this is a report rendering, the app keeps its own
colour maps) and written into the source's study, in a new series, with the
Source Image Sequence naming the source's SOP Class / Instance UID and a
Derivation Description saying which method, target and model version made it.
"""

from __future__ import annotations

import logging
from typing import Optional

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from core.export.sr import MANUFACTURER, complete_header

logger = logging.getLogger(__name__)

#: Highest overlay opacity (where the map is 1).
ALPHA = 0.5


def _resize_nearest(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    rows = (np.arange(shape[0]) * values.shape[0] // shape[0]).clip(0, values.shape[0] - 1)
    cols = (np.arange(shape[1]) * values.shape[1] // shape[1]).clip(0, values.shape[1] - 1)
    return values[rows][:, cols]


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """uint8 (H, W, 3): ``heat`` (float [0, 1]) blended over ``image`` (uint8 gray (H, W) or RGB).

    The map is resized (nearest) to the image when their shapes differ; low values
    leave the image visible, high values turn it red then yellow.
    """
    rgb = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]
    heat = np.clip(np.nan_to_num(np.asarray(heat, np.float32)), 0.0, 1.0)
    if heat.shape != rgb.shape[:2]:
        heat = _resize_nearest(heat, rgb.shape[:2])
    colour = np.stack([np.ones_like(heat), heat, np.zeros_like(heat)], axis=2) * 255.0
    weight = (alpha * heat)[..., None]
    return np.clip(rgb.astype(np.float32) * (1 - weight) + colour * weight + 0.5, 0, 255).astype(np.uint8)


def build_sc(source: Dataset, image: np.ndarray, heat: np.ndarray, *, description: str, series_uid: str,
             instance_number: int, series_number: int = 9902,
             source_frame: Optional[int] = None) -> hd.sc.SCImage:
    """A Secondary Capture of ``heat`` over ``image`` in the study of ``source``.

    ``source`` is the header of the explained image (de-identified when the export is);
    ``image`` its rendering (uint8), ``heat`` the float map in the rendering's geometry.
    ``description`` (method, target, model version) goes into Derivation Description
    and Image Comments. Raises ``ValueError``/``AttributeError`` from highdicom when the
    header lacks the UIDs a reference needs.
    """
    complete_header(source)
    pixels = overlay(image, heat)
    orientation = source.get("PatientOrientation")
    known = orientation is not None and len(orientation) == 2 and all(str(v) for v in orientation)
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source, pixel_array=pixels, photometric_interpretation="RGB", bits_allocated=8,
        coordinate_system="PATIENT", series_instance_uid=series_uid, series_number=series_number,
        sop_instance_uid=hd.UID(), instance_number=instance_number, manufacturer=MANUFACTURER,
        patient_orientation=tuple(str(v) for v in orientation) if known else ("L", "F"),
        transfer_syntax_uid="1.2.840.10008.1.2.1")
    if not known:
        sc.PatientOrientation = ""  # Type 2: unknown, not the placeholder highdicom insisted on
    ref = Dataset()
    ref.ReferencedSOPClassUID = source.SOPClassUID
    ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
    if source_frame is not None:
        ref.ReferencedFrameNumber = int(source_frame)
    sc.SourceImageSequence = DicomSequence([ref])
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.DerivationDescription = description[:1024]
    sc.ImageComments = description[:10240]
    sc.SeriesDescription = "Loupe explanation maps"
    sc.BurnedInAnnotation = "NO"
    return sc
