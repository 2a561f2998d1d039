"""Reading DICOM files: fast header scan, transfer-syntax checks, frame decoding.

Every failure becomes a :class:`~core.errors.DicomReadError` (or its subclass
:class:`~core.errors.UnsupportedTransferSyntax`) whose message a person can
act on; pydicom's own exceptions never leak out.
"""

from __future__ import annotations

import logging
import os
import struct
from typing import Any, Optional, Union

import numpy as np
import pydicom
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.uid import UID

from core.errors import DamagedImageError, DicomReadError, UnsupportedTransferSyntax
from core.imaging.display import DisplayParams, display_params, window_presets_from
from core.types import ImageRecord

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
EXPLICIT_VR_BE = "1.2.840.10008.1.2.2"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"

#: Human names of the transfer syntaxes people meet in practice.
TRANSFER_SYNTAX_NAMES: dict[str, str] = {
    IMPLICIT_VR_LE: "Implicit VR Little Endian (uncompressed)",
    EXPLICIT_VR_LE: "Explicit VR Little Endian (uncompressed)",
    DEFLATED_LE: "Deflated Explicit VR Little Endian",
    EXPLICIT_VR_BE: "Explicit VR Big Endian (uncompressed, retired)",
    "1.2.840.10008.1.2.4.50": "JPEG Baseline (8-bit)",
    "1.2.840.10008.1.2.4.51": "JPEG Extended 12-bit",
    "1.2.840.10008.1.2.4.57": "JPEG Lossless (Process 14)",
    "1.2.840.10008.1.2.4.70": "JPEG Lossless (Process 14, SV1)",
    "1.2.840.10008.1.2.4.80": "JPEG-LS lossless",
    "1.2.840.10008.1.2.4.81": "JPEG-LS near-lossless",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 (lossless)",
    "1.2.840.10008.1.2.4.91": "JPEG 2000 (lossy)",
    "1.2.840.10008.1.2.4.201": "HTJ2K (lossless)",
    "1.2.840.10008.1.2.4.202": "HTJ2K (lossless, RPCL)",
    "1.2.840.10008.1.2.4.203": "HTJ2K (lossy)",
    "1.2.840.10008.1.2.5": "RLE Lossless",
    "1.2.840.10008.1.2.4.100": "MPEG-2 video",
    "1.2.840.10008.1.2.4.102": "MPEG-4 AVC/H.264 video",
    "1.2.840.10008.1.2.4.110": "JPEG XL (lossless)",
    "1.2.840.10008.1.2.4.112": "JPEG XL",
}

#: Pixel Data, Float Pixel Data, Double Float Pixel Data.
_PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}
NO_PIXEL_DATA = "no pixel data (a DICOM object without an image, e.g. a structured report)"
TRUNCATED = "file is truncated: pixel data ends early"  # decode errors that name no position
NOT_DICOM = "not a DICOM file or image"


def transfer_syntax_name(uid: str) -> str:
    """A person-readable name for a transfer syntax UID (pydicom's name, else the UID)."""
    uid = str(uid or "").strip()
    if uid in TRANSFER_SYNTAX_NAMES:
        return TRANSFER_SYNTAX_NAMES[uid]
    name = UID(uid).name if uid else ""
    return name if name and name != uid else uid


def _decoder(uid: str) -> Any:
    """pydicom's decoder object for ``uid``, or None when pydicom has none."""
    from pydicom.pixels import get_decoder

    try:
        return get_decoder(uid)
    except (NotImplementedError, ValueError):
        return None


def _known_transfer_syntax(uid: str) -> bool:
    try:
        return bool(uid) and bool(UID(uid).is_transfer_syntax)
    except ValueError:
        return False


