"""Header scan of files and folders for import: records for images, one issue per bad file.

The scan never raises for a bad file or folder; it only stops early when the
cancel token is set (raising :class:`~core.errors.Cancelled`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional, Union

from core.errors import DamagedImageError, LoupeError
from core.imaging import dicom_io, photo
from core.imaging.integrity import DEFAULT_OPTIONS, IntegrityOptions, check_photo
from core.imaging.sniff import image_kind
from core.progress import CancelToken, ProgressCallback, report
from core.types import ImageRecord, ImportIssue

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

#: Files that live beside images (labels, notes, indexes) and are skipped silently.
SIDECAR_SUFFIXES = frozenset({".csv", ".txt", ".md", ".json"})
SIDECAR_NAMES = frozenset({"dicomdir", ".ds_store", "thumbs.db", "desktop.ini"})


@dataclass
class ScanResult:
    """What a scan found: a record per readable image, an issue per rejected file or folder."""

    records: list[ImageRecord] = field(default_factory=list)
    errors: list[ImportIssue] = field(default_factory=list)
    #: files not looked at (sidecars such as a labels CSV, hidden names), each with its reason.
    skipped: list[ImportIssue] = field(default_factory=list)
    #: path → identity (SOP Instance UID) of each file rejected as damaged whose header names one.
    damaged_keys: dict[str, str] = field(default_factory=dict)


def is_sidecar(name: str) -> bool:
    """True for well-known non-image companions (CSV, TXT, MD, JSON, DICOMDIR, .DS_Store, Thumbs.db)."""
    low = name.lower()
    return low in SIDECAR_NAMES or os.path.splitext(low)[1] in SIDECAR_SUFFIXES


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _walk(root: str, errors: list[ImportIssue], active: set[tuple[int, int]],
          skipped: Optional[list[ImportIssue]] = None) -> Iterator[str]:
    """Files under ``root`` in sorted order; follows folder links but not loops."""
    try:
        st = os.stat(root)
    except OSError as exc:
        errors.append(ImportIssue(root, f"cannot open folder: {exc.strerror or exc}"))
        return
    ident = (st.st_dev, st.st_ino)
    if ident in active:
        errors.append(ImportIssue(root, "folder link loops back to a parent folder; not followed"))
        return
    try:
        with os.scandir(root) as it:
            entries = sorted(it, key=lambda e: e.name)
    except PermissionError:
        errors.append(ImportIssue(root, "cannot open folder: permission denied"))
        return
    except OSError as exc:
        errors.append(ImportIssue(root, f"cannot open folder: {exc.strerror or exc}"))
        return
    active.add(ident)
    try:
        for entry in entries:
            if _hidden(entry.name):
                if skipped is not None:
                    what = "folder" if entry.is_dir() else "file"
                    skipped.append(ImportIssue(entry.path, f"hidden {what} (its name starts with a dot): not looked at"))
                continue
            try:
                is_dir = entry.is_dir()  # follows links
            except OSError:
                is_dir = False
            if is_dir:
                yield from _walk(entry.path, errors, active, skipped)
            else:
                yield entry.path
    finally:
        active.discard(ident)


def collect_files(paths: Iterable[PathLike], errors: list[ImportIssue],
                  skipped: Optional[list[ImportIssue]] = None) -> list[str]:
    """Expand files and folders (recursively, sorted, hidden names skipped) into file paths.

    Takes paths and a list that receives an :class:`ImportIssue` per missing
    path, unreadable folder or link loop. Returns absolute file paths in a
    deterministic order without duplicates; sidecar files and hidden names
    are dropped (each listed in ``skipped`` with its reason when given).
    """
    out: list[str] = []
    seen: set[str] = set()
    for raw in paths:
        path = os.path.abspath(os.fspath(raw))
        if os.path.isdir(path):
            candidates: Iterable[str] = _walk(path, errors, set(), skipped)
        elif os.path.lexists(path):
            candidates = [path]
        else:
            errors.append(ImportIssue(path, "no such file or folder"))
            continue
        for file in candidates:
            if is_sidecar(os.path.basename(file)):
                if skipped is not None:
                    skipped.append(ImportIssue(file, "not an image: a "
                                               f"{os.path.splitext(file)[1].lower() or os.path.basename(file)} "
                                               "file kept beside images (labels, notes, index)"))
                continue
            real = os.path.realpath(file)
            if real in seen:
                continue
            seen.add(real)
            out.append(file)
    return out


def scan_file(path: PathLike, integrity: Optional[IntegrityOptions] = None) -> ImageRecord:
    """Header record of one file, with the checks an import needs.

    Beyond :func:`~core.imaging.loader.read_image_header`, a DICOM file's
    transfer syntax is checked for an installed decoder, so undecodable files
    are refused at import, and its pixel data must pass the integrity checks
    of :mod:`core.imaging.integrity` (``integrity`` options; the defaults when
    None). Raises :class:`ImageReadError` (or a subclass;
    :class:`~core.errors.DamagedImageError` for damaged pixel data).
    """
    options = integrity or DEFAULT_OPTIONS
    if image_kind(path) == "photo":
        record = photo.read_photo_header(path)
        check_photo(path, options, key=record.key)
        return record
    return dicom_io.read_header(path, integrity=options)


def scan_paths(
    paths: Iterable[PathLike],
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    integrity: Optional[IntegrityOptions] = None,
) -> ScanResult:
    """Scan files and folders for images, reading headers only.

    Takes paths (files or folders, recursed in sorted order; hidden names and
    sidecar files such as CSV/TXT/JSON/DICOMDIR skipped silently), an optional
    progress callback (one event per file) and a cancel token checked between
    files, and the integrity options (see :func:`scan_file`). Returns a
    :class:`ScanResult`: a record per readable image, and an
    :class:`ImportIssue` with a plain reason for every other file, unreadable
    folder or link loop. Raises only :class:`~core.errors.Cancelled`.
    """
    result = ScanResult()
    files = collect_files(paths if not isinstance(paths, (str, os.PathLike)) else [paths], result.errors,
                          result.skipped)
    total = len(files)
    report(progress, 0, total, "scanning")
    for done, file in enumerate(files, start=1):
        if cancel is not None:
            cancel.check()
        if not _utf8(file):
            # The workspace stores paths as UTF-8 text: such a name cannot be stored (or shown) faithfully.
            result.errors.append(ImportIssue(file, "the file name is not valid UTF-8 text (it was written in an "
                                                   "older encoding); rename the file to import it"))
            report(progress, done, total, printable(os.path.basename(file)))
            continue
        try:
            result.records.append(scan_file(file, integrity))
        except DamagedImageError as exc:
            logger.info("rejected %s: %s", file, exc)
            result.errors.append(ImportIssue(file, str(exc)))
            if exc.key:
                result.damaged_keys[file] = exc.key
        except LoupeError as exc:
            result.errors.append(ImportIssue(file, str(exc)))
        except Exception as exc:  # noqa: BLE001 - one odd file must not stop an import
            logger.exception("unexpected error scanning %s", file)
            result.errors.append(ImportIssue(file, f"could not be read: {exc}"))
        report(progress, done, total, os.path.basename(file))
    # Issues are shown and printed as JSON: undecodable bytes in names become U+FFFD there.
    result.errors = [ImportIssue(printable(e.path), printable(e.reason)) for e in result.errors]
    result.skipped = [ImportIssue(printable(e.path), printable(e.reason)) for e in result.skipped]
    return result


def _utf8(text: str) -> bool:
    """False for a name holding undecodable bytes (``os.fsdecode`` keeps them as surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(text: str) -> str:
    """``text`` with any undecodable file-name bytes replaced by U+FFFD, safe to print and store."""
    if _utf8(text):
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")

