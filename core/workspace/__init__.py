"""The workspace: one SQLite file with images, labels, models, queue, cache and audit log.

This package is the only place in Loupe that knows tables or SQL; everything
else calls :class:`Workspace` methods.
"""

from .connection import DEFAULT_TIMEOUT
from .images import image_id_for_key
from .workspace import CACHE_ENV, Workspace, set_cache_root

__all__ = ["CACHE_ENV", "DEFAULT_TIMEOUT", "Workspace", "image_id_for_key", "set_cache_root"]