def check_transfer_syntax(uid: str) -> None:
    """Raise if pixel data in transfer syntax ``uid`` cannot be decoded here.

    Takes a Transfer Syntax UID string. Returns None when a decoder is
    available. Raises :class:`UnsupportedTransferSyntax` with a message naming
    the syntax and what to install (or saying no decoder exists).
    """
    uid = str(uid or "").strip()
    dec = _decoder(uid)
    name = transfer_syntax_name(uid)
    if dec is None:
        if uid in TRANSFER_SYNTAX_NAMES or _known_transfer_syntax(uid):
            raise UnsupportedTransferSyntax(f"{name}: cannot decode its pixels (no decoder exists for it in Loupe)")
        raise UnsupportedTransferSyntax(f"unknown transfer syntax {uid or '(missing)'}: cannot decode its pixels")
    if dec.is_available:
        return
    missing = dec.missing_dependencies
    hint = "install GDCM to read it" if any("gdcm" in m for m in missing) else ""
    if not hint and missing:
        hint = "install one of: " + "; ".join(missing)
    raise UnsupportedTransferSyntax(f"{name}: no decoder installed" + (f"; {hint}" if hint else ""))


def _transfer_syntax(ds: Any) -> str:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    if uid:
        return str(uid).strip()
    # No File Meta (pre-Part-10 files): use what pydicom detected, which is
    # Implicit VR Little Endian for almost all of them.
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if implicit is False:
        return EXPLICIT_VR_LE if little is not False else EXPLICIT_VR_BE
    return IMPLICIT_VR_LE


def check_decodable(ds: Any) -> None:
    """Raise :class:`UnsupportedTransferSyntax` if ``ds``'s pixels cannot be decoded.

    Takes a pydicom Dataset (header only is enough); the transfer syntax comes
    from its File Meta (Implicit VR Little Endian when there is none).
    """
    check_transfer_syntax(_transfer_syntax(ds))


def _pixel_element(fp: Any, ds: Any) -> Optional[tuple[int, int]]:
    """After a stop-before-pixels read, the (value offset, length) of the pixel element.

    Returns None when the file has no pixel element. Length is -1 for
    undefined (encapsulated) length.
    """
    start = fp.tell()
    head = fp.read(12)
    if len(head) < 8:
        return None
    implicit, little = getattr(ds, "original_encoding", (True, True))
    end = "<" if little is not False else ">"
    group, elem = struct.unpack(end + "HH", head[:4])
    if (group << 16 | elem) not in _PIXEL_TAGS:
        return None
    if implicit is not False:
        (length,) = struct.unpack(end + "I", head[4:8])
        offset = start + 8
    else:
        if len(head) < 12:
            return None
        (length,) = struct.unpack(end + "I", head[8:12])
        offset = start + 12
    return offset, (-1 if length == 0xFFFFFFFF else length)


#: What :func:`read_header` needs; parsing only these makes the scan ~2x faster.
HEADER_TAGS = [
    "SOPClassUID", "SOPInstanceUID", "Modality", "Rows", "Columns", "NumberOfFrames",
    "PhotometricInterpretation", "SamplesPerPixel", "BitsAllocated", "BitsStored",
    "PatientID", "PatientName", "StudyInstanceUID", "StudyDate", "StudyDescription",
    "SeriesInstanceUID", "SeriesDescription", "BodyPartExamined", "ViewPosition",
    "WindowCenter", "WindowWidth", "WindowCenterWidthExplanation",
]


def read_dataset(path: PathLike, header_only: bool = False) -> tuple[Any, Optional[tuple[int, int]]]:
    """Read a DICOM header (no pixels) tolerantly.

    Takes a path, and ``header_only`` to parse just :data:`HEADER_TAGS` (for
    scans; the display pipeline needs the full header). Returns
    ``(dataset, pixel)`` where ``pixel`` is the pixel element's ``(offset,
    length)`` or None. Files without preamble or File Meta are accepted.
    Raises :class:`DicomReadError` for unreadable or non-DICOM files.
    """
    path = os.fspath(path)
    tags = HEADER_TAGS if header_only else None
    try:
        with open(path, "rb") as fp:
            ds = pydicom.dcmread(fp, stop_before_pixels=True, force=True, defer_size="256 KB", specific_tags=tags)
            if _transfer_syntax(ds) == DEFLATED_LE:
                # The file position says nothing inside a deflated stream:
                # presence and completeness are checked when decoding.
                pixel: Optional[tuple[int, int]] = (0, -1)
            else:
                pixel = _pixel_element(fp, ds)
    except PermissionError as exc:
        raise DicomReadError(f"cannot read file: permission denied ({exc.filename})") from exc
    except FileNotFoundError as exc:
        raise DicomReadError("file not found") from exc
    except (InvalidDicomError, BytesLengthException, NotImplementedError, EOFError, struct.error, ValueError,
            TypeError, KeyError, OSError) as exc:  # a corrupt element fails in dcmread as one of these
        logger.debug("dcmread failed for %s: %s", path, exc)
        raise DicomReadError(NOT_DICOM) from exc
    if not _looks_like_image_header(ds) and pixel is None:
        if "SOPClassUID" in ds or "SOPInstanceUID" in ds:
            raise DicomReadError(NO_PIXEL_DATA)
        raise DicomReadError(NOT_DICOM)
    return ds, pixel


