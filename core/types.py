"""Frozen value types shared by every core module.

They carry data between the imaging, workspace, model and active-learning
layers and the front ends; none of them knows how it is stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

#: Modality code used for photographs (DICOM "XC": external-camera photography).
PHOTO_MODALITY = "XC"
#: Modality codes of projection radiographs; PNG/JPEG pictures may be imported as these (``--as-modality``).
RADIOGRAPH_MODALITIES = ("CR", "DX")
#: What a non-DICOM picture may be imported as: a radiograph (CR/DX) or a photograph (XC).
PICTURE_MODALITIES = RADIOGRAPH_MODALITIES + (PHOTO_MODALITY,)


@dataclass(frozen=True)
class WindowPreset:
    """One VOI window from a DICOM header (or a modality preset)."""

    center: float
    width: float
    name: str = ""


@dataclass(frozen=True)
class ImageRecord:
    """What a header scan learns about one image file, before any pixel is decoded.

    ``key`` makes imports idempotent: the SOP Instance UID for DICOM, and
    ``sha256:<hex>`` of the file's bytes for photographs.
    """

    key: str
    path: str
    kind: str  # "dicom" or "photo"
    modality: str
    rows: int
    columns: int
    frames: int = 1
    photometric: str = ""
    samples_per_pixel: int = 1
    bits_stored: int = 8
    transfer_syntax: str = ""
    patient_id: Optional[str] = None
    patient_name: Optional[str] = None
    study_uid: Optional[str] = None
    study_date: Optional[str] = None
    study_description: Optional[str] = None
    series_uid: Optional[str] = None
    series_description: Optional[str] = None
    sop_uid: Optional[str] = None
    body_part: Optional[str] = None
    view_position: Optional[str] = None
    window_presets: tuple[WindowPreset, ...] = ()


@dataclass(frozen=True)
class ImageRef:
    """An image stored in a workspace: its id plus its header record."""

    id: str
    record: ImageRecord
    split: Optional[str] = None
    label: Optional[str] = None
    group: Optional[str] = None  # a lesion id or other group a split keeps on one side (labels CSV ``group``)

    @property
    def path(self) -> str:
        """Absolute path of the image file."""
        return self.record.path


@dataclass(frozen=True)
class ImportIssue:
    """One file that could not be imported, with a reason a person understands."""

    path: str
    reason: str


@dataclass(frozen=True)
class ImportReport:
    """Outcome of one import: counts plus one issue per rejected file."""

    imported: int
    skipped: int
    errors: tuple[ImportIssue, ...] = ()
    image_ids: tuple[str, ...] = ()
    labels_added: int = 0
    #: every file not imported because it is already there (identical copy, same file), with the reason
    skipped_files: tuple[ImportIssue, ...] = ()
    #: intact files that replaced a damaged stored copy of the same image
    replaced: tuple[ImportIssue, ...] = ()

    def to_json(self) -> dict:
        """The CLI contract's JSON shape (extra keys allowed)."""
        return {
            "imported": self.imported,
            "skipped": self.skipped,
            "errors": [{"path": e.path, "reason": e.reason} for e in self.errors],
            "skipped_files": [{"path": e.path, "reason": e.reason} for e in self.skipped_files],
            "replaced": [{"path": e.path, "reason": e.reason} for e in self.replaced],
            "labels_added": self.labels_added,
        }


@dataclass(frozen=True)
class Label:
    """One labelling act. Labels are never overwritten: the newest row is current."""

    image_id: str
    classes: tuple[str, ...]
    annotator: str
    created_at: str
    source: str = "human"  # human | import | model
    severity: Optional[int] = None
    note: str = ""
    flag_wrong: bool = False
    id: Optional[int] = None
    role: str = ""  # the reader's role when labelling: annotator | reader | adjudicator | consensus | ""


@dataclass(frozen=True)
class Prediction:
    """A model version's output for one image.

    ``severity`` is the predicted grade (0..K-1) and ``severity_probability``
    its probability when the model has a severity head, else None.
    """

    image_id: str
    version: str
    probs: dict[str, float] = field(default_factory=dict)
    predicted: str = ""
    created_at: str = ""
    severity: Optional[int] = None
    severity_probability: Optional[float] = None


@dataclass(frozen=True)
class ModelVersion:
    """One entry of the model registry."""

    version: str
    arch: str
    classes: tuple[str, ...]
    path: str
    parent: Optional[str] = None
    weights: str = ""
    status: str = "candidate"  # candidate | active | rejected | retired
    created_at: str = ""
    file_hash: str = ""
    params: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    reason: str = ""


@dataclass(frozen=True)
class QueueItem:
    """An image waiting for an expert label, with why it was picked."""

    image_id: str
    score: float
    rank: int
    strategy: str
    why: dict = field(default_factory=dict)
    version: Optional[str] = None


@dataclass(frozen=True, eq=False)
class Explanation:
    """One saliency map for one image, target and model version.

    Attributes:
        map: float32 (H, W) in [0, 1], in the rendered image's geometry (the
            model's resize and padding undone); high = supports the target.
        signed: float32 (H, W) in [-1, 1] for signed methods (negative = speaks
            against the target), else None.
        method: ``gradcam``, ``lime``, ``ig``, ``gradshap`` or ``occlusion``.
        target: class (or finding) name the map explains.
        target_index: its index in the model's classes.
        params: the method's parameters after defaults were resolved.
        version: model version that produced the map.
        seconds: wall-clock seconds it took to compute (not to load from cache).
        faithfulness: deletion / insertion AUC (and how they were measured) when requested.
        cached: True when the map came from the workspace cache.
        score: the model's probability for the target on this image.
        image_id: workspace image id, when the image came from a workspace.
    """

    map: Any
    method: str
    target: str
    target_index: int
    version: str
    seconds: float
    params: dict = field(default_factory=dict)
    signed: Any = None
    faithfulness: dict = field(default_factory=dict)
    cached: bool = False
    score: Optional[float] = None
    image_id: Optional[str] = None

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the map: the rendered image's geometry."""
        return tuple(int(s) for s in self.map.shape[:2])
