"""Telling DICOM from photographs by content (never by file extension)."""

from __future__ import annotations

import logging
import os
from typing import Union

from core.errors import ImageReadError
from core.imaging import dicom_io, photo

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

NOT_AN_IMAGE = "not an image: neither DICOM nor a PNG, JPEG or TIFF picture"


def image_kind(path: PathLike) -> str:
    """'dicom' or 'photo', decided from the file's first bytes.

    Takes a path. Raises :class:`ImageReadError` when the file cannot be
    opened or is neither DICOM (``DICM`` at offset 128, or a data set without
    preamble) nor PNG/JPEG/TIFF.
    """
    try:
        with open(path, "rb") as fp:
            head = fp.read(132)
    except FileNotFoundError as exc:
        raise ImageReadError("file not found") from exc
    except IsADirectoryError as exc:
        raise ImageReadError("is a folder, not a file") from exc
    except PermissionError as exc:
        raise ImageReadError("cannot read file: permission denied") from exc
    except OSError as exc:
        raise ImageReadError(f"cannot read file: {exc.strerror or exc}") from exc
    if not head:
        raise ImageReadError("not an image: the file is empty")
    # 'DICM' first: a DICOM preamble may itself hold a TIFF header
    # (dual-personality files), as RG3_RLE.dcm does.
    if head[128:132] == b"DICM":
        return "dicom"
    if photo.sniff_photo(head):
        return "photo"
    if dicom_io.sniff_dicom(head):
        return "dicom"
    raise ImageReadError(NOT_AN_IMAGE)
