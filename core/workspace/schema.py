"""The workspace schema and its forward migrations.

The schema version lives in ``PRAGMA user_version``. ``MIGRATIONS[i]`` takes a
file from version ``i`` to ``i + 1``; opening an older file runs the missing
ones in one transaction, and a file newer than this code is refused.
Migrations are append-only: never edit one that has shipped, add a new one.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import sqlite_utils

from core.errors import WorkspaceError

logger = logging.getLogger(__name__)

Migration = Callable[[sqlite_utils.Database], None]

_V1 = [
    """CREATE TABLE patients (
        patient_id TEXT PRIMARY KEY,
        name TEXT
    )""",
    """CREATE TABLE studies (
        study_uid TEXT PRIMARY KEY,
        patient_id TEXT REFERENCES patients(patient_id),
        date TEXT,
        description TEXT
    )""",
    """CREATE TABLE series (
        series_uid TEXT PRIMARY KEY,
        study_uid TEXT REFERENCES studies(study_uid),
        description TEXT,
        modality TEXT
    )""",
    """CREATE TABLE images (
        id TEXT PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        path TEXT NOT NULL,
        kind TEXT NOT NULL,
        modality TEXT NOT NULL DEFAULT '',
        rows INTEGER NOT NULL,
        columns INTEGER NOT NULL,
        frames INTEGER NOT NULL DEFAULT 1,
        photometric TEXT NOT NULL DEFAULT '',
        samples_per_pixel INTEGER NOT NULL DEFAULT 1,
        bits_stored INTEGER NOT NULL DEFAULT 8,
        transfer_syntax TEXT NOT NULL DEFAULT '',
        patient_id TEXT REFERENCES patients(patient_id),
        study_uid TEXT REFERENCES studies(study_uid),
        series_uid TEXT REFERENCES series(series_uid),
        sop_uid TEXT,
        body_part TEXT,
        view_position TEXT,
        window_presets TEXT NOT NULL DEFAULT '[]',
        split TEXT CHECK (split IN ('train', 'val', 'test')),
        added_at TEXT NOT NULL
    )""",
    "CREATE INDEX images_path ON images(path)",
    "CREATE INDEX images_order ON images(patient_id, study_uid, series_uid, path)",
    """CREATE TABLE classes (
        name TEXT PRIMARY KEY,
        position INTEGER NOT NULL UNIQUE
    )""",
    """CREATE TABLE labels (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        image_id TEXT NOT NULL REFERENCES images(id),
        classes TEXT NOT NULL,
        annotator TEXT NOT NULL,
        created_at TEXT NOT NULL,
        source TEXT NOT NULL CHECK (source IN ('human', 'import', 'model', 'undo')),
        severity INTEGER,
        note TEXT NOT NULL DEFAULT '',
        flag_wrong INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX labels_image ON labels(image_id, id)",
    # Labels are a history: a relabel appends, nothing is ever changed or removed.
    """CREATE TRIGGER labels_no_update BEFORE UPDATE ON labels
       BEGIN SELECT RAISE(ABORT, 'labels are append-only'); END""",
    """CREATE TRIGGER labels_no_delete BEFORE DELETE ON labels
       BEGIN SELECT RAISE(ABORT, 'labels are append-only'); END""",
    """CREATE TABLE models (
        version TEXT PRIMARY KEY,
        arch TEXT NOT NULL,
        classes TEXT NOT NULL,
        path TEXT NOT NULL,
        parent TEXT REFERENCES models(version),
        weights TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL CHECK (status IN ('candidate', 'active', 'rejected', 'retired')),
        created_at TEXT NOT NULL,
        file_hash TEXT NOT NULL DEFAULT '',
        params TEXT NOT NULL DEFAULT '{}',
        metrics TEXT NOT NULL DEFAULT '{}',
        reason TEXT NOT NULL DEFAULT ''
    )""",
    # At most one active model, enforced by the database itself.
    "CREATE UNIQUE INDEX models_one_active ON models(status) WHERE status = 'active'",
    """CREATE TABLE predictions (
        image_id TEXT NOT NULL REFERENCES images(id),
        version TEXT NOT NULL,
        probs TEXT NOT NULL,
        predicted TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        PRIMARY KEY (image_id, version)
    )""",
    "CREATE INDEX predictions_version ON predictions(version)",
    """CREATE TABLE queue (
        image_id TEXT PRIMARY KEY REFERENCES images(id),
        rank INTEGER NOT NULL,
        score REAL NOT NULL,
        strategy TEXT NOT NULL,
        why TEXT NOT NULL DEFAULT '{}',
        version TEXT
    )""",
    "CREATE INDEX queue_rank ON queue(rank)",
    """CREATE TABLE explanations (
        key TEXT PRIMARY KEY,
        image_id TEXT NOT NULL REFERENCES images(id),
        version TEXT NOT NULL,
        method TEXT NOT NULL,
        target TEXT NOT NULL,
        params TEXT NOT NULL DEFAULT '{}',
        data BLOB NOT NULL,
        meta TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX explanations_version ON explanations(version)",
    """CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        subject TEXT NOT NULL DEFAULT '',
        detail TEXT NOT NULL DEFAULT '{}',
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    )""",
    """CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    """CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
]


def _v1_initial(db: sqlite_utils.Database) -> None:
    """Version 1: every table of the first release."""
    for statement in _V1:
        db.execute(statement)


def _v2_readers(db: sqlite_utils.Database) -> None:
    """Readers with roles, the role on every label, and adjudication decisions (double reading).

    ``readers`` names the team; ``labels.role`` keeps the role the reader had when
    writing (empty for unknown names and system actors such as ``import``);
    ``adjudications`` marks the label rows that settle a disputed double read.
    """
    db.execute("""CREATE TABLE readers (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL CHECK (role IN ('annotator', 'reader', 'adjudicator')),
        created_at TEXT NOT NULL
    )""")
    db.execute("ALTER TABLE labels ADD COLUMN role TEXT NOT NULL DEFAULT ''")
    db.execute("""CREATE TABLE adjudications (
        label_id INTEGER PRIMARY KEY REFERENCES labels(id),
        image_id TEXT NOT NULL REFERENCES images(id),
        read_ids TEXT NOT NULL DEFAULT '[]',
        created_at TEXT NOT NULL
    )""")
    db.execute("CREATE INDEX adjudications_image ON adjudications(image_id)")
    db.execute("""CREATE TRIGGER adjudications_no_update BEFORE UPDATE ON adjudications
       BEGIN SELECT RAISE(ABORT, 'adjudications are append-only'); END""")
    db.execute("""CREATE TRIGGER adjudications_no_delete BEFORE DELETE ON adjudications
       BEGIN SELECT RAISE(ABORT, 'adjudications are append-only'); END""")


def _v3_image_groups(db: sqlite_utils.Database) -> None:
    """Version 3: ``images.group_id``, the group (e.g. a lesion id) a split keeps on one side."""
    db.execute("ALTER TABLE images ADD COLUMN group_id TEXT")


def _v4_severity_and_audit_picks(db: sqlite_utils.Database) -> None:
    """Version 4: a prediction's severity grade and its probability; the audit slice's picks per model version."""
    db.execute("ALTER TABLE predictions ADD COLUMN severity INTEGER")
    db.execute("ALTER TABLE predictions ADD COLUMN severity_probability REAL")
    db.execute("""CREATE TABLE audit_picks (
        image_id TEXT NOT NULL REFERENCES images(id),
        version TEXT NOT NULL,
        rare_class TEXT NOT NULL,
        p_rare REAL NOT NULL,
        picked_at TEXT NOT NULL,
        PRIMARY KEY (image_id, version)
    )""")
    db.execute("CREATE INDEX audit_picks_version ON audit_picks(version)")


def _v5_integrity(db: sqlite_utils.Database) -> None:
    """Version 5: damaged images and site thresholds in their own table.

    ``images.damaged`` holds the plain reason an image was found damaged when
    displayed (NULL: whole). ``site_thresholds`` holds one row per (model
    version, class), so two processes saving thresholds at once each change
    only their own row; the former ``site_thresholds`` JSON setting is moved
    into it and removed.
    """
    import json
    from datetime import datetime, timezone

    db.execute("ALTER TABLE images ADD COLUMN damaged TEXT")
    db.execute("""CREATE TABLE IF NOT EXISTS site_thresholds (
        version TEXT NOT NULL,
        class_name TEXT NOT NULL,
        value REAL NOT NULL CHECK (value >= 0 AND value <= 1),
        updated_at TEXT NOT NULL,
        PRIMARY KEY (version, class_name)
    )""")
    row = db.execute("SELECT value FROM settings WHERE key = 'site_thresholds'").fetchone()
    if row is not None:
        try:
            saved = json.loads(row[0]) or {}
        except ValueError:
            saved = {}
        for version, classes in (saved.items() if isinstance(saved, dict) else []):
            for name, value in ((classes or {}).items() if isinstance(classes, dict) else []):
                if isinstance(value, (int, float)) and 0.0 <= float(value) <= 1.0:
                    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
                    db.execute("INSERT INTO site_thresholds (version, class_name, value, updated_at) "
                               "VALUES (?, ?, ?, ?) ON CONFLICT (version, class_name) DO UPDATE SET "
                               "value = excluded.value, updated_at = excluded.updated_at",
                               (str(version), str(name), float(value), now))
        db.execute("DELETE FROM settings WHERE key = 'site_thresholds'")


#: Forward migrations; ``len(MIGRATIONS)`` is the schema version this code writes.
MIGRATIONS: list[Migration] = [_v1_initial, _v2_readers, _v3_image_groups, _v4_severity_and_audit_picks,
                               _v5_integrity]


def user_version(db: sqlite_utils.Database) -> int:
    """The schema version stored in the file (0 for a new, empty file)."""
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite_utils.Database, path: object, migrations: Sequence[Migration]) -> int:
    """Bring the file up to ``len(migrations)`` inside the caller's write transaction.

    Returns the version the file is at afterwards. Raises :class:`WorkspaceError`
    when the file was written by a newer Loupe than this one.
    """
    target = len(migrations)
    current = user_version(db)
    if current > target:
        raise WorkspaceError(
            f"the workspace {path} was created by a newer version of Loupe "
            f"(schema {current}; this version understands up to {target}); "
            "update Loupe to open it"
        )
    for number in range(current, target):
        logger.info("migrating workspace %s from schema %d to %d", path, number, number + 1)
        migrations[number](db)
        # user_version is in the file header, so it commits or rolls back with the migration.
        db.execute(f"PRAGMA user_version = {number + 1}")
    return target
