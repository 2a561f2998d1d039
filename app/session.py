"""One door from the window into the core: the review session.

:class:`ReviewSession` owns the workspace, the background workers and the
training controller, and tells widgets what changed through typed signals.
Widgets receive the session; none opens a second workspace or touches SQL.

Workers:

* ``interactive`` — what the reader waits for: rendering, explanations, similar cases, prefetching;
* ``background`` — long jobs: predicting the pool, rebuilding the queue, evaluation, import, export;
* ``db`` — short workspace reads and writes (label commits, history, counters), one at a time, so no
  SQLite call ever runs on the UI thread and a commit never waits behind a model job.

The queue's truth is the workspace (a case leaves it when a confirmed label for
it is committed, by whichever process); the session keeps a snapshot of it,
re-read after every commit and polled for other processes' writes, and
:meth:`next_queued` answers from that snapshot minus the commits still in flight.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Optional

from PySide6.QtCore import QObject, QTimer, Signal

from app import jobs
from app.training_controller import TrainingController
from app.workers import Runner
from core.imaging import decode_pool

logger = logging.getLogger(__name__)
trace_logger = logging.getLogger("loupe.trace")

READER_ENV = "LOUPE_READER"
TRACE_ENV = "LOUPE_TRACE"
#: the queue refreshes itself in the background once fewer cases than this (or a fifth of its size) are waiting
QUEUE_LOW_WATER = 5
QUEUE_POLL_MS = 3000
PROGRESS_DELAY_MS = 250
DECODE_WORKERS = 1  # processes decoding compressed DICOM (one decode at a time already keeps the window free)
PREFETCH_KEEP = 2  # rendered frames held for cases about to open (a 2k × 2k radiograph holds ~12 MB)


@dataclass(frozen=True)
class Reader:
    """Who is labelling: a name (stored on every label) and an optional role."""

    name: str
    role: str = ""


def resolve_reader(option: Optional[str], remembered: str = "", env: Optional[dict] = None) -> Optional[Reader]:
    """The reader from ``--reader`` (``option``), else ``LOUPE_READER``, else the remembered name; None if unknown."""
    env = os.environ if env is None else env
    for value in (option, env.get(READER_ENV), remembered):
        if value and str(value).strip():
            return Reader(str(value).strip())
    return None


def trace(event: str, **fields) -> None:
    """A timing trace line (``loupe.trace`` logger, and the file named by ``LOUPE_TRACE`` when set)."""
    line = f"{time.time():.6f} {event} " + " ".join(f"{k}={v}" for k, v in fields.items())
    trace_logger.debug(line)
    path = os.environ.get(TRACE_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


class ReviewSession(QObject):
    """The workspace, its workers and the training controller behind one set of typed signals.

    Signals (all on the UI thread):

    * ``rows_changed(list[WorklistRow])`` — the whole worklist was re-read;
    * ``row_changed(WorklistRow)`` — one image changed (a label, an undo);
    * ``model_changed(dict | None)`` — the active model's summary (classes, thresholds, version);
    * ``queue_changed(list[QueueItem])`` — the cases still waiting, in rank order;
    * ``progress_changed(LabellingProgress)`` — the counters;
    * ``label_saved(str image_id, Label)`` — a commit returned; ``label_failed(str image_id, str message)``;
    * ``history_loaded(str image_id, list[Label])``;
    * ``training_event(TrainingEvent)`` — one typed event of the training process (:mod:`core.models.events`);
    * ``error(str)`` — something failed, in words a person reads.
    """

    rows_changed = Signal(object)
    row_changed = Signal(object)
    model_changed = Signal(object)
    queue_changed = Signal(object)
    progress_changed = Signal(object)
    label_saved = Signal(str, object)
    label_failed = Signal(str, str)
    history_loaded = Signal(str, object)
    training_event = Signal(object)
    error = Signal(str)
    _thread_error = Signal(str)

    def __init__(self, workspace, reader: Optional[Reader] = None, parent: Optional[QObject] = None,
                 job_factory=None, poll_ms: int = QUEUE_POLL_MS):
        super().__init__(parent)
        self.workspace = workspace
        self.reader = reader
        self.interactive = Runner(self, max_threads=2)
        self.background = Runner(self, max_threads=1)
        self.db = Runner(self, max_threads=1)
        self.training = TrainingController(job_factory, parent=self)
        self.training.typed_event.connect(self.training_event)
        self.rows: dict = {}
        self.model: Optional[dict] = None
        self.classes: list[str] = []
        self.severity: tuple = ()  # the findings' severity grade names (empty: no scale)
        self.queue: list = []
        self.progress = None
        self.pending: dict[str, float] = {}  # image id -> when its commit was sent
        self._prefetched: dict = {}  # path -> LoadedFrame rendered ahead of time
        self._prefetching: Optional[str] = None  # the path being prefetched now
        self.queue_strategy, self.queue_size = "default", 50
        self._seq = itertools.count()
        self._warmed = False
        self._thread_error.connect(self.error)
        # compressed DICOM decodes in a worker process (its decoders hold the GIL: in a thread they freeze the
        # window); the workers are spawned in the background once the worklist shows such images (warm_up)
        self.decode_pool = decode_pool.enable(workers=DECODE_WORKERS)
        # the counters are re-read shortly after commits (one read for a burst), off the path to the next case
        self._progress_timer = QTimer(self)
        self._progress_timer.setSingleShot(True)
        self._progress_timer.setInterval(PROGRESS_DELAY_MS)
        self._progress_timer.timeout.connect(self.reload_progress)
        self._poll = QTimer(self)
        self._poll.setInterval(poll_ms)
        self._poll.timeout.connect(self._poll_queue)
        if poll_ms > 0:
            self._poll.start()

    # --- reading the workspace ----------------------------------------------------------------

    def reload(self) -> None:
        """Re-read rows, model, queue and counters in the background; signals follow."""
        self.db.submit("state", jobs.load_state, self.workspace, on_done=self._on_state, on_error=self.error.emit)

    def _on_state(self, state) -> None:
        self.rows = {r.ref.id: r for r in state.rows}
        self.model = state.model
        self.classes = list(state.classes)
        self.severity = tuple(getattr(state, "severity", ()))
        self.queue, self.progress = list(state.queue), state.progress  # known before any widget hears of the rows
        self.model_changed.emit(state.model)
        self.rows_changed.emit(state.rows)
        self._set_queue(state.queue, state.progress)
        if not self._warmed:
            self._warmed = True
            self.warm_up()

    def _set_queue(self, queue: list, progress) -> None:
        self.queue = list(queue)
        self.progress = progress
        self.queue_changed.emit(self.queue)
        self.progress_changed.emit(progress)

    def reload_progress(self) -> None:
        """Re-read the counters in the background (``progress_changed`` follows).

        The statuses are tallied from the rows the session holds (each commit's row is read back with it, a
        reload re-reads them all), the rest (queue, labels since the last training) from the workspace.
        """
        rows = list(self.rows.values()) or None
        self.db.submit("progress", jobs.progress, self.workspace, rows, on_done=self._on_progress,
                       on_error=self.error.emit)

    def _on_progress(self, progress) -> None:
        self.progress = progress
        self.progress_changed.emit(progress)

    def reload_queue(self) -> None:
        """Re-read the queue and the counters (e.g. after another process labelled)."""
        self.db.submit("queue-state", jobs.queue_state, self.workspace,
                       on_done=lambda r: self._set_queue(*r), on_error=self.error.emit)

    def _poll_queue(self) -> None:
        if self.db.busy():
            return
        self.db.submit("queue-poll", jobs.queue_ids, self.workspace, on_done=self._on_polled)

    def _on_polled(self, ids: list[str]) -> None:
        if ids != [i.image_id for i in self.queue] and not self.pending:
            logger.info("the queue changed in the workspace (another process): re-reading it")
            self.reload()

    def refresh_row(self, image_id: str) -> None:
        """Re-read one image's worklist row."""
        self.db.submit(f"row:{image_id}", jobs.one_row, self.workspace, image_id, on_done=self._on_row)

    def _on_row(self, row) -> None:
        self.rows[row.ref.id] = row
        self.row_changed.emit(row)

    def load_history(self, image_id: str) -> None:
        """Read an image's label history in the background (``history_loaded`` follows)."""
        reader = self.reader.name if self.reader else ""
        self.db.submit("history", jobs.label_history, self.workspace, image_id, reader,
                       on_done=lambda r: self.history_loaded.emit(*r), on_error=self.error.emit)

    # --- the queue ------------------------------------------------------------------------------

    def waiting(self) -> list:
        """Queued cases still waiting: the workspace's queue minus the commits in flight."""
        return [item for item in self.queue if item.image_id not in self.pending]

    def next_queued(self, after: Optional[str] = None) -> Optional[str]:
        """The highest-ranked case still waiting (other than ``after``), or None."""
        return next((i.image_id for i in self.waiting() if i.image_id != after), None)

    def queue_item(self, image_id: str):
        """The queue item of ``image_id`` (None when it is not waiting)."""
        return next((i for i in self.queue if i.image_id == image_id), None)

    def queue_position(self, image_id: str) -> Optional[tuple[int, int]]:
        """(position, total) of ``image_id`` among the cases still waiting, e.g. (3, 30)."""
        waiting = self.waiting()
        for pos, item in enumerate(waiting, 1):
            if item.image_id == image_id:
                return pos, len(waiting)
        return None

    def refresh_queue(self, strategy: Optional[str] = None, n: Optional[int] = None) -> bool:
        """Rebuild the queue in the background (cached model outputs are reused); ``reload`` follows."""
        self.queue_strategy = strategy or self.queue_strategy
        self.queue_size = int(n or self.queue_size)
        self.background.submit("queue", jobs.refresh_queue, self.workspace, self.queue_strategy, self.queue_size,
                               on_done=lambda _items: self.reload(), on_error=self._on_queue_error)
        return True

    def _on_queue_error(self, message: str) -> None:
        self.queue_changed.emit(self.queue)
        self.error.emit(f"queue not refreshed: {message}")

    def warm_up(self) -> None:
        """When there is a queue to work (an active model and cases waiting), load the queue's model stack in
        the background (once, when the workspace is first read), so the first top-up in the middle of a
        labelling session takes a fraction of a second instead of importing it then (tens of seconds of
        interpreter time on a loaded two-core machine, which the reader would feel as lag).

        When the worklist holds compressed DICOM, the decode workers are spawned now too (in the background), so
        the first such image does not wait for a process to start nor freeze the window while it decodes."""
        pool = self.decode_pool
        if pool is not None and any(getattr(getattr(r.ref, "record", None), "transfer_syntax", "") in pool.syntaxes
                                    for r in self.rows.values()):
            pool.start()
        if self.model is None or not self.queue:
            trace("warm", model=0)
            return
        self.background.submit("warm", jobs.warm_up, self.workspace, on_done=lambda ok: trace("warm", model=int(ok)),
                               on_error=lambda message: logger.info("queue warm-up skipped: %s", message))

    def _maybe_top_up(self) -> None:
        """When few cases are left, rebuild the queue in the background (cached outputs make it quick)."""
        low = max(QUEUE_LOW_WATER, self.queue_size // 5)
        if (self.model is not None and self.queue and len(self.waiting()) < low
                and not self.background.busy("queue") and not self.background.busy("predict")):
            logger.info("the queue runs low (%d left): refreshing it in the background", len(self.waiting()))
            self.refresh_queue()

    # --- labels ---------------------------------------------------------------------------------

    def commit_label(self, image_id: str, classes: list[str], severity: Optional[int] = None, note: str = "",
                     flag_wrong: bool = False, on_saved: Optional[Callable] = None,
                     on_failed: Optional[Callable] = None) -> bool:
        """Write a confirmed label in the background under the session's reader; False without a reader.

        ``label_saved`` (or ``label_failed``) follows once the commit returned;
        until then the case counts as taken (``next_queued`` skips it).
        """
        if self.reader is None or not self.reader.name:
            return False
        self.pending[image_id] = time.perf_counter()

        def done(result) -> None:
            self.pending.pop(image_id, None)
            self.rows[image_id] = result.row
            self.queue = list(result.queue)
            self.row_changed.emit(result.row)
            self.queue_changed.emit(self.queue)
            self._progress_timer.start()
            if on_saved:
                on_saved(result.label)
            self.label_saved.emit(image_id, result.label)
            self._maybe_top_up()

        def failed(message: str) -> None:
            self.pending.pop(image_id, None)
            logger.warning("label for %s not saved: %s", image_id, message)
            if on_failed:
                on_failed(message)
            self.label_failed.emit(image_id, message)

        self.db.submit(f"label:{next(self._seq)}", jobs.commit_label, self.workspace, image_id, list(classes),
                       self.reader.name, severity, note, flag_wrong, on_done=done, on_error=failed)
        return True

    def undo_label(self, image_id: str, on_done: Optional[Callable] = None,
                   on_failed: Optional[Callable] = None) -> None:
        """Append an undo row for ``image_id`` in the background."""
        def done(result) -> None:
            self.rows[image_id] = result.row
            self.queue = list(result.queue)
            self.row_changed.emit(result.row)
            self.queue_changed.emit(self.queue)
            self._progress_timer.start()
            if on_done:
                on_done(result.label)

        name = self.reader.name if self.reader else "unknown"
        self.db.submit(f"undo:{next(self._seq)}", jobs.undo_label, self.workspace, image_id, name,
                       on_done=done, on_error=on_failed or self.error.emit)

    def retrain_due(self) -> bool:
        """Whether the counters say enough confirmed labels arrived since the last training started."""
        return bool(self.progress is not None and self.progress.retrain_due and not self.training.running)

    # --- prefetch -------------------------------------------------------------------------------

    def prefetch(self, image_id: Optional[str]) -> None:
        """Decode and render ``image_id``'s first frame in the background while the current case is being read."""
        row = self.rows.get(image_id) if image_id else None
        if row is None or row.ref.path in self._prefetched or row.ref.path == self._prefetching:
            return
        path = row.ref.path
        self._prefetching = path

        def keep(frame) -> None:
            if self._prefetching == path:
                self._prefetching = None
            self._prefetched[path] = frame
            while len(self._prefetched) > PREFETCH_KEEP:
                self._prefetched.pop(next(iter(self._prefetched)))

        def failed(message: str) -> None:
            if self._prefetching == path:
                self._prefetching = None
            logger.debug("prefetch of %s failed: %s", path, message)

        self.interactive.submit("prefetch", jobs.prefetch, path, row.ref.record, on_done=keep, on_error=failed)

    def take_prefetched(self, path: str):
        """The prefetched first frame of ``path`` (handed over once), or None."""
        if self._prefetching == path:
            self._prefetching = None  # the viewer renders it itself now; a later prefetch of it may start again
        return self._prefetched.pop(path, None)

    # --- life cycle -----------------------------------------------------------------------------

    def busy(self) -> bool:
        """True while any worker has a job."""
        return self.interactive.busy() or self.background.busy() or self.db.busy()

    def wait(self, msecs: int = 30000) -> bool:
        """Block until every worker is idle (tests and shutdown)."""
        return all([r.wait(msecs) for r in (self.db, self.interactive, self.background)])

    def shutdown(self, grace: float = 5.0) -> None:
        """Stop polling, cancel every job, wait for the workers and stop a live training run."""
        self._poll.stop()
        for runner in (self.interactive, self.background, self.db):
            runner.cancel_all()
        self.wait(30000)
        self.training.shutdown(grace)
        if self.decode_pool is not None:
            self.decode_pool = None
            decode_pool.disable()

    # --- unexpected errors ----------------------------------------------------------------------

    def install_excepthooks(self) -> None:
        """Route every unexpected error (UI thread or any Python thread) to ``error`` and the log."""
        previous = sys.excepthook

        def hook(exc_type, exc, tb) -> None:
            if issubclass(exc_type, KeyboardInterrupt):
                previous(exc_type, exc, tb)
                return
            self.report_unexpected(exc_type, exc, tb)

        def thread_hook(args) -> None:
            self.report_unexpected(args.exc_type, args.exc_value, args.exc_traceback,
                                   getattr(args.thread, "name", "thread"))

        sys.excepthook = hook
        threading.excepthook = thread_hook

    def report_unexpected(self, exc_type, exc, tb, where: str = "") -> None:
        """Log the full traceback and emit one plain line (queued to the UI thread when called elsewhere)."""
        logger.error("unexpected error%s:\n%s", f" in {where}" if where else "",
                     "".join(traceback.format_exception(exc_type, exc, tb)))
        self._thread_error.emit(f"unexpected error ({exc_type.__name__}: {exc}); details are in the log")

