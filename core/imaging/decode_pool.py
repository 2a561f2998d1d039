"""Decoding compressed DICOM in worker processes, so a decoder that holds the GIL never stalls the window.

The JPEG-LS, JPEG Lossless and JPEG 2000 decoders (pylibjpeg-libjpeg, pyjpegls,
pylibjpeg-openjpeg) keep the GIL for the whole decode: a 2k × 2k JPEG-LS
radiograph decoded in a worker *thread* freezes the UI thread for most of its
0.3-0.8 s. Uncompressed pixels (numpy), RLE (pydicom's numpy decoder),
deflate (zlib releases the GIL) and photographs (Pillow releases it) are left
in-process; see ``bench/decode_bench.py`` for the measurements behind
:data:`OFFLOADED`.

:class:`DecodePool` runs :func:`core.imaging.dicom_io.decode_frame` itself in a
``spawn`` :class:`~concurrent.futures.ProcessPoolExecutor` and hands back
exactly what it returns (the array is pickled back: bit for bit the same) or
raises the same :class:`~core.errors.LoupeError` with the same message and
``key``. Anything else — the pool not started yet, a worker killed or crashed,
an unexpected exception in the worker — falls back to decoding in this process,
so no image is lost and errors read the same; a broken pool is rebuilt in the
background.

Core reads no settings: the app turns the pool on with :func:`enable` and off
with :func:`disable` (each window's session, on open and on close). Without it, :func:`decode_frame` is
:func:`core.imaging.dicom_io.decode_frame` (the CLI, training, tests).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
import threading
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Optional, Union

import numpy as np

from core import errors
from core.imaging import dicom_io
from core.imaging.display import DisplayParams

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

#: Transfer syntaxes decoded in a worker process: those whose decoders hold the GIL through the decode.
OFFLOADED = frozenset({
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline (libjpeg)
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.201",  # HTJ2K lossless
    "1.2.840.10008.1.2.4.202",  # HTJ2K lossless RPCL
    "1.2.840.10008.1.2.4.203",  # HTJ2K
})


def file_transfer_syntax(path: PathLike) -> str:
    """The Transfer Syntax UID in a file's File Meta, or '' (no File Meta, unreadable, not DICOM).

    Reads only the preamble and group 0002; never raises.
    """
    from pydicom.filereader import read_file_meta_info

    try:
        meta = read_file_meta_info(os.fspath(path))
        return str(meta.get("TransferSyntaxUID", "") or "").strip()
    except Exception:  # noqa: BLE001 - anything unreadable is decoded in-process, which gives the proper error
        return ""


# --- the worker side ---------------------------------------------------------------------------------------------

class _Keep(logging.Handler):
    """Keeps a worker's log records of one decode so the app's log gets them."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[tuple[str, int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.records.append((record.name, record.levelno, record.getMessage()))
        except Exception:  # noqa: BLE001 - a malformed log call must not fail the decode
            pass


def _worker_init() -> None:
    """Import the decoders once per worker (so the first decode is not slower than the rest)."""
    logging.getLogger().setLevel(logging.INFO)
    for handler in list(logging.getLogger().handlers):
        logging.getLogger().removeHandler(handler)
    logging.getLogger().addHandler(logging.NullHandler())  # records go back to the app, never to a terminal
    from core.imaging import integrity  # noqa: F401 - warm import
    from pydicom.pixels import get_decoder

    for uid in OFFLOADED:
        try:
            get_decoder(uid).is_available  # noqa: B018 - loads the plugins
        except (NotImplementedError, ValueError):
            pass


def _ping() -> int:
    return os.getpid()


def _worker_decode(path: str, frame: int) -> tuple:
    """Run in a worker: ``('ok', raw, params, logs)``, ``('loupe', class name, message, key, logs)`` for a
    Loupe error, or ``('other', repr, logs)`` for anything else (the app then decodes in-process)."""
    keep = _Keep()
    root = logging.getLogger()
    root.addHandler(keep)
    try:
        raw, params = dicom_io.decode_frame(path, frame)
        return ("ok", raw, params, keep.records)
    except errors.LoupeError as exc:
        return ("loupe", type(exc).__name__, str(exc), getattr(exc, "key", None), keep.records)
    except Exception as exc:  # noqa: BLE001 - the app repeats the decode in-process to raise it the usual way
        return ("other", repr(exc), keep.records)
    finally:
        root.removeHandler(keep)


def _replay(records: list[tuple[str, int, str]]) -> None:
    for name, level, message in records:
        logging.getLogger(name).log(level, "%s (decode worker)", message)


def _loupe_error(name: str, message: str, key: Optional[str]) -> errors.LoupeError:
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, errors.LoupeError)):
        cls = errors.DicomReadError
    error = cls(message)
    if key is not None or isinstance(error, errors.DamagedImageError):
        error.key = key
    return error


# --- the app side ------------------------------------------------------------------------------------------------

