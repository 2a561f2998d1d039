"""The app's handle on a training run: one job at a time, its events as Qt signals.

Training runs in its own process (:class:`core.models.jobs.TrainingJob`). The
controller starts it, follows its JSON events in a background Python thread
and re-emits each one on the UI thread, so widgets can update from plain slots.
A second start is refused while a run is live; ``cancel`` asks the process to
stop between batches (and kills it after a grace period).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Callable, Optional

from PySide6.QtCore import QObject, Signal, Slot

logger = logging.getLogger(__name__)

#: States a finished run can end in (``finished``'s second argument).
STATES = ("done", "failed", "cancelled")

JobFactory = Callable[[str, Any], Any]


def default_job_factory(workspace_path: str, config, log_path: Optional[str] = None, nproc: int = 1) -> Any:
    """Start a real training process (see :class:`core.models.jobs.TrainingJob`); its stderr goes to ``log_path``.

    ``nproc`` > 1 starts that many data-parallel ranks (one per GPU) through torch's launcher."""
    from core.models.jobs import TrainingJob

    return TrainingJob(workspace_path, config, log_path=log_path, nproc=nproc)


def training_log_path(workspace_path: str | Path) -> Path:
    """Where the training child's stderr goes: ``<workspace>.training.log`` beside the workspace file."""
    path = Path(workspace_path)
    return path.with_name(path.name + ".training.log")


def log_tail(path: Optional[Path], lines: int = 12, max_chars: int = 2000) -> str:
    """The last ``lines`` lines of a log file ("" when there is none)."""
    if path is None or not Path(path).is_file():
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])[-max_chars:]