def _looks_like_image_header(ds: Any) -> bool:
    try:
        return "Rows" in ds and "Columns" in ds
    except Exception:  # noqa: BLE001 - a garbage force-read can fail anywhere
        return False


def _is_encapsulated(uid: str) -> bool:
    """True for compressed syntaxes; unknown UIDs count as compressed (size unknowable)."""
    if uid in (IMPLICIT_VR_LE, EXPLICIT_VR_LE, EXPLICIT_VR_BE):
        return False
    try:
        return bool(UID(uid).is_encapsulated)
    except ValueError:
        return True


def _expected_native_bytes(ds: Any) -> int:
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    frames = _frames(ds)
    bits = int(ds.get("BitsAllocated", 8) or 8)
    return (rows * cols * spp * frames * bits + 7) // 8


def _frames(ds: Any) -> int:
    try:
        return max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def validate_pixels(path: PathLike, ds: Any, pixel: Optional[tuple[int, int]]) -> None:
    """Cheap checks that the pixel data is present and complete.

    Takes the output of :func:`read_dataset`. Raises :class:`DicomReadError`
    for a missing pixel element, missing Rows/Columns or a native (uncompressed)
    pixel element that ends before the image does. Encapsulated data is only
    checked when decoded.
    """
    if pixel is None:
        raise DicomReadError(NO_PIXEL_DATA)
    if not _looks_like_image_header(ds):
        raise DicomReadError("image header is incomplete: Rows/Columns missing")
    offset, length = pixel
    tsyntax = _transfer_syntax(ds)
    if length < 0 or tsyntax == DEFLATED_LE or _is_encapsulated(tsyntax):
        return
    size = os.path.getsize(path)
    expected = _expected_native_bytes(ds)
    if offset + length > size or length < expected:
        from core.imaging.integrity import native_shortfall_reason

        present = max(0, min(length, size - offset))
        raise DamagedImageError(native_shortfall_reason(present, expected), key=_text(ds, "SOPInstanceUID"))


def _text(ds: Any, keyword: str) -> Optional[str]:
    value = ds.get(keyword)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def record_from_dataset(path: PathLike, ds: Any) -> ImageRecord:
    """Build the :class:`ImageRecord` of a DICOM header (pure, no I/O)."""
    sop = _text(ds, "SOPInstanceUID")
    meta = getattr(ds, "file_meta", None)
    if not sop and meta is not None:
        sop = _text(meta, "MediaStorageSOPInstanceUID")
    if not sop:
        raise DicomReadError("no SOP Instance UID: cannot identify this image")
    return ImageRecord(
        key=sop,
        path=os.path.abspath(os.fspath(path)),
        kind="dicom",
        modality=_text(ds, "Modality") or "OT",
        rows=int(ds.get("Rows", 0) or 0),
        columns=int(ds.get("Columns", 0) or 0),
        frames=_frames(ds),
        photometric=(_text(ds, "PhotometricInterpretation") or "MONOCHROME2").upper(),
        samples_per_pixel=int(ds.get("SamplesPerPixel", 1) or 1),
        bits_stored=int(ds.get("BitsStored", 0) or ds.get("BitsAllocated", 8) or 8),
        transfer_syntax=_transfer_syntax(ds),
        patient_id=_text(ds, "PatientID"),
        patient_name=_text(ds, "PatientName"),
        study_uid=_text(ds, "StudyInstanceUID"),
        study_date=_text(ds, "StudyDate"),
        study_description=_text(ds, "StudyDescription"),
        series_uid=_text(ds, "SeriesInstanceUID"),
        series_description=_text(ds, "SeriesDescription"),
        sop_uid=sop,
        body_part=_text(ds, "BodyPartExamined"),
        view_position=_text(ds, "ViewPosition"),
        window_presets=window_presets_from(ds),
    )


