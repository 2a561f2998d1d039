"""Writes small synthetic DICOM files with pydicom for tests (no downloads, no real data).

``write_dicom(path, pixels, ...)`` covers the display pipeline's inputs
(photometric, rescale, windows, VOI/Modality LUT Sequences, Presentation LUT
Shape), multi-frame and RGB images, and broken files (no pixel data, no
preamble/File Meta, unknown or unsupported transfer syntax, truncation).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

logger = logging.getLogger(__name__)

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
CR_IMAGE = "1.2.840.10008.5.1.4.1.1.1"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"


def _lut_item(descriptor: Sequence[int], data: Union[Sequence[int], bytes], explanation: str = "") -> Dataset:
    item = Dataset()
    item.LUTDescriptor = list(descriptor)
    item["LUTDescriptor"].VR = "SS" if descriptor[1] < 0 else "US"
    if isinstance(data, (bytes, bytearray)):
        item.LUTData = bytes(data)  # OW: needed past 32767 entries in Explicit VR
        item["LUTData"].VR = "OW"
    else:
        item.LUTData = [int(v) for v in data]
        item["LUTData"].VR = "US"
    if explanation:
        item.LUTExplanation = explanation
    return item


def write_dicom(
    path: Path,
    pixels: Optional[np.ndarray] = None,
    *,
    photometric: str = "MONOCHROME2",
    rgb: bool = False,
    slope: Optional[float] = None,
    intercept: Optional[float] = None,
    rescale_type: Optional[str] = None,
    windows: Sequence[tuple[float, float, str]] = (),
    voi_function: Optional[str] = None,
    voi_luts: Sequence[tuple[Sequence[int], Sequence[int], str]] = (),
    modality_lut: Optional[tuple[Sequence[int], Sequence[int]]] = None,
    presentation_lut_shape: Optional[str] = None,
    bits_stored: Optional[int] = None,
    pixel_data: bool = True,
    preamble: bool = True,
    transfer_syntax: str = ExplicitVRLittleEndian,
    encapsulated: bool = False,
    truncate: int = 0,
    sop_uid: Optional[str] = None,
    modality: str = "OT",
    patient_id: str = "TEST^1",
) -> Path:
    """Write a DICOM file and return its path.

    ``pixels``: (H, W) grayscale, (F, H, W) multi-frame, (H, W, 3) with
    ``rgb=True`` (or (F, H, W, 3)); uint8/uint16/int16. ``windows``: (center,
    width, explanation) triples, written multi-valued. ``voi_luts``:
    (descriptor, data, explanation); ``modality_lut``: (descriptor, data);
    LUT data given as bytes is written as OW (little endian words).
    ``preamble=False`` writes neither preamble nor File Meta (Implicit VR LE).
    ``transfer_syntax`` other than the native ones is written in the File Meta
    with Explicit VR LE encoding; ``encapsulated`` wraps the bytes as one
    fragment per frame. ``truncate`` cuts that many bytes off the end.
    """
    path = Path(path)
    ds = Dataset()
    ds.SOPClassUID = BASIC_TEXT_SR if not pixel_data else SECONDARY_CAPTURE
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.PatientID = patient_id
    ds.PatientName = "Test^Patient"
    ds.StudyDate = "20240102"
    ds.StudyDescription = "synthetic"
    ds.SeriesDescription = "factory"
    if pixel_data:
        arr = np.asarray(pixels if pixels is not None else np.zeros((4, 4), np.uint16))
        _image_module(ds, arr, photometric, rgb, bits_stored)
        raw = np.ascontiguousarray(arr).tobytes()
        if encapsulated:
            frames = int(ds.get("NumberOfFrames", 1))
            step = len(raw) // frames
            ds.PixelData = encapsulate([raw[i * step : (i + 1) * step] for i in range(frames)])
            ds["PixelData"].VR = "OB"
        else:
            ds.PixelData = raw
            ds["PixelData"].VR = "OW" if arr.dtype.itemsize == 2 else "OB"
    if slope is not None or intercept is not None:
        ds.RescaleSlope = slope if slope is not None else 1
        ds.RescaleIntercept = intercept if intercept is not None else 0
        if rescale_type:
            ds.RescaleType = rescale_type
    if windows:
        ds.WindowCenter = [w[0] for w in windows]
        ds.WindowWidth = [w[1] for w in windows]
        ds.WindowCenterWidthExplanation = [w[2] for w in windows]
    if voi_function:
        ds.VOILUTFunction = voi_function
    if voi_luts:
        ds.VOILUTSequence = DicomSequence([_lut_item(*lut) for lut in voi_luts])
    if modality_lut is not None:
        ds.ModalityLUTSequence = DicomSequence([_lut_item(*modality_lut)])
    if presentation_lut_shape:
        ds.PresentationLUTShape = presentation_lut_shape

    if preamble:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = transfer_syntax
        ds.file_meta = meta
        ds.preamble = b"\x00" * 128
        implicit = transfer_syntax == ImplicitVRLittleEndian
        dcmwrite(path, ds, enforce_file_format=True, implicit_vr=implicit, little_endian=True)
    else:
        dcmwrite(path, ds, enforce_file_format=False, implicit_vr=True, little_endian=True)
    if truncate:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - truncate])
    return path


def _image_module(ds: Dataset, arr: np.ndarray, photometric: str, rgb: bool, bits_stored: Optional[int]) -> None:
    spp = 3 if rgb else 1
    frames = 1
    if rgb:
        if arr.ndim == 4:
            frames = arr.shape[0]
        rows, cols = arr.shape[-3], arr.shape[-2]
        ds.PlanarConfiguration = 0
        photometric = "RGB" if photometric.startswith("MONO") else photometric
    else:
        if arr.ndim == 3:
            frames = arr.shape[0]
        rows, cols = arr.shape[-2], arr.shape[-1]
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = spp
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated = arr.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if arr.dtype.kind == "i" else 0


def write_text_file(path: Path, text: str = "not an image\n") -> Path:
    """Write a plain text file (a non-image for scan tests) and return its path."""
    path = Path(path)
    path.write_text(text)
    return path