class TrainingController(QObject):
    """Owns at most one training job and relays its events to the UI thread.

    Signals (all delivered on the thread that owns the controller, the UI thread):

    * ``started(dict config)`` — a run began (the TrainConfig fields);
    * ``event(dict)`` — one event of the training process, as the JSON object it wrote;
    * ``typed_event(TrainingEvent)`` — the same event as a typed dataclass (:mod:`core.models.events`);
    * ``finished(object result, str state)`` — the run ended: ``result`` is the ``done``
      event (version, promoted, reason, metrics, ...) or ``None``; ``state`` is one of
      ``done``, ``failed``, ``cancelled``; :attr:`message` says why in words;
    * ``refused(str)`` — a start was refused (a run is live, or the process could not start).

    ``job_factory(workspace_path, config)`` returns an object with ``events()``,
    ``cancel(grace)`` and ``returncode``; tests inject scripted jobs through it.
    """

    started = Signal(object)
    event = Signal(object)
    typed_event = Signal(object)
    finished = Signal(object, str)
    refused = Signal(str)

    _relay = Signal(object)  # from the reader thread
    _ended = Signal(object, str, str)  # result, state, message — from the reader thread

    def __init__(self, job_factory: Optional[JobFactory] = None, parent: Optional[QObject] = None,
                 log_path: Optional[str | Path] = None):
        super().__init__(parent)
        self._factory = job_factory or default_job_factory
        #: the training child's stderr (real processes only); its tail is added to a failure's message
        self.log_path: Optional[Path] = Path(log_path) if log_path else None
        self.log_tail = ""
        self._job: Any = None
        self._thread: Optional[threading.Thread] = None
        self._running = False
        self._cancel_requested = False
        self.message = ""
        self.last_result: Optional[dict] = None
        self.state = "idle"
        self._relay.connect(self._on_relay)
        self._ended.connect(self._on_ended)

    # --- public API ------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True from a successful ``start`` until ``finished`` has been emitted."""
        return self._running

    @property
    def job(self) -> Any:
        """The current (or last) job object, or ``None``."""
        return self._job

    def start(self, workspace_path: str | Path, config, nproc: int = 1) -> bool:
        """Start training ``workspace_path`` with ``config`` (a TrainConfig); False when refused.

        ``nproc`` > 1: that many data-parallel ranks (several GPUs), cancelled together.

        Refused while a run is live, or when the process cannot be started
        (the reason is emitted as ``refused`` and kept in :attr:`message`).
        """
        if self._running:
            self.message = "a training run is already in progress; wait for it or cancel it first"
            logger.info("training start refused: %s", self.message)
            self.refused.emit(self.message)
            return False
        if self.log_path is None and self._factory is default_job_factory:
            self.log_path = training_log_path(workspace_path)
        self._log_start = self._log_size()
        self.log_tail = ""
        try:
            extra = {"nproc": int(nproc)} if nproc > 1 else {}
            if self._factory is default_job_factory:
                job = self._factory(str(workspace_path), config, log_path=str(self.log_path), **extra)
            else:
                job = self._factory(str(workspace_path), config, **extra)
        except Exception as exc:  # noqa: BLE001 - shown to the person, details in the log
            logger.exception("could not start the training process")
            self.message = f"could not start the training process: {exc}"
            self.refused.emit(self.message)
            return False
        self._job = job
        self._running = True
        self._cancel_requested = False
        self.message = "training started"
        self.state = "running"
        self.last_result = None
        self._thread = threading.Thread(target=self._follow, args=(job,), name="training-events", daemon=True)
        self._thread.start()
        try:
            from dataclasses import asdict

            self.started.emit(asdict(config))
        except TypeError:
            self.started.emit(dict(vars(config)) if hasattr(config, "__dict__") else {})
        logger.info("training started")
        return True

    def cancel(self, grace: float = 30.0) -> bool:
        """Ask the live run to stop (killed after ``grace`` seconds); False when nothing runs."""
        if not self._running or self._job is None:
            return False
        self._cancel_requested = True
        self.message = "cancelling…"
        logger.info("training cancel requested")
        self._job.cancel(grace)
        return True

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until the reader thread has ended (tests, shutdown); True when it has."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def shutdown(self, grace: float = 5.0) -> None:
        """Cancel a live run and wait for its process to go (used when the window closes)."""
        if self._running:
            self.cancel(grace)
        self.wait(grace + 5.0)

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size if self.log_path is not None else 0
        except OSError:
            return 0

    def _this_run_tail(self) -> str:
        """The tail of what this run wrote to the log (earlier runs' lines left out)."""
        if self.log_path is None or self._log_size() <= getattr(self, "_log_start", 0):
            return ""
        return log_tail(self.log_path)

    # --- the reader thread -----------------------------------------------------------------

    def _follow(self, job) -> None:
        """Read events until the job ends; runs in the reader thread, touches no widget."""
        from core.models.events import Cancelled, Done, Error, from_json

        result, error, cancelled_msg = None, None, None
        try:
            for ev in job.events():
                if not isinstance(ev, dict):
                    continue
                typed = from_json(ev)
                if isinstance(typed, Done):
                    result = ev
                elif isinstance(typed, Error):
                    error = typed.message
                elif isinstance(typed, Cancelled):
                    cancelled_msg = typed.message
                self._relay.emit((ev, typed))
        except Exception as exc:  # noqa: BLE001 - a broken pipe or a bad event ends the run as failed
            logger.exception("reading training events failed")
            error = error or f"lost contact with the training process: {exc}"
        code = getattr(job, "returncode", None)
        state, message = self._outcome(result, error, cancelled_msg, code)
        if state == "failed":
            self.log_tail = self._this_run_tail()
            if self.log_tail:
                logger.warning("training process log (%s), last lines:\n%s", self.log_path, self.log_tail)
                message += f"\n— last lines of {self.log_path.name}:\n{self.log_tail}"
        self._ended.emit(result, state, message)

    def _outcome(self, result, error, cancelled_msg, code) -> tuple[str, str]:
        if result is not None and code in (0, None):
            return "done", str(result.get("reason", "finished"))
        if cancelled_msg is not None or code == 3:
            return "cancelled", cancelled_msg or "training cancelled; nothing was saved"
        if error is not None:
            return "failed", error
        if self._cancel_requested:
            return "cancelled", "training stopped; nothing was saved"
        return "failed", f"the training process ended without a result (exit code {code})"

    # --- back on the UI thread -------------------------------------------------------------

    @Slot(object)
    def _on_relay(self, pair) -> None:
        ev, typed = pair
        self.event.emit(ev)
        self.typed_event.emit(typed)

    @Slot(object, str, str)
    def _on_ended(self, result, state: str, message: str) -> None:
        self._running = False
        self.state = state
        self.message = message
        self.last_result = result
        logger.info("training %s: %s", state, message)
        self.finished.emit(result, state)
