"""Photographs (PNG, JPEG, TIFF) through Pillow.

A photograph's identity is the SHA-256 of its bytes, and its "study" is the
folder it sits in, so a dermatoscopy folder groups like a DICOM study.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import ImageReadError
from dataclasses import replace

from core.types import PHOTO_MODALITY, RADIOGRAPH_MODALITIES, ImageRecord, WindowPreset

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}
_FORMATS = {"PNG", "JPEG", "MPO", "TIFF"}
_CHUNK = 1 << 20


def sniff_photo(head: bytes) -> str:
    """'PNG', 'JPEG' or 'TIFF' when ``head`` (the first bytes) has that magic, else ''."""
    for magic, fmt in _MAGIC.items():
        if head.startswith(magic):
            return fmt
    return ""


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fp:
        for block in iter(lambda: fp.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _ends_cleanly(path: str, fmt: str) -> bool:
    """Cheap truncation check on the file's tail (PNG IEND chunk, JPEG EOI marker)."""
    if fmt not in ("PNG", "JPEG"):
        return True
    size = os.path.getsize(path)
    with open(path, "rb") as fp:
        fp.seek(max(0, size - 65536))
        tail = fp.read()
    if fmt == "PNG":
        return b"IEND" in tail[-64:]
    return b"\xff\xd9" in tail


