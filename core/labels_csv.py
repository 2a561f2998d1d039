"""Reading labels CSV files (``loupe import --labels``).

Columns: ``path`` (relative to the CSV's folder, or absolute) or ``file`` (a file
name), ``label`` (class name; ``;`` separates several), optional ``severity``
(integer), ``split`` (train/val/test), ``patient`` and ``group`` (a lesion id is
a group: training splits keep a group and a patient on one side) and
``modality`` (what a non-DICOM picture is: CR/DX radiograph or XC photograph).
A malformed file raises
:class:`~core.errors.LabelsFileError`; a malformed row becomes one
:class:`~core.types.ImportIssue` and the other rows still count.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from core.errors import LabelsFileError
from core.types import PICTURE_MODALITIES, ImportIssue

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class LabelRow:
    """One valid row of a labels CSV."""

    line: int
    path: Optional[Path]  # resolved absolute path when the CSV gave `path`
    file: Optional[str]  # bare file name when the CSV gave `file`
    classes: tuple[str, ...]
    severity: Optional[int] = None
    split: Optional[str] = None
    patient: Optional[str] = None
    group: Optional[str] = None
    modality: Optional[str] = None  # CR | DX | XC, for non-DICOM pictures

    @property
    def where(self) -> str:
        """How to name this row in an error: the path or file it refers to."""
        return str(self.path) if self.path is not None else str(self.file)


def read_labels_csv(csv_path: str | Path) -> tuple[list[LabelRow], list[ImportIssue]]:
    """Parse a labels CSV.

    Returns the valid rows and one issue per rejected row (unknown split, bad
    severity, empty label, no path). Raises LabelsFileError when the file cannot
    be read or lacks the required columns.
    """
    csv_path = Path(csv_path)
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip().lower() for h in (reader.fieldnames or [])]
            raw_rows = [(i + 2, row) for i, row in enumerate(reader)]
    except FileNotFoundError:
        raise LabelsFileError(f"labels CSV not found: {csv_path}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LabelsFileError(f"cannot read labels CSV {csv_path}: {exc}") from None
    if "label" not in header or not ({"path", "file"} & set(header)):
        raise LabelsFileError(
            f"labels CSV {csv_path.name} needs a 'path' or 'file' column and a 'label' column; "
            f"it has: {', '.join(header) or 'no header'}"
        )
    base = csv_path.resolve().parent
    rows: list[LabelRow] = []
    issues: list[ImportIssue] = []
    for line, raw in raw_rows:
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
        where = f"{csv_path.name}:{line}"
        parsed = _parse_row(row, line, base)
        if isinstance(parsed, str):
            issues.append(ImportIssue(where, parsed))
        else:
            rows.append(parsed)
    logger.info("labels CSV %s: %d rows, %d rejected", csv_path, len(rows), len(issues))
    return rows, issues


def _parse_row(row: dict, line: int, base: Path) -> LabelRow | str:
    """A LabelRow, or the reason the row is rejected."""
    path_text, file_text = row.get("path", ""), row.get("file", "")
    if not path_text and not file_text:
        return "row has neither a path nor a file name"
    classes = tuple(c.strip() for c in row.get("label", "").split(";") if c.strip())
    if not classes:
        return "row has an empty label"
    severity = None
    if row.get("severity"):
        try:
            severity = int(row["severity"])
        except ValueError:
            return f"severity must be an integer, got {row['severity']!r}"
    split = row.get("split", "").lower() or None
    if split is not None and split not in SPLITS:
        return f"split must be one of {', '.join(SPLITS)}, got {row['split']!r}"
    modality = row.get("modality", "").upper() or None
    if modality is not None and modality not in PICTURE_MODALITIES:
        return (f"modality must be CR or DX (radiograph) or XC (photograph), got {row['modality']!r}")
    path = None
    if path_text:
        path = Path(path_text).expanduser()
        path = (path if path.is_absolute() else base / path).resolve()
    return LabelRow(line, path, None if path else file_text, classes, severity, split,
                    patient=row.get("patient") or None, group=row.get("group") or None, modality=modality)