class DecodePool:
    """Worker processes that decode compressed DICOM frames (see the module docstring).

    ``workers`` processes are spawned by :meth:`start` (in a background thread:
    it returns at once); until they answer, decodes run in-process. Thread-safe.
    """

    def __init__(self, workers: int = 1, syntaxes: frozenset = OFFLOADED) -> None:
        self.workers = max(1, int(workers))
        self.syntaxes = frozenset(syntaxes)
        self._lock = threading.Lock()
        self._executor: Optional[cf.ProcessPoolExecutor] = None
        self._ready = threading.Event()
        self._settled = threading.Event()  # set when the latest start succeeded or failed
        self._closed = False
        self.rebuilds = 0  # how many times a broken pool was replaced
        self.fallbacks = 0  # decodes that ran in-process although they were meant for a worker
        self.offloaded = 0  # decodes a worker answered (an image or a Loupe error)

    @property
    def ready(self) -> bool:
        """True once a worker has answered (decodes go to the workers from then on)."""
        return self._ready.is_set()

    def start(self) -> None:
        """Spawn the workers in a background thread unless they exist; returns at once."""
        with self._lock:
            if self._closed or self._executor is not None:
                return
            ctx = multiprocessing.get_context("spawn")
            executor = cf.ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_worker_init)
            self._executor = executor
            self._settled.clear()
        threading.Thread(target=self._warm, args=(executor,), name="decode-pool-start", daemon=True).start()

    def _warm(self, executor: cf.ProcessPoolExecutor) -> None:
        try:
            pids = [executor.submit(_ping) for _ in range(self.workers)]
            for f in pids:
                f.result()
        except Exception as exc:  # noqa: BLE001 - a pool that cannot start leaves decoding in-process
            logger.warning("the decode worker did not start (%s): decoding in the app's process",
                           str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
            self._drop(executor)
            self._settled.set()
            return
        with self._lock:
            if self._executor is executor:
                self._ready.set()
                logger.info("decode workers ready (%d process(es))", self.workers)
        self._settled.set()

    def wait_ready(self, timeout: float = 60.0) -> bool:
        """Start the pool if needed and block until it answers (tests, benchmarks). Returns :attr:`ready`."""
        self.start()
        self._settled.wait(timeout)
        return self.ready

    def _drop(self, executor: cf.ProcessPoolExecutor) -> None:
        with self._lock:
            if self._executor is executor:
                self._executor = None
                self._ready.clear()
        executor.shutdown(wait=False, cancel_futures=True)

    def pids(self) -> list[int]:
        """The worker processes' ids (empty before they start)."""
        with self._lock:
            executor = self._executor
        procs = getattr(executor, "_processes", None) or {}
        return [p.pid for p in list(procs.values()) if p.pid is not None]

    def decode_frame(self, path: PathLike, frame: int = 0) -> tuple[np.ndarray, DisplayParams]:
        """:func:`core.imaging.dicom_io.decode_frame`, in a worker when the file's syntax is offloaded and
        the pool is ready. Same result and same errors as in-process."""
        if self._closed or file_transfer_syntax(path) not in self.syntaxes:
            return dicom_io.decode_frame(path, frame)
        with self._lock:
            executor = self._executor if self._ready.is_set() else None
        if executor is None:
            self.start()  # the next one goes to a worker
            return dicom_io.decode_frame(path, frame)
        try:
            answer = executor.submit(_worker_decode, os.fspath(path), frame).result()
        except (BrokenProcessPool, RuntimeError) as exc:
            # A killed or crashed worker breaks the whole pool (and a pool shut down under us refuses work):
            # replace it and decode this frame here.
            logger.warning("a decode worker stopped (%s): decoding %s in the app's process and restarting it",
                           exc or type(exc).__name__, os.path.basename(os.fspath(path)))
            self._drop(executor)
            with self._lock:
                self.rebuilds += 1
                self.fallbacks += 1
            self.start()
            return dicom_io.decode_frame(path, frame)
        except Exception as exc:  # noqa: BLE001 - e.g. a result that could not be sent back: decode it here
            logger.info("decode worker failed on %s (%s): decoding in the app's process", path, exc)
            with self._lock:
                self.fallbacks += 1
            return dicom_io.decode_frame(path, frame)
        kind = answer[0]
        _replay(answer[-1])
        if kind in ("ok", "loupe"):
            with self._lock:
                self.offloaded += 1
        if kind == "ok":
            return answer[1], answer[2]
        if kind == "loupe":
            raise _loupe_error(answer[1], answer[2], answer[3])
        logger.info("decode worker failed on %s (%s): decoding in the app's process", path, answer[1])
        with self._lock:
            self.fallbacks += 1
        return dicom_io.decode_frame(path, frame)

    def shutdown(self, wait: bool = True) -> None:
        """Stop the workers (pending decodes are cancelled); later decodes run in-process."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
            self._ready.clear()
        if executor is not None:
            executor.shutdown(wait=wait, cancel_futures=True)


_POOL: Optional[DecodePool] = None
_USERS = 0  # enable() calls not yet matched by disable() (two windows share one pool while a workspace switches)
_POOL_LOCK = threading.Lock()


def enable(workers: int = 1, start: bool = False) -> DecodePool:
    """Route compressed DICOM decodes of :func:`decode_frame` through a :class:`DecodePool` (one per process).

    Each call must be matched by one :func:`disable`; the pool lives while any
    caller still uses it. With ``start`` the workers are spawned now (in the
    background); otherwise on the first offloaded decode. Returns the pool.
    """
    global _POOL, _USERS
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = DecodePool(workers)
        _USERS += 1
        pool = _POOL
    if start:
        pool.start()
    return pool


def disable(wait: bool = True) -> None:
    """Undo one :func:`enable`; the last one shuts the workers down and decodes run in-process again."""
    global _POOL, _USERS
    with _POOL_LOCK:
        _USERS = max(0, _USERS - 1)
        pool = None
        if _USERS == 0:
            pool, _POOL = _POOL, None
    if pool is not None:
        pool.shutdown(wait=wait)


def current() -> Optional[DecodePool]:
    """The enabled pool, or None."""
    return _POOL


def decode_frame(path: PathLike, frame: int = 0) -> tuple[np.ndarray, DisplayParams]:
    """Decode one DICOM frame: through the enabled pool, else in-process (see :func:`dicom_io.decode_frame`)."""
    pool = _POOL
    if pool is None:
        return dicom_io.decode_frame(path, frame)
    return pool.decode_frame(path, frame)
