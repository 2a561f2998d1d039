"""What the Import and Export dialogs share: a job run off the UI thread with a progress bar, a state line and
cancel, and a primary button that is disabled while the job runs."""

from __future__ import annotations

import logging
from typing import Callable, Optional

from PySide6.QtWidgets import QDialog, QLabel, QProgressBar, QPushButton, QWidget

from app.workstation.access import runner_of, workspace_of

logger = logging.getLogger(__name__)


class JobDialog(QDialog):
    """A dialog whose main action runs as one background job of the window's runner.

    Subclasses call :meth:`_run_job` from their start slot, set ``self.go_button`` (disabled while the job
    runs) and implement ``_on_done(result)``.
    """

    #: the verb in the state line ("import", "export")
    verb = "job"

    def __init__(self, window, parent: Optional[QWidget] = None):
        super().__init__(parent or window)
        self.window = window
        self.workspace = workspace_of(window)
        self.runner = runner_of(window)
        self.job = None
        self.report = None
        self.go_button: Optional[QPushButton] = None
        self.progress = QProgressBar(minimum=0, maximum=0)
        self.progress.hide()
        self.state = QLabel("", wordWrap=True)

    def actor(self) -> str:
        """Who the audit names: the window's annotator, else ``app``."""
        return getattr(getattr(self.window, "settings", None), "annotator", "") or "app"

    def _run_job(self, name: str, fn: Callable, *args) -> None:
        """Submit ``fn(*args)`` in the background with progress, cancel and the dialog's done/error slots."""
        if self.go_button is not None:
            self.go_button.setEnabled(False)
        self.progress.setRange(0, 0)
        self.progress.show()
        self.state.setText(f"{self.verb}ing…")
        self.job = self.runner.submit(name, fn, *args, on_done=self._job_done, on_error=self._on_error,
                                      on_progress=self._on_progress)

    def _on_progress(self, progress) -> None:
        total = getattr(progress, "total", 0)
        if total:
            self.progress.setRange(0, total)
            self.progress.setValue(getattr(progress, "done", 0))
        message = getattr(progress, "message", "")
        if message:
            self.state.setText(message)

    def _idle(self) -> None:
        self.job = None
        self.progress.hide()
        if self.go_button is not None:
            self.go_button.setEnabled(True)

    def cancel(self) -> None:
        """Stop a running job (between files; nothing half-done is kept), or close the dialog."""
        if self.job is not None and not self.job.cancel.cancelled:
            self.job.cancel.cancel()
            self._idle()
            self.state.setText(f"{self.verb} cancelled")
            return
        self.reject()

    def _on_error(self, message: str) -> None:
        self._idle()
        self.state.setText(f"not {self.verb}ed: {message}")

    def _job_done(self, result) -> None:
        self._idle()
        self.report = result
        self._on_done(result)

    def _on_done(self, result) -> None:  # pragma: no cover - every subclass implements it
        raise NotImplementedError
