"""Making a fast reading version in its own process, as the window's long jobs do.

:func:`build_fast_version` starts ``python -m core.models.fast_build`` for the
workspace, which runs :func:`core.models.fast_reading.quantize_version` or
:func:`~core.models.fast_reading.distill_version` and prints one JSON line: a
:class:`FastBuildResult`. Distillation trains a network, so it must not share the
window's process (the GIL, the memory, a kill on cancel); quantizing is cheaper but
goes the same way so both report alike. Cancelling kills the child: a version is
registered only at the very end, so nothing half-made is ever registered (an
orphan file is swept by :func:`core.models.versions.sweep_orphans`).
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from core.errors import Cancelled, LoupeError
from core.progress import CancelToken

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("int8", "distilled")


@dataclass(frozen=True)
class FastBuildResult:
    """What one attempt gave: the new version (``registered``), or the failed checks, or an error message."""

    kind: str
    registered: bool
    version: Optional[str] = None
    teacher: Optional[str] = None
    checks: list = field(default_factory=list)
    message: str = ""

    @property
    def failed(self) -> list[str]:
        """Names of the checks the candidate failed."""
        return [c["check"] for c in self.checks if not c.get("passed")]

    def summary(self, lines: bool = False) -> str:
        """The gate's outcome in words: the new version with its figures, or which check failed and why.

        ``lines``: one check per line (for a dialog) instead of one sentence (for a status bar)."""
        def f(v):
            return "n/a" if v is None else f"{v:.4f}"

        what = "INT8" if self.kind == "int8" else "Distilled"
        sep, bullet = ("\n", "• ") if lines else ("; ", "")
        if self.registered:
            figures = sep.join(f"{bullet}{c['check']} {f(c['candidate'])} (teacher {f(c['teacher'])})"
                               for c in self.checks)
            return (f"{what} version {self.version} of {self.teacher} registered: it passed every check"
                    + (f":\n{figures}\n" if lines else f" ({figures}). ") + "Model → Fast reading predicts with it.")
        if self.checks:
            bad = sep.join(f"{bullet}{c['check']} {f(c['candidate'])} vs teacher {f(c['teacher'])} ({c['rule']})"
                           for c in self.checks if not c.get("passed"))
            return (f"{what} version not registered — failed {', '.join(self.failed)}" + (":\n" if lines else ": ")
                    + bad)
        return f"{what} version not made: {self.message}"

    def to_json(self) -> str:
        """One JSON line."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "FastBuildResult":
        """The inverse of :meth:`to_json`."""
        data = json.loads(text)
        return cls(kind=data["kind"], registered=bool(data["registered"]), version=data.get("version"),
                   teacher=data.get("teacher"), checks=list(data.get("checks") or []),
                   message=data.get("message", ""))


def run_build(workspace, kind: str, student: str = "mobilenet_v3_large", epochs: int = 5,
              pretrained: str = "default", torch_cache_dir: Optional[str] = None,
              actor: str = "app", keep_float: Optional[list[str]] = None) -> FastBuildResult:
    """Make and gate one fast reading version in this process; never raises for a failed gate or bad input.

    ``keep_float``: INT8 only, backbone modules kept in float (default: the recipe's)."""
    from core.models.fast_reading import GateFailed, distill_version, quantize_version

    teacher = workspace.active_model()
    try:
        if kind == "int8":
            version, checks = quantize_version(workspace, keep_float=keep_float, actor=actor)
        elif kind == "distilled":
            version, checks = distill_version(workspace, student, epochs=epochs, actor=actor, pretrained=pretrained,
                                              torch_cache_dir=torch_cache_dir)
        else:
            return FastBuildResult(kind, False, message=f"unknown kind {kind!r}: choose {' or '.join(KINDS)}")
    except GateFailed as exc:
        return FastBuildResult(kind, False, teacher=teacher.version if teacher else None, checks=exc.checks,
                               message=str(exc))
    except LoupeError as exc:
        return FastBuildResult(kind, False, teacher=teacher.version if teacher else None, message=str(exc))
    return FastBuildResult(kind, True, version.version, version.parent, checks)


def build_fast_version(workspace_path: str, kind: str, student: str = "mobilenet_v3_large", epochs: int = 5,
                       pretrained: str = "default", torch_cache_dir: Optional[str] = None, actor: str = "app",
                       keep_float: Optional[list[str]] = None, cancel: Optional[CancelToken] = None, log_path: Optional[str] = None,
                       python: str = sys.executable, nice: int = 10, poll_s: float = 0.2) -> FastBuildResult:
    """Run :func:`run_build` in a child process and return its result.

    The child's stderr goes to ``log_path``. Raises Cancelled (after killing the
    child) when ``cancel`` is set; a child that dies without a result gives a
    ``FastBuildResult`` whose message says so.
    """
    path = str(workspace_path) if "://" in str(workspace_path) else str(Path(workspace_path).absolute())
    cmd = [python, "-m", "core.models.fast_build", "--workspace", path, "--kind", kind, "--student", student,
           "--epochs", str(int(epochs)), "--pretrained", pretrained, "--actor", actor, "--nice", str(nice)]
    if torch_cache_dir:
        cmd += ["--torch-cache-dir", str(torch_cache_dir)]
    if keep_float is not None:
        cmd += ["--keep-float", ",".join(keep_float)]
    stderr = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, cwd=str(ROOT), text=True)
    finally:
        if log_path:
            stderr.close()
    logger.info("making a %s fast reading version in process %d", kind, proc.pid)
    while proc.poll() is None:
        if cancel is not None and cancel.cancelled:
            proc.kill()
            proc.wait()
            raise Cancelled("making the fast reading version was cancelled; nothing was registered")
        time.sleep(poll_s)
    out = proc.stdout.read() if proc.stdout else ""
    lines = [line for line in out.splitlines() if line.strip().startswith("{")]
    if not lines:
        return FastBuildResult(kind, False, message=f"the process ended (exit {proc.returncode}) without a result"
                                                    + (f"; see {log_path}" if log_path else ""))
    return FastBuildResult.from_json(lines[-1])


def main(argv: Optional[list[str]] = None) -> int:
    """Child entry point: print one FastBuildResult JSON line; exit 0 when a version was registered, else 1."""
    parser = argparse.ArgumentParser(prog="python -m core.models.fast_build")
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--kind", choices=KINDS, required=True)
    parser.add_argument("--student", default="mobilenet_v3_large")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--pretrained", default="default")
    parser.add_argument("--torch-cache-dir")
    parser.add_argument("--actor", default="app")
    parser.add_argument("--nice", type=int, default=0)
    parser.add_argument("--keep-float", help="INT8: comma-separated modules kept in float")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    if args.nice:
        try:
            import os

            os.nice(args.nice)
        except (AttributeError, OSError):
            pass
    from core.workspace import Workspace

    try:
        ws = Workspace.open(args.workspace)
    except LoupeError as exc:
        print(FastBuildResult(args.kind, False, message=str(exc)).to_json(), flush=True)
        return 1
    try:
        result = run_build(ws, args.kind, args.student, args.epochs, args.pretrained, args.torch_cache_dir,
                           args.actor, [k for k in args.keep_float.split(",") if k] if args.keep_float is not None
                           else None)
    finally:
        ws.close()
    print(result.to_json(), flush=True)
    return 0 if result.registered else 1


if __name__ == "__main__":
    sys.exit(main())
