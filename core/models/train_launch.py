"""Launch N data-parallel training ranks on this machine: ``python -m core.models.train_launch --nproc N``.

``loupe train --nproc N`` and the window start this process instead of
:mod:`core.models.train_process` when N > 1. It starts the ranks itself through
torch's elastic launcher API (``torch.distributed.launcher.api.elastic_launch``,
what ``torchrun`` runs), each one ``python -m core.models.train_process`` with
the rendezvous environment set: gloo on CPU, NCCL on GPU (one GPU per rank).
Rank 0 writes the JSON events on this process's stdout (inherited), exactly as
a single training process does. Writing ``cancel`` on this process's stdin (or
closing it) stops every rank: the launcher is sent SIGTERM, which the elastic
agent forwards to all ranks before it returns; the exit code is then 3 and
nothing is saved (rank 0 only saves after the last epoch).

Several machines: run ``torchrun --nnodes M --nproc-per-node N --rdzv-backend c10d
--rdzv-endpoint HOST:PORT --rdzv-id JOB -m core.models.train_process --workspace W
--config JSON --no-stdin`` on each of them (see the README).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import uuid

from core.models.train_process import EXIT_CANCELLED, EXIT_FAILED

logger = logging.getLogger(__name__)


def _emit(event: dict) -> None:
    sys.stdout.write(json.dumps(event, default=str) + "\n")
    sys.stdout.flush()


def launch_config(nproc: int, run_id: str | None = None, monitor_interval: float = 0.5):
    """The single-node elastic :class:`LaunchConfig` for ``nproc`` ranks (c10d rendezvous on a free local port)."""
    from torch.distributed.launcher.api import LaunchConfig

    return LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=int(nproc), run_id=run_id or f"loupe-{uuid.uuid4().hex}",
                        rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", max_restarts=0,
                        monitor_interval=monitor_interval)


def check_nproc(nproc: int, device: str) -> str:
    """The backend for ``nproc`` ranks on ``device`` (``gloo`` or ``nccl``); raises ModelError when impossible."""
    import torch

    from core.errors import ModelError

    if nproc < 1:
        raise ModelError(f"--nproc must be at least 1, got {nproc}")
    wants_gpu = device in ("cuda", "auto") and torch.cuda.is_available()
    if not wants_gpu:
        return "gloo"
    gpus = torch.cuda.device_count()
    if nproc > gpus:
        raise ModelError(f"--nproc {nproc} needs {nproc} GPUs but this machine has {gpus}; "
                         "use --nproc {gpus} or --device cpu")
    return "nccl"


def _watch_stdin(cancelled: threading.Event) -> None:
    """On ``cancel`` (or stdin closed: the parent is gone) stop every rank through the elastic agent."""
    try:
        for line in sys.stdin:
            if line.strip() == "cancel":
                break
        else:
            pass
    except (OSError, ValueError):
        pass
    cancelled.set()
    os.kill(os.getpid(), signal.SIGTERM)  # the agent's handler terminates all ranks, then raises here


def main(argv: list[str] | None = None) -> int:
    """Launch the ranks and wait for them; exit 0 done, 1 failed, 3 cancelled."""
    parser = argparse.ArgumentParser(prog="loupe-train-launch")
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--config", default="{}")
    parser.add_argument("--nproc", type=int, required=True)
    parser.add_argument("--no-stdin", action="store_true")
    parser.add_argument("--nice", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    if args.nice and hasattr(os, "nice"):
        os.nice(args.nice)
    from core.errors import LoupeError

    try:
        device = json.loads(args.config).get("device", "auto")
        backend = check_nproc(args.nproc, device)
    except (LoupeError, ValueError) as exc:
        _emit({"event": "error", "message": str(exc)})
        return EXIT_FAILED
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # as torchrun: N ranks must not each take every core
    cancelled = threading.Event()
    if not args.no_stdin:
        threading.Thread(target=_watch_stdin, args=(cancelled,), daemon=True).start()
    logger.info("launching %d training ranks (%s)", args.nproc, backend)
    try:
        elastic_launch(launch_config(args.nproc), sys.executable)(
            "-m", "core.models.train_process", "--workspace", args.workspace, "--config", args.config, "--no-stdin")
        return 0
    except SignalException:
        if cancelled.is_set():
            _emit({"event": "cancelled", "message": "training cancelled on every rank; nothing was saved"})
            return EXIT_CANCELLED
        _emit({"event": "error", "message": "training stopped by a signal"})
        return EXIT_FAILED
    except ChildFailedError as exc:
        codes = {f.local_rank: f.exitcode for f in exc.failures.values()} if getattr(exc, "failures", None) else {}
        if cancelled.is_set():
            _emit({"event": "cancelled", "message": "training cancelled on every rank; nothing was saved"})
            return EXIT_CANCELLED
        _emit({"event": "error", "message": f"a training rank failed (exit codes by rank: {codes})"})
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
