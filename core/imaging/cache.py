"""A thread-safe LRU cache of decoded frames, bounded by total bytes.

Keys are ``(path, mtime_ns, size, frame)`` so an edited or replaced file is
never served stale. Cached arrays are made read-only: callers that want to
change pixels must copy.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from typing import Any, Callable, Hashable, Optional, Union

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 512 * 1024 * 1024

FrameKey = tuple[str, int, int, int]


def frame_key(path: Union[str, "os.PathLike[str]"], frame: int = 0) -> FrameKey:
    """The cache key of one frame of a file: (absolute path, mtime_ns, size, frame).

    Raises OSError (e.g. FileNotFoundError) when the file cannot be stat'ed.
    """
    path = os.path.abspath(os.fspath(path))
    st = os.stat(path)
    return (path, st.st_mtime_ns, st.st_size, int(frame))


def _nbytes(value: Any) -> int:
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value) + 64
    return 64


def _freeze(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        value.setflags(write=False)
    elif isinstance(value, (tuple, list)):
        for v in value:
            _freeze(v)
    return value


class FrameCache:
    """LRU mapping from frame keys to decoded values, holding at most ``max_bytes``.

    A value larger than the whole budget is returned but not kept. All methods
    are safe to call from several threads; the loader passed to
    :meth:`get_or_load` runs outside the lock, so two threads may decode the
    same frame at once (the second result simply replaces the first).
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Optional[Any]:
        """The cached value for ``key`` (marking it most recently used), or None."""
        with self._lock:
            entry = self._items.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return entry[0]

    def put(self, key: Hashable, value: Any) -> Any:
        """Store ``value`` (arrays made read-only), evicting least recently used entries.

        Returns the value.
        """
        _freeze(value)
        size = _nbytes(value)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if size > self.max_bytes:
                return value
            self._items[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes and self._items:
                _, (_, evicted) = self._items.popitem(last=False)
                self._bytes -= evicted
        return value

    def get_or_load(self, key: Hashable, load: Callable[[], Any]) -> Any:
        """The cached value for ``key``, else ``load()``'s result (then cached).

        Exceptions from ``load`` propagate and nothing is cached.
        """
        value = self.get(key)
        if value is not None:
            return value
        return self.put(key, load())

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._items.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        """Bytes currently held."""
        with self._lock:
            return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items
