"""Images and their patient → study → series hierarchy."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from core.errors import NotFound, WorkspaceError
from core.types import ImageRecord, ImageRef, WindowPreset

from .connection import ConnectionPool, dumps, loads, now_iso

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")

# The current label of every image: the newest row per image_id.
CURRENT_LABELS_SQL = (
    "SELECT l.* FROM labels l JOIN (SELECT image_id, MAX(id) AS id FROM labels GROUP BY image_id) m "
    "ON l.id = m.id"
)

# The id of one image's newest label row; uses the (image_id, id) index, so it is cheap.
NEWEST_LABEL_ID_SQL = "SELECT MAX(id) FROM labels WHERE image_id = {image}"

_IMAGE_SELECT = f"""
SELECT i.*, p.name AS patient_name, s.date AS study_date, s.description AS study_description,
       se.description AS series_description, cl.classes AS current_classes
FROM images i
LEFT JOIN patients p ON p.patient_id = i.patient_id
LEFT JOIN studies s ON s.study_uid = i.study_uid
LEFT JOIN series se ON se.series_uid = i.series_uid
LEFT JOIN labels cl ON cl.id = ({NEWEST_LABEL_ID_SQL.format(image="i.id")})
"""

_IMAGE_ORDER = (
    " ORDER BY i.patient_id IS NULL, i.patient_id, i.study_uid IS NULL, i.study_uid,"
    " i.series_uid IS NULL, i.series_uid, i.path"
)


def image_id_for_key(key: str) -> str:
    """The id of an image: the first 12 hex digits of sha1 of its key."""
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:12]


def _abs(path: str) -> str:
    return path if os.path.isabs(path) else os.path.abspath(path)


def _row_to_ref(row: Mapping[str, Any]) -> ImageRef:
    presets = tuple(
        WindowPreset(center=p["center"], width=p["width"], name=p.get("name", ""))
        for p in loads(row["window_presets"], [])
    )
    record = ImageRecord(
        key=row["key"],
        path=row["path"],
        kind=row["kind"],
        modality=row["modality"],
        rows=row["rows"],
        columns=row["columns"],
        frames=row["frames"],
        photometric=row["photometric"],
        samples_per_pixel=row["samples_per_pixel"],
        bits_stored=row["bits_stored"],
        transfer_syntax=row["transfer_syntax"],
        patient_id=row["patient_id"],
        patient_name=row["patient_name"],
        study_uid=row["study_uid"],
        study_date=row["study_date"],
        study_description=row["study_description"],
        series_uid=row["series_uid"],
        series_description=row["series_description"],
        sop_uid=row["sop_uid"],
        body_part=row["body_part"],
        view_position=row["view_position"],
        window_presets=presets,
    )
    classes = loads(row["current_classes"], None)
    label = ";".join(classes) if classes else None
    return ImageRef(id=row["id"], record=record, split=row["split"], label=label, group=row["group_id"])


class ImagesMixin:
    """Image methods of :class:`~core.workspace.Workspace`."""

    _pool: ConnectionPool

    def add_images(self, records: Iterable[ImageRecord], actor: str = "system") -> tuple[list[str], list[str]]:
        """Store image records in one transaction; idempotent by ``record.key``.

        Returns ``(new_ids, existing_ids)``. An existing key whose file moved
        (its stored path no longer exists) gets its path updated; an identical
        copy elsewhere does not replace a stored path that still exists. Patient, study and series rows are created from
        the records (photographs have none). One audit entry summarises the batch.
        Raises :class:`WorkspaceBusy` when another process holds the write lock too long.
        """
        new_ids: list[str] = []
        existing_ids: list[str] = []
        moved: list[str] = []
        added_at = now_iso()
        with self._pool.write() as db:
            for record in records:
                image_id = image_id_for_key(record.key)
                path = _abs(record.path)
                row = db.execute("SELECT id, path FROM images WHERE key = ?", (record.key,)).fetchone()
                if row is not None:
                    existing_ids.append(row[0])
                    # a moved file gets its new path; a second copy of a file that is still there does not
                    if row[1] != path and not os.path.exists(row[1]):
                        db.execute("UPDATE images SET path = ? WHERE id = ?", (path, row[0]))
                        moved.append(row[0])
                    continue
                if db.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone():
                    raise WorkspaceError(
                        f"cannot import {path}: its id {image_id} collides with another image's id"
                    )
                self._upsert_hierarchy(db, record)
                db.execute(
                    """INSERT INTO images (id, key, path, kind, modality, rows, columns, frames,
                        photometric, samples_per_pixel, bits_stored, transfer_syntax, patient_id,
                        study_uid, series_uid, sop_uid, body_part, view_position, window_presets,
                        split, added_at)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)""",
                    (
                        image_id, record.key, path, record.kind, record.modality or "",
                        int(record.rows), int(record.columns), int(record.frames or 1),
                        record.photometric or "", int(record.samples_per_pixel),
                        int(record.bits_stored), record.transfer_syntax or "",
                        record.patient_id, record.study_uid, record.series_uid, record.sop_uid,
                        record.body_part, record.view_position,
                        dumps([{"center": float(w.center), "width": float(w.width), "name": w.name}
                               for w in record.window_presets]),
                        added_at,
                    ),
                )
                new_ids.append(image_id)
            if new_ids or moved:
                self._append_audit(
                    db, actor, "images.import", "",
                    {"added": len(new_ids), "existing": len(existing_ids), "moved": len(moved)},
                )
        logger.info("imported %d new images, %d already present", len(new_ids), len(existing_ids))
        return new_ids, existing_ids

    @staticmethod
    def _upsert_hierarchy(db: Any, record: ImageRecord) -> None:
        # First values win; later records only fill in what was missing.
        if record.patient_id is not None:
            db.execute(
                "INSERT INTO patients (patient_id, name) VALUES (?, ?) ON CONFLICT(patient_id) "
                "DO UPDATE SET name = COALESCE(patients.name, excluded.name)",
                (record.patient_id, record.patient_name),
            )
        if record.study_uid is not None:
            db.execute(
                "INSERT INTO studies (study_uid, patient_id, date, description) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(study_uid) DO UPDATE SET "
                "patient_id = COALESCE(studies.patient_id, excluded.patient_id), "
                "date = COALESCE(studies.date, excluded.date), "
                "description = COALESCE(studies.description, excluded.description)",
                (record.study_uid, record.patient_id, record.study_date, record.study_description),
            )
        if record.series_uid is not None:
            db.execute(
                "INSERT INTO series (series_uid, study_uid, description, modality) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(series_uid) DO UPDATE SET "
                "study_uid = COALESCE(series.study_uid, excluded.study_uid), "
                "description = COALESCE(series.description, excluded.description), "
                "modality = COALESCE(series.modality, excluded.modality)",
                (record.series_uid, record.study_uid, record.series_description, record.modality),
            )

    def image(self, image_id: str) -> ImageRef:
        """The image with this id, with its current label and split. Raises :class:`NotFound`."""
        with self._pool.read() as db:
            rows = list(db.query(_IMAGE_SELECT + " WHERE i.id = ?", [image_id]))
        if not rows:
            raise NotFound(f"no image with id '{image_id}' in this workspace; run `loupe list`")
        return _row_to_ref(rows[0])

    def find_image(self, id_or_path: str | os.PathLike) -> ImageRef:
        """The image named by an id or by the path (absolute or relative) of an imported file.

        Raises :class:`NotFound` ("no imported image matches 'X'; run `loupe list`").
        """
        text = os.fspath(id_or_path)
        candidates = [text]
        if text:
            candidates += [os.path.abspath(text), str(Path(text).resolve())]
        with self._pool.read() as db:
            row = db.execute("SELECT id FROM images WHERE id = ?", (text,)).fetchone()
            for candidate in candidates:
                if row is not None:
                    break
                row = db.execute(
                    "SELECT id FROM images WHERE path = ? ORDER BY id LIMIT 1", (candidate,)
                ).fetchone()
        if row is None:
            raise NotFound(f"no imported image matches '{text}'; run `loupe list`")
        return self.image(row[0])

    def images(self, split: Optional[str] = None) -> list[ImageRef]:
        """All images ordered by patient, study, series and path (those without come last).

        ``split`` keeps only images of that split (``train``, ``val``, ``test``).
        """
        sql, params = _IMAGE_SELECT, []
        if split is not None:
            sql += " WHERE i.split = ?"
            params.append(split)
        with self._pool.read() as db:
            return [_row_to_ref(row) for row in db.query(sql + _IMAGE_ORDER, params)]

    def image_count(self) -> int:
        """How many images the workspace holds."""
        with self._pool.read() as db:
            return db["images"].count

    def set_split(self, image_id: str, split: Optional[str]) -> None:
        """Put an image in ``train``, ``val``, ``test`` or no split (``None``). Raises :class:`NotFound`."""
        self.set_splits({image_id: split})

    def set_splits(self, splits: Mapping[str, Optional[str]]) -> None:
        """Set many images' splits in one transaction (``{image_id: split}``).

        Raises :class:`ValueError` for an unknown split and :class:`NotFound`
        for an unknown image (nothing is changed then).
        """
        for split in splits.values():
            if split is not None and split not in SPLITS:
                raise ValueError(f"unknown split '{split}': use train, val, test or none")
        with self._pool.write() as db:
            for image_id, split in splits.items():
                cursor = db.execute("UPDATE images SET split = ? WHERE id = ?", (split, image_id))
                if cursor.rowcount == 0:
                    raise NotFound(f"no image with id '{image_id}' in this workspace; run `loupe list`")

    def set_image_details(self, details: Mapping[str, Mapping[str, Optional[str]]], actor: str = "import") -> int:
        """Set what a labels CSV or ``--as-modality`` says about images, in one transaction.

        ``details`` maps an image id to any of ``modality`` (only photographs' is changed: a DICOM file keeps
        its own Modality; a radiograph modality also makes the record grayscale with a full-range window),
        ``patient`` (stored as the image's patient id) and ``group`` (e.g. a lesion id). A value of None
        leaves that field as it is. Returns how many images changed; one audit entry lists the counts.
        Raises :class:`NotFound` for an unknown image (nothing is changed then).
        """
        from core.types import RADIOGRAPH_MODALITIES

        changed = {"modality": 0, "patient": 0, "group": 0}
        touched: set[str] = set()
        with self._pool.write() as db:
            for image_id, d in details.items():
                row = db.execute("SELECT kind, modality, patient_id, group_id, bits_stored FROM images WHERE id = ?",
                                 (image_id,)).fetchone()
                if row is None:
                    raise NotFound(f"no image with id '{image_id}' in this workspace; run `loupe list`")
                kind, modality, patient, group, bits = row
                new_mod = d.get("modality")
                if new_mod and kind == "photo" and new_mod != modality:
                    radiograph = new_mod in RADIOGRAPH_MODALITIES
                    # as core.imaging.photo.picture_as: 8-bit radiographs get a full-range preset
                    presets = ([{"center": 128.0, "width": 256.0, "name": "Full range"}]
                               if radiograph and int(bits) <= 8 else [])
                    sets = "modality = ?, window_presets = ?"
                    values: list = [new_mod, dumps(presets)]
                    if radiograph:
                        sets += ", photometric = 'MONOCHROME2', samples_per_pixel = 1"
                    db.execute(f"UPDATE images SET {sets} WHERE id = ?", (*values, image_id))
                    changed["modality"] += 1
                    touched.add(image_id)
                new_patient = d.get("patient")
                if new_patient and new_patient != patient:
                    db.execute("INSERT INTO patients (patient_id, name) VALUES (?, NULL) "
                               "ON CONFLICT(patient_id) DO NOTHING", (new_patient,))
                    db.execute("UPDATE images SET patient_id = ? WHERE id = ?", (new_patient, image_id))
                    changed["patient"] += 1
                    touched.add(image_id)
                new_group = d.get("group")
                if new_group and new_group != group:
                    db.execute("UPDATE images SET group_id = ? WHERE id = ?", (new_group, image_id))
                    changed["group"] += 1
                    touched.add(image_id)
            if touched:
                self._append_audit(db, actor, "images.details", "", {"images": len(touched), **changed})
        return len(touched)

    def studies(self) -> list[dict]:
        """The worklist tree: patients → studies → series → images, as plain dicts.

        Each patient is ``{"patient_id", "patient_name", "studies": [...]}``, each study
        ``{"study_uid", "date", "description", "series": [...]}``, each series
        ``{"series_uid", "description", "modality", "images": [ImageRef], "n_labelled"}``.
        Photographs without patient, study or series sit under ``None`` keys.
        Studies also carry ``n_images`` and ``n_labelled``.
        """
        patients: dict[Optional[str], dict] = {}
        for ref in self.images():
            rec = ref.record
            patient = patients.setdefault(
                rec.patient_id,
                {"patient_id": rec.patient_id, "patient_name": rec.patient_name, "studies": {}},
            )
            study = patient["studies"].setdefault(
                rec.study_uid,
                {"study_uid": rec.study_uid, "date": rec.study_date,
                 "description": rec.study_description, "series": {},
                 "n_images": 0, "n_labelled": 0},
            )
            series = study["series"].setdefault(
                rec.series_uid,
                {"series_uid": rec.series_uid, "description": rec.series_description,
                 "modality": rec.modality, "images": [], "n_labelled": 0},
            )
            series["images"].append(ref)
            study["n_images"] += 1
            if ref.label:
                series["n_labelled"] += 1
                study["n_labelled"] += 1
        result = []
        for patient in patients.values():
            studies = []
            for study in patient["studies"].values():
                study["series"] = list(study["series"].values())
                studies.append(study)
            patient["studies"] = studies
            result.append(patient)
        return result
