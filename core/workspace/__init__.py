"""The workspace: one SQLite file with images, labels, models, queue, cache and audit log.

This package is the only place in Loupe that knows tables or SQL; everything
else calls :class:`Workspace` methods.
"""

from .connection import DEFAULT_TIMEOUT
from .images import image_id_for_key
from .workspace import Workspace

__all__ = ["DEFAULT_TIMEOUT", "Workspace", "image_id_for_key"]