def read_header(path: PathLike, integrity: Optional[Any] = None) -> ImageRecord:
    """Read a DICOM file's header into an :class:`ImageRecord` without decoding pixels.

    Takes a path; tolerates files without preamble or File Meta. With
    ``integrity`` (:class:`~core.imaging.integrity.IntegrityOptions`) the
    transfer syntax must have a decoder and the pixel data must pass the
    integrity checks (structure of compressed data, optional trial decode).
    Returns the record (key = SOP Instance UID). Raises :class:`DicomReadError`
    for non-DICOM files, objects without pixel data or a missing SOP Instance
    UID, :class:`~core.errors.DamagedImageError` for damaged (e.g. cut-off)
    pixel data and :class:`UnsupportedTransferSyntax`.
    """
    ds, pixel = read_dataset(path, header_only=True)
    try:
        validate_pixels(path, ds, pixel)
        record = record_from_dataset(path, ds)
    except DicomReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom converts values lazily: a corrupt element fails here
        logger.debug("corrupt DICOM header in %s: %s", path, exc)
        raise DicomReadError(f"corrupt DICOM header: {exc}") from exc
    if integrity is not None:
        from core.imaging.integrity import check_dicom_pixels

        check_transfer_syntax(record.transfer_syntax)
        check_dicom_pixels(path, ds, pixel, record.transfer_syntax, record.frames, integrity, key=record.key)
    return record


def _map_decode_error(exc: Exception) -> DicomReadError:
    text = str(exc)
    low = text.lower()
    if any(k in low for k in ("less than expected", "truncat", "end of file", "unexpected end", "not enough",
                              "end of the data", "doesn't match the expected", "broken data stream")):
        return DamagedImageError(TRUNCATED)
    # The plugins' own messages are long and technical: the log keeps them, the person gets one line.
    return DamagedImageError("the image data is damaged: it cannot be decoded")


