"""Entry point of the training process: ``python -m core.models.train_process``.

Training never runs in the app's or CLI's own process: it can be killed,
frees the GPU when it ends and never holds the GIL against the UI. The
parent sends the configuration as JSON, reads one JSON event per line on this
process's stdout, and asks for a cooperative cancel by writing ``cancel`` on
its stdin. Under ``torchrun`` (WORLD_SIZE > 1) the same entry point runs
distributed data parallel: gloo on CPU, NCCL on GPU; rank 0 alone writes.

Exit codes: 0 done, 1 failed (an ``error`` event says why), 3 cancelled.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading

from core.errors import Cancelled, LoupeError
from core.progress import CancelToken

EXIT_FAILED, EXIT_CANCELLED = 1, 3


def _emitter(rank: int):
    lock = threading.Lock()

    def emit(event: dict) -> None:
        if rank != 0:
            return
        with lock:
            sys.stdout.write(json.dumps(event, default=str) + "\n")
            sys.stdout.flush()

    return emit


def _watch_stdin(token: CancelToken) -> None:
    """Set ``token`` when the parent writes ``cancel`` or closes our stdin (parent gone)."""
    try:
        for line in sys.stdin:
            if line.strip() == "cancel":
                token.cancel()
                return
    except (OSError, ValueError):
        pass
    token.cancel()


def main(argv: list[str] | None = None) -> int:
    """Run one training job; see the module docstring for the protocol."""
    parser = argparse.ArgumentParser(prog="loupe-train")
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--config", default="{}", help="TrainConfig fields as JSON")
    parser.add_argument("--no-stdin", action="store_true", help="do not watch stdin for cancel")
    parser.add_argument("--nice", type=int, default=0, help="lower this process's CPU priority (POSIX)")
    args = parser.parse_args(argv)
    if args.nice and hasattr(os, "nice"):
        os.nice(args.nice)  # background training yields the CPU to the reader's interactive work
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    from core.workspace import CACHE_ENV, set_cache_root

    set_cache_root(os.environ.get(CACHE_ENV))  # this process is an entry point: it reads its environment here
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    emit = _emitter(rank)
    token = CancelToken()
    if not args.no_stdin and rank == 0 and world == 1:
        threading.Thread(target=_watch_stdin, args=(token,), daemon=True).start()
    try:
        from core.models.training import TrainConfig, train
        from core.workspace import Workspace

        config = TrainConfig(**json.loads(args.config))
        if world > 1:
            import torch
            import torch.distributed as dist

            backend = "nccl" if config.device != "cpu" and torch.cuda.is_available() else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
                config.device = "cuda"
            else:
                config.device = "cpu"
            dist.init_process_group(backend)
        with Workspace.open(args.workspace) as ws:
            if config.flagged_weight is None:  # this entry point is the front end: it resolves the setting
                from core.models.sample_weights import DEFAULT_FLAGGED_WEIGHT

                config.flagged_weight = float(ws.get_setting("flagged_weight", DEFAULT_FLAGGED_WEIGHT))
            train(ws, config, emit=emit, cancel=token, rank=rank, world=world)
        return 0
    except Cancelled:
        emit({"event": "cancelled", "message": "training cancelled; nothing was saved"})
        return EXIT_CANCELLED
    except (LoupeError, TypeError, ValueError) as exc:
        emit({"event": "error", "message": str(exc)})
        return EXIT_FAILED
    except Exception as exc:  # report, never die silently
        logging.getLogger(__name__).exception("training failed")
        emit({"event": "error", "message": f"training failed: {type(exc).__name__}: {exc}"})
        return EXIT_FAILED
    finally:
        if world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
