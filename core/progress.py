"""Qt-free progress reporting and cooperative cancellation.

Long core operations take ``progress`` (a callable) and ``cancel`` (a
:class:`CancelToken`) and call ``cancel.check()`` between units of work, so the
app can stop them without killing a thread.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Optional

from core.errors import Cancelled


@dataclass(frozen=True)
class Progress:
    """One progress event: ``done`` of ``total`` units, with a short message."""

    done: int
    total: int
    message: str = ""

    @property
    def fraction(self) -> float:
        """Completed fraction in [0, 1]; 0 when the total is unknown."""
        return self.done / self.total if self.total else 0.0


ProgressCallback = Callable[[Progress], None]


def no_progress(_: Progress) -> None:
    """A progress callback that ignores every event."""


class CancelToken:
    """Thread-safe flag that long operations poll between batches."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Ask the operation to stop at its next check."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        """True once :meth:`cancel` was called."""
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`~core.errors.Cancelled` if cancellation was requested."""
        if self._event.is_set():
            raise Cancelled("cancelled by the user")


def report(progress: Optional[ProgressCallback], done: int, total: int, message: str = "") -> None:
    """Send one event to ``progress`` if a callback was given."""
    if progress is not None:
        progress(Progress(done, total, message))