def decode_frame(path: PathLike, frame: int = 0) -> tuple[np.ndarray, DisplayParams]:
    """Decode one frame of a DICOM file.

    Takes a path and a 0-based frame index (the first frame by default).
    Returns ``(raw, params)``: the stored values as (H, W) or, for colour,
    (H, W, 3) RGB (YBR is converted by pydicom; PALETTE COLOR is expanded), and
    the :class:`DisplayParams` of the header. Only the requested frame is
    decoded. Raises :class:`DicomReadError` (bad file, no pixels, truncated,
    frame out of range) or :class:`UnsupportedTransferSyntax`.
    """
    from pydicom.pixels import pixel_array

    ds, pixel = read_dataset(path)
    try:
        validate_pixels(path, ds, pixel)
        frames = _frames(ds)
        params = display_params(ds)
    except DicomReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom converts values lazily: a corrupt element fails here
        raise DicomReadError(f"corrupt DICOM header: {exc}") from exc
    if not isinstance(frame, (int, np.integer)) or not 0 <= frame < frames:
        raise DicomReadError(f"frame {frame} does not exist: the image has {frames} frame(s), numbered 0 to {frames - 1}")
    check_decodable(ds)
    tsyntax = _transfer_syntax(ds)
    kwargs: dict[str, Any] = {}
    meta = getattr(ds, "file_meta", None)
    if meta is None or not meta.get("TransferSyntaxUID"):
        kwargs["transfer_syntax_uid"] = UID(tsyntax)
    from core.imaging.integrity import decoding_plugin

    if decoding_plugin(tsyntax):
        kwargs["decoding_plugin"] = decoding_plugin(tsyntax)
    from core.imaging import integrity

    key = _text(ds, "SOPInstanceUID")
    try:
        arr = None
        if pixel is not None and pixel[1] < 0 and pixel[0] > 0:
            # The frame's codestream must be closed before a decoder may fill in what is missing.
            codestreams = integrity.encapsulated_frames(path, pixel[0], frames, tsyntax)
            stream = codestreams[int(frame)]
            integrity.check_codestream(stream, tsyntax, int(frame), frames,
                                       integrity._segments(ds) if tsyntax == integrity.RLE else None,
                                       shape=integrity.image_shape(ds))
            if tsyntax in integrity.JPEG_FAMILY:
                # JPEG decoders fill a cut-off scan silently: decode with the completeness probe.
                arr = integrity.trial_decode_frame(ds, stream, tsyntax, int(frame), frames, raw=False)
        if arr is None:
            with integrity.decode_guard("decoding the image"):
                arr = pixel_array(os.fspath(path), index=int(frame), **kwargs)
    except DamagedImageError as exc:
        logger.info("%s frame %d is damaged: %s", path, frame, exc)
        raise DamagedImageError(str(exc), key=key) from None
    except BaseException as exc:  # noqa: BLE001 - decoder bindings also raise panics (BaseException)
        if integrity._fatal(exc):
            raise
        logger.info("decoding %s frame %d failed: %s", path, frame, exc)
        error = _map_decode_error(exc)
        error.key = key
        raise error from None
    expected = integrity._expected_shape(ds)
    if tuple(arr.shape) != expected:
        raise DamagedImageError(f"the image data is damaged: it decodes to {arr.shape} pixels where the header "
                                f"says {expected}", key=key)
    if params.photometric == "PALETTE COLOR":
        arr, params = _expand_palette(arr, ds, params)
    elif params.samples_per_pixel >= 3 and params.photometric != "RGB":
        params = _replace(params, photometric="RGB")  # pydicom converted YBR to RGB
    return arr, params


def _replace(params: DisplayParams, **changes: Any) -> DisplayParams:
    from dataclasses import replace

    return replace(params, **changes)


def _expand_palette(arr: np.ndarray, ds: Any, params: DisplayParams) -> tuple[np.ndarray, DisplayParams]:
    from pydicom.pixels import apply_color_lut

    try:
        rgb = apply_color_lut(arr, ds)
    except (ValueError, AttributeError, KeyError) as exc:
        raise DicomReadError(f"PALETTE COLOR image with an unusable palette: {exc}") from exc
    bits = 8 if rgb.dtype == np.uint8 else 16
    return rgb, _replace(params, photometric="RGB", samples_per_pixel=3, bits_stored=bits)


def dicom_frame_count(path: PathLike) -> int:
    """Number of frames of a DICOM file (1 when Number of Frames is absent).

    Raises :class:`DicomReadError` when the file cannot be read.
    """
    ds, _ = read_dataset(path, header_only=True)
    return _frames(ds)


def is_dicom_path(path: PathLike) -> bool:
    """True when the file starts like DICOM: 'DICM' at 128, or a preamble-less data set.

    Reads at most 132 bytes; never raises for I/O errors (returns False).
    """
    try:
        with open(path, "rb") as fp:
            head = fp.read(132)
    except OSError:
        return False
    return sniff_dicom(head)


def sniff_dicom(head: bytes) -> bool:
    """True when the first 132 bytes of a file look like DICOM (see :func:`is_dicom_path`)."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    if len(head) < 8:
        return False
    # Preamble-less: the file starts with an element of group 0002 or 0008
    # (little or big endian), followed by either an explicit VR or a length.
    group_le = struct.unpack("<H", head[:2])[0]
    group_be = struct.unpack(">H", head[:2])[0]
    if group_le not in (0x0002, 0x0008) and group_be not in (0x0002, 0x0008):
        return False
    vr = head[4:6]
    return vr.isalpha() and vr.isupper() or struct.unpack("<I", head[4:8])[0] < 0x10000
