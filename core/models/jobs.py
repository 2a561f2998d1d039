"""Launching and following a training process from the app or the CLI."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Iterator, Optional

from core.models.train_process import EXIT_CANCELLED

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]


class TrainingJob:
    """One training run in its own process.

    ``events()`` yields the process's JSON events as they come; ``cancel()``
    asks it to stop between batches (and kills it if it does not within
    ``grace`` seconds); ``returncode`` is set once it has ended. The process
    runs at lower CPU priority (``nice``) so the reader's UI stays responsive.
    """

    def __init__(self, workspace_path: str | Path, config, log_path: Optional[str | Path] = None,
                 python: str = sys.executable, nice: int = 10, nproc: int = 1):
        # the child runs in the project folder: a relative workspace path would name another file there
        self.workspace_path = str(workspace_path) if "://" in str(workspace_path) else str(Path(workspace_path).absolute())
        self.config = config
        self.nproc = int(nproc)
        self.last_event: Optional[dict] = None
        # N > 1 data-parallel ranks: a launcher process starts them (torch's elastic launch API) and
        # relays cancel to every one of them
        module = "core.models.train_launch" if self.nproc > 1 else "core.models.train_process"
        cmd = [python, "-m", module, "--workspace", self.workspace_path,
               "--config", json.dumps(asdict(config)), "--nice", str(nice)]
        if self.nproc > 1:
            cmd += ["--nproc", str(self.nproc)]
        stderr = open(log_path, "ab") if log_path else subprocess.DEVNULL
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                      cwd=str(ROOT), text=True, bufsize=1)
        if log_path:
            stderr.close()
        self._lock = threading.Lock()

    @property
    def pid(self) -> int:
        """Process id of the training process."""
        return self._proc.pid

    @property
    def returncode(self) -> Optional[int]:
        """Exit code once finished (0 done, 1 failed, 3 cancelled), else None."""
        return self._proc.poll()

    def events(self) -> Iterator[dict]:
        """Events until the process ends; a line that is not JSON is logged and skipped."""
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                logger.info("training: %s", line.rstrip())
                continue
            self.last_event = event
            yield event
        self._proc.wait()

    def cancel(self, grace: float = 30.0) -> None:
        """Ask for a cooperative stop; kill the process if it has not ended after ``grace`` seconds."""
        with self._lock:
            if self._proc.poll() is not None:
                return
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.write("cancel\n")
                self._proc.stdin.flush()
            except (BrokenPipeError, OSError):
                pass

        def reaper():
            try:
                self._proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                logger.warning("training process %d did not stop in %.0f s; killing it", self.pid, grace)
                self._proc.kill()

        threading.Thread(target=reaper, daemon=True).start()

    def wait(self, timeout: Optional[float] = None) -> int:
        """Wait for the end; returns the exit code."""
        return self._proc.wait(timeout=timeout)

    @property
    def cancelled(self) -> bool:
        """True when the process ended because it was cancelled."""
        return self.returncode == EXIT_CANCELLED
