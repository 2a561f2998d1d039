"""Background work for the UI: a QThreadPool runner with one slot per job kind.

The UI thread only touches widgets. Everything that decodes, predicts,
explains or imports runs here. A job is a plain function (or a generator that
yields between batches, so a newer request can supersede it cooperatively);
its result or error comes back as a Qt signal on the UI thread.
"""

from __future__ import annotations

import inspect
import logging
import traceback
from typing import Any, Callable, Optional

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from core.progress import CancelToken

logger = logging.getLogger(__name__)


class JobSignals(QObject):
    """Signals of one job; emitted from the worker thread, delivered on the UI thread."""

    finished = Signal(object)  # the result
    failed = Signal(str)  # a message a person can read
    progress = Signal(object)  # whatever the job yields


class Job(QRunnable):
    """Runs ``fn(*args, cancel=token, progress=callback, **kwargs)`` in the pool.

    ``cancel`` and ``progress`` are passed only when ``fn`` takes them; the
    progress callback re-emits its argument as the ``progress`` signal. If
    ``fn`` is a generator function, each yielded value is sent as
    ``progress`` and the cancel token is checked between yields; the value it
    returns is the result.
    """

    def __init__(self, fn: Callable, *args: Any, **kwargs: Any):
        super().__init__()
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.cancel = CancelToken()
        self.signals = JobSignals()
        self.setAutoDelete(True)

    def run(self) -> None:
        from core.errors import Cancelled, LoupeError

        try:
            params = inspect.signature(self.fn).parameters
            if "cancel" in params:
                self.kwargs["cancel"] = self.cancel
            if "progress" in params:
                self.kwargs["progress"] = self.signals.progress.emit
            result = self.fn(*self.args, **self.kwargs)
            if inspect.isgenerator(result):
                result = self._drain(result)
            if not self.cancel.cancelled:
                self.signals.finished.emit(result)
        except Cancelled:
            logger.debug("job %s cancelled", getattr(self.fn, "__name__", self.fn))
        except LoupeError as exc:
            if not self.cancel.cancelled:
                self.signals.failed.emit(str(exc))
        except Exception as exc:  # never let a worker crash the app; log the details
            logger.error("background job failed:\n%s", traceback.format_exc())
            if not self.cancel.cancelled:
                self.signals.failed.emit(f"{type(exc).__name__}: {exc}")

    def _drain(self, gen):
        try:
            while True:
                self.cancel.check()
                self.signals.progress.emit(next(gen))
        except StopIteration as stop:
            return stop.value


class Runner(QObject):
    """Starts jobs in a thread pool; at most one pending job per ``kind``.

    Submitting a job of a kind that is still running cancels the older one
    (its result is dropped), so a newer explanation or image request always
    supersedes a pending one.
    """

    busyChanged = Signal(int)  # number of running jobs

    def __init__(self, parent: Optional[QObject] = None, max_threads: int = 2):
        super().__init__(parent)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(max_threads)
        self._slots: dict[str, Job] = {}

    def submit(self, kind: str, fn: Callable, *args: Any, on_done: Optional[Callable[[Any], None]] = None,
               on_error: Optional[Callable[[str], None]] = None, on_progress: Optional[Callable[[Any], None]] = None,
               **kwargs: Any) -> Job:
        """Run ``fn`` in the background as the only live job of ``kind``; callbacks run on the UI thread."""
        old = self._slots.get(kind)
        if old is not None:
            old.cancel.cancel()
        job = Job(fn, *args, **kwargs)
        self._slots[kind] = job
        job.signals.finished.connect(lambda result, j=job: self._done(kind, j, on_done, result))
        job.signals.failed.connect(lambda message, j=job: self._done(kind, j, on_error, message))
        if on_progress is not None:
            job.signals.progress.connect(on_progress)
        self.pool.start(job)
        self.busyChanged.emit(len(self._slots))
        return job

    def _done(self, kind: str, job: Job, callback, value) -> None:
        if self._slots.get(kind) is job:
            del self._slots[kind]
            try:
                self.busyChanged.emit(len(self._slots))
            except RuntimeError:  # the runner's owner (a closed window) is gone; the job's result has no reader
                logger.debug("a %s job ended after its runner was deleted", kind)
                return
        if callback is not None and not job.cancel.cancelled:
            try:
                callback(value)
            except RuntimeError as exc:
                # the widget that asked was closed while the job ran: its result has nowhere to go
                if "already deleted" not in str(exc):
                    raise
                logger.debug("dropped the result of a %s job: its receiver is gone", kind)

    def cancel_all(self) -> None:
        """Ask every running job to stop (used when the window closes)."""
        for job in self._slots.values():
            job.cancel.cancel()

    def busy(self, kind: Optional[str] = None) -> bool:
        """True while a job (of ``kind``) is pending."""
        return kind in self._slots if kind else bool(self._slots)

    def wait(self, msecs: int = 30000) -> bool:
        """Block until the pool is idle (tests and shutdown)."""
        return self.pool.waitForDone(msecs)
