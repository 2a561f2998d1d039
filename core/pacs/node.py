"""The description of a DICOM node and of one study found on it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

from core.errors import LoupeError

logger = logging.getLogger(__name__)


class PacsError(LoupeError):
    """A DICOM node could not be reached, refused the request, or answered with a failure."""


@dataclass(frozen=True)
class PacsNode:
    """Where the studies are: ``host``/``port``/``called_aet`` for DIMSE, or ``dicomweb`` (a base URL).

    ``aet`` is this workstation's own AE title (the calling AE title). ``move_port`` > 0 retrieves with C-MOVE
    instead of C-GET: this workstation listens on that port as a storage SCP named ``aet``, and the node must
    know ``aet`` as a move destination with this host and port (many archives offer only C-MOVE).
    """

    host: str = ""
    port: int = 104
    aet: str = "LOUPE"
    called_aet: str = "ANY-SCP"
    dicomweb: str = ""
    timeout: float = 30.0
    move_port: int = 0

    @property
    def is_web(self) -> bool:
        return bool(self.dicomweb)

    def validate(self) -> None:
        """Raise :class:`PacsError` with a plain message when the node cannot be used as given."""
        if self.is_web:
            if not self.dicomweb.startswith(("http://", "https://")):
                raise PacsError(f"the DICOMweb address must start with http:// or https://, got '{self.dicomweb}'")
            return
        if not self.host:
            raise PacsError("give the PACS host (--host) or a DICOMweb address (--dicomweb)")
        if not 0 < int(self.port) < 65536:
            raise PacsError(f"the port must be between 1 and 65535, got {self.port}")
        if not 0 <= int(self.move_port) < 65536:
            raise PacsError(f"the C-MOVE storage port must be between 1 and 65535, got {self.move_port}")
        for name, title in (("--aet", self.aet), ("--called-aet", self.called_aet)):
            if not title or len(title) > 16 or not title.isascii() or "\\" in title:
                raise PacsError(f"{name} must be 1 to 16 plain ASCII characters, got '{title}'")

    def describe(self) -> str:
        return self.dicomweb if self.is_web else f"{self.called_aet}@{self.host}:{self.port}"

    def to_json(self) -> dict:
        return {"host": self.host, "port": self.port, "aet": self.aet, "called_aet": self.called_aet,
                "dicomweb": self.dicomweb, "move_port": self.move_port}


@dataclass(frozen=True)
class StudyMatch:
    """One study a query found (the ``loupe pacs query`` row)."""

    study_uid: str
    patient_id: str = ""
    study_date: str = ""
    modalities: tuple[str, ...] = ()
    n_instances: int = 0
    patient_name: str = ""
    description: str = ""
    series: tuple[str, ...] = field(default=(), compare=False)

    def to_json(self) -> dict:
        return {"study_uid": self.study_uid, "patient_id": self.patient_id, "study_date": self.study_date,
                "modalities": list(self.modalities), "n_instances": self.n_instances,
                "patient_name": self.patient_name, "description": self.description}


def check_filters(patient_id: Optional[str], study_uid: Optional[str]) -> None:
    """A query needs a patient id or a study UID: an open query could list a whole hospital."""
    if not (patient_id or study_uid):
        raise PacsError("give --patient-id or --study-uid: an open query would list the whole archive")
