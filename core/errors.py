"""Errors a person can act on.

Every message says what went wrong in plain words and, where there is one,
what to do about it. Callers show ``str(error)`` to the user as it is.
"""

from __future__ import annotations


class LoupeError(Exception):
    """Base of every error Loupe raises on purpose."""


class ImageReadError(LoupeError):
    """A file could not be read as an image (not an image, truncated, ...)."""


class DicomReadError(ImageReadError):
    """A DICOM file could not be read or decoded."""


class UnsupportedTransferSyntax(DicomReadError):
    """The pixel data is compressed with a scheme no installed decoder handles."""


class WorkspaceError(LoupeError):
    """The workspace database could not be opened, migrated or written."""


class WorkspaceBusy(WorkspaceError):
    """Another process holds the workspace's write lock for too long."""


class NotFound(LoupeError):
    """An image, model version or other record does not exist."""


class LabelsFileError(LoupeError):
    """A labels CSV is malformed (missing columns, unreadable)."""


class ModelError(LoupeError):
    """A model could not be built, loaded, trained or run."""


class Cancelled(LoupeError):
    """A long operation stopped because its cancel token was set."""


class DamagedImageError(DicomReadError):
    """The pixel data is damaged (cut off, broken codestream, partial decode): never shown as if whole.

    ``key`` is the image's identity (SOP Instance UID) when the header could be
    read, so an import can tell a damaged copy of an imported image apart.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key
