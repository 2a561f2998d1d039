"""Persisted user settings (annotator name, last folder, window layout) with a schema version."""

from __future__ import annotations

import logging
from typing import Any, Optional

from PySide6.QtCore import QSettings

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1


class Settings:
    """A thin, versioned wrapper over QSettings ("Loupe", "Loupe")."""

    def __init__(self, organisation: str = "Loupe", application: str = "Loupe", path: Optional[str] = None):
        # ``path``: an INI file instead of the platform store (tests, portable installs)
        self._qs = QSettings(path, QSettings.IniFormat) if path else QSettings(organisation, application)
        self._migrate()

    def _migrate(self) -> None:
        version = int(self._qs.value("schema_version", 0) or 0)
        if version < 1:
            # v0 → v1: nothing to rename yet; record the schema so later versions can migrate.
            self._qs.setValue("schema_version", SCHEMA_VERSION)

    def get(self, key: str, default: Any = None) -> Any:
        """The stored value, or ``default``."""
        value = self._qs.value(key, default)
        return default if value is None else value

    def set(self, key: str, value: Any) -> None:
        """Store a value (written to disk by Qt)."""
        self._qs.setValue(key, value)
        self._qs.sync()

    @property
    def annotator(self) -> str:
        """The name recorded on every label; empty until the person sets it."""
        return str(self.get("annotator", "") or "")

    @annotator.setter
    def annotator(self, name: str) -> None:
        self.set("annotator", name.strip())