def _open(path: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
    except FileNotFoundError as exc:
        raise ImageReadError("file not found") from exc
    except PermissionError as exc:
        raise ImageReadError("cannot read file: permission denied") from exc
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(f"not an image Loupe can read: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"corrupt image: {exc}") from exc
    if im.format not in _FORMATS:
        im.close()
        raise ImageReadError(f"not an image: {im.format} pictures are not supported (PNG, JPEG, TIFF only)")
    return im


def _orientation(im: Image.Image) -> int:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns on slightly corrupt EXIF blocks
            return int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - malformed EXIF must not block reading
        return 1


def _is_gray(mode: str) -> bool:
    return mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def read_photo_header(path: PathLike) -> ImageRecord:
    """Read a photograph's header into an :class:`ImageRecord` without decoding it.

    Takes a path to a PNG, JPEG or TIFF file. Returns a record with key
    ``sha256:<hex of the file bytes>``, kind 'photo', modality
    :data:`~core.types.PHOTO_MODALITY`, rows/columns after EXIF orientation,
    and the containing folder as its study (``folder:<sha1 of its absolute
    path, 16 hex>``, described by the folder name). Raises
    :class:`ImageReadError` for unreadable, unsupported or truncated files.
    """
    path = os.path.abspath(os.fspath(path))
    im = _open(path)
    try:
        width, height = im.size
        mode, fmt = im.mode, im.format
        frames = int(getattr(im, "n_frames", 1) or 1)
        orientation = _orientation(im)
    finally:
        im.close()
    if not _ends_cleanly(path, "JPEG" if fmt == "MPO" else fmt):
        raise ImageReadError(f"file is truncated: the {fmt} data ends early")
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    gray = _is_gray(mode)
    bits = 16 if mode.startswith("I;16") or mode == "I" else (32 if mode == "F" else (1 if mode == "1" else 8))
    folder = os.path.dirname(path)
    return ImageRecord(
        key="sha256:" + _sha256(path),
        path=path,
        kind="photo",
        modality=PHOTO_MODALITY,
        rows=height,
        columns=width,
        frames=frames,
        photometric="MONOCHROME2" if gray else "RGB",
        samples_per_pixel=1 if gray else 3,
        bits_stored=bits,
        patient_id=None,
        study_uid="folder:" + hashlib.sha1(folder.encode("utf-8", "surrogateescape")).hexdigest()[:16],
        study_description=os.path.basename(folder) or folder,
        series_description=fmt,
    )


def picture_as(record: ImageRecord, modality: str) -> ImageRecord:
    """A photograph record re-labelled as ``modality`` (CR/DX radiograph or XC photograph).

    A radiograph is stored grayscale (MONOCHROME2, one sample), 8-bit ones with a "Full range" window
    preset (center 128, width 256), so it is windowed, shown and augmented like a radiograph. DICOM records and
    ``XC`` are returned unchanged. Raises ValueError for a modality other than CR, DX or XC.
    """
    modality = modality.upper()
    if modality not in RADIOGRAPH_MODALITIES + (PHOTO_MODALITY,):
        raise ValueError(f"a picture is CR or DX (radiograph) or XC (photograph), not {modality!r}")
    if record.kind != "photo" or modality == record.modality:
        return record
    if modality == PHOTO_MODALITY:
        return replace(record, modality=modality, window_presets=())
    bits = int(record.bits_stored or 8)
    # 8-bit pictures use their whole range; deeper ones rarely do, so they keep the min..max fallback
    presets = (WindowPreset(128.0, 256.0, "Full range"),) if bits <= 8 else ()
    return replace(record, modality=modality, photometric="MONOCHROME2", samples_per_pixel=1,
                   window_presets=presets)


def radiograph_frame(raw: np.ndarray, record: ImageRecord) -> tuple[np.ndarray, "DisplayParams"]:
    """A decoded picture imported as a radiograph (CR/DX), ready for the DICOM display pipeline.

    Takes the decoded pixels (2-D, or (H, W, 3) when the file was saved in colour) and the image's
    record. Returns (2-D grayscale stored values, DisplayParams with MONOCHROME2, the pixel depth and the
    record's window presets), so window/level, presets and the pixel readout work as for a DICOM radiograph.
    """
    from core.imaging.display import DisplayParams

    gray = raw
    if raw.ndim == 3:
        gray = np.rint(raw[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32))
        gray = gray.astype(raw.dtype if raw.dtype in (np.uint8, np.uint16) else np.float32)
    bits = 16 if gray.dtype == np.uint16 else (8 if gray.dtype == np.uint8 else int(record.bits_stored or 8))
    params = DisplayParams(photometric="MONOCHROME2", samples_per_pixel=1, bits_stored=bits,
                           windows=tuple(record.window_presets))
    return np.ascontiguousarray(gray), params


def photo_frame_count(path: PathLike) -> int:
    """Number of pages of a photograph (TIFF may have several; others 1)."""
    im = _open(os.fspath(path))
    try:
        return int(getattr(im, "n_frames", 1) or 1)
    finally:
        im.close()


def _to_array(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode in ("L", "I", "F") or mode.startswith("I;16"):
        arr = np.asarray(im)
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("="))
        return arr
    if mode == "1":
        return np.asarray(im.convert("L"))
    if mode == "LA":
        return np.asarray(im.getchannel("L"))
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im)


def decode_photo(path: PathLike, frame: int = 0) -> np.ndarray:
    """Decode one frame (page) of a photograph, with its EXIF orientation applied.

    Takes a path and a 0-based page index. Returns grayscale as 2-D (uint8,
    uint16 for 16-bit PNG/TIFF, int32 or float32 for 32-bit TIFF) and colour
    as (H, W, 3) uint8 RGB (alpha dropped, palette expanded). Raises
    :class:`ImageReadError` for truncated or corrupt files or a page out of range.
    """
    im = _open(os.fspath(path))
    try:
        pages = int(getattr(im, "n_frames", 1) or 1)
        if not isinstance(frame, (int, np.integer)) or not 0 <= frame < pages:
            raise ImageReadError(f"frame {frame} does not exist: the image has {pages} page(s), numbered 0 to {pages - 1}")
        try:
            if frame:
                im.seek(int(frame))
            im.load()
            oriented = ImageOps.exif_transpose(im)
            return np.ascontiguousarray(_to_array(oriented if oriented is not None else im))
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            low = str(exc).lower()
            if "truncated" in low or "broken data stream" in low or isinstance(exc, EOFError):
                raise ImageReadError(f"file is truncated: the {im.format} data ends early") from exc
            raise ImageReadError(f"corrupt image: {exc}") from exc
    finally:
        im.close()


def photo_to_unit(arr: np.ndarray) -> np.ndarray:
    """A decoded photograph → float32 in [0, 1], same shape.

    8-bit (grayscale or RGB) divides by 255; deeper grayscale (16-bit PNG,
    32-bit TIFF) is stretched over its own min..max, as DICOM's full-range
    fallback does, because such files rarely use their whole nominal range.
    """
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / np.float32(255.0)
    x = arr.astype(np.float64)
    finite = np.isfinite(x)
    if not finite.all():
        x = np.where(finite, x, np.nanmin(np.where(finite, x, np.nan)) if finite.any() else 0.0)
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.float32)
    return ((x - lo) / (hi - lo)).astype(np.float32)
