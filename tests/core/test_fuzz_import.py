"""Fuzzing the importer with mutated and truncated DICOM, PNG and JPEG files.

Seeds are real files from ``../shared/data`` (the smaller DICOMs, HAM10000
JPEGs, a PneumoniaMNIST image as PNG) plus synthetic ones, so the test still
runs without the shared data. Hypothesis picks a seed and a list of
mutations (truncate, flip, insert, delete, overwrite with boundary values,
biased toward the header where parsers branch). Every case must end, within
:data:`PER_FILE_SECONDS` (a SIGALRM watchdog), in exactly one outcome: an
image record, or one :class:`~core.types.ImportIssue` with a plain reason
(never the scanner's catch-all for unexpected exceptions, never a traceback).
Files that import are also rendered: pixels or a LoupeError, nothing else.

``LOUPE_FUZZ_EXAMPLES`` sets the number of cases (small by default for
``make test``); ``bench/soak.py`` runs thousands through the same functions.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import LoupeError
from core.imaging import clear_cache, render, scan_paths
from tests.conftest import SHARED_DATA

logger = logging.getLogger(__name__)

EXAMPLES = int(os.environ.get("LOUPE_FUZZ_EXAMPLES", "400"))
#: A file that takes longer than this to scan (or render) counts as a hang.
PER_FILE_SECONDS = float(os.environ.get("LOUPE_FUZZ_SECONDS", "10"))
#: Files larger than this are scanned but not rendered (decoding a 6 MB radiograph per case is slow).
RENDER_LIMIT = 1_200_000
#: The scanner's wording when a reader raised something other than a LoupeError (a bug).
UNEXPECTED = "could not be read:"

pytestmark = pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="the watchdog needs SIGALRM (POSIX)")


class Hang(Exception):
    """A file took longer than the per-file limit."""


def _synthetic_seeds() -> dict[str, bytes]:
    from PIL import Image

    from tests.core.dicom_factory import write_dicom

    rng = np.random.default_rng(7)
    seeds = {}
    for name, kwargs in {"synthetic_mono.dcm": {}, "synthetic_nopreamble.dcm": {"preamble": False},
                         "synthetic_rgb.dcm": {"rgb": True, "pixels": rng.integers(0, 255, (16, 16, 3), np.uint8)},
                         "synthetic_frames.dcm": {"pixels": rng.integers(0, 4000, (3, 12, 12), np.uint16)}}.items():
        buf = Path(os.environ.get("TMPDIR", "/tmp")) / f"loupe-fuzz-seed-{os.getpid()}-{name}"
        try:
            write_dicom(buf, **kwargs)
            seeds[name] = buf.read_bytes()
        finally:
            buf.unlink(missing_ok=True)
    for fmt, mode, shape in (("PNG", "L", (24, 20)), ("PNG", "I;16", (16, 16)), ("JPEG", "RGB", (20, 24, 3))):
        arr = rng.integers(0, 255, shape, np.uint8)
        im = Image.fromarray(arr)
        if mode == "I;16":
            im = Image.fromarray((arr.astype(np.uint16) * 257))
        out = io.BytesIO()
        im.save(out, fmt)
        seeds[f"synthetic_{mode.replace(';', '')}.{fmt.lower()}"] = out.getvalue()
    return seeds


def _real_seeds() -> dict[str, bytes]:
    seeds: dict[str, bytes] = {}
    dicom = SHARED_DATA / "dicom"
    if dicom.is_dir():
        for path in sorted(dicom.iterdir()):
            if path.is_file() and path.stat().st_size <= 1_100_000:
                seeds[path.name] = path.read_bytes()
    ham = SHARED_DATA / "ham10000_sample"
    if ham.is_dir():
        for path in sorted(ham.rglob("*.jpg"))[:3]:
            seeds[path.name] = path.read_bytes()
    npz = SHARED_DATA / "pneumoniamnist" / "pneumoniamnist_imbalanced.npz"
    if npz.is_file():
        from PIL import Image

        with np.load(npz) as data:
            key = next(k for k in data.files if k.endswith("images"))
            out = io.BytesIO()
            Image.fromarray(np.asarray(data[key][0], dtype=np.uint8)).save(out, "PNG")
            seeds["pneumoniamnist_0.png"] = out.getvalue()
    return seeds


_SEEDS: Optional[dict[str, bytes]] = None


def seeds() -> dict[str, bytes]:
    """Seed files by name: real ones from ../shared/data when present, synthetic ones always."""
    global _SEEDS
    if _SEEDS is None:
        _SEEDS = {**_real_seeds(), **_synthetic_seeds()}
    return _SEEDS


#: Values that break length fields and magic numbers.
BOUNDARY = [b"\x00", b"\xff", b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\xff\xff\xff\x7f", b"\x00\x00\x01\x00",
            b"DICM", b"\x89PNG", b"\xff\xd8\xff", b"\xff\xd9", b"IEND", b"OB\x00\x00", b"SQ\x00\x00"]


def mutate(data: bytes, ops: list[tuple]) -> bytes:
    """Apply mutation ops to ``data``. Each op is ``(kind, position, value)``; positions wrap.

    kinds: ``truncate`` (keep ``position`` bytes), ``flip`` (xor a byte with
    ``value``), ``insert``/``overwrite`` (``value`` bytes at ``position``),
    ``delete`` (drop ``value`` bytes at ``position``).
    """
    buf = bytearray(data)
    for kind, position, value in ops:
        if not buf:
            break
        pos = position % len(buf)
        if kind == "truncate":
            del buf[pos:]
        elif kind == "flip":
            buf[pos] ^= (value % 255) + 1
        elif kind == "insert":
            buf[pos:pos] = value
        elif kind == "overwrite":
            buf[pos:pos + len(value)] = value
        elif kind == "delete":
            del buf[pos:pos + max(1, value)]
    return bytes(buf)


def random_op(rng) -> tuple:
    """One mutation op drawn from ``rng`` (a :class:`random.Random`), shaped as :func:`mutate` wants."""
    kind = rng.choice(["truncate", "flip", "insert", "overwrite", "delete"])
    position = rng.randrange(2048) if rng.random() < 0.7 else rng.randrange(1 << 24)
    if kind in ("insert", "overwrite"):
        value = rng.choice(BOUNDARY) if rng.random() < 0.6 else bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
    else:
        value = rng.randrange(1, 255)
    return kind, position, value


def _alarm(signum, frame):  # noqa: ARG001 - signal handler signature
    raise Hang()


def check_one(path: Path) -> str:
    """Scan (and, when it imports, render) one fuzzed file under the watchdog; returns 'imported' or 'rejected'.

    Raises AssertionError (with the file named) for a hang, an unexpected
    exception, zero or several outcomes, or an empty or traceback-like reason.
    """
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, PER_FILE_SECONDS)
    stage = "scan"
    try:
        result = scan_paths([path])
        outcomes = len(result.records) + len(result.errors)
        assert outcomes == 1, f"{path.name}: {outcomes} outcomes ({result.records}, {result.errors})"
        if result.errors:
            reason = result.errors[0].reason
            assert reason.strip(), f"{path.name}: rejected with an empty reason"
            assert "Traceback" not in reason and not reason.startswith(UNEXPECTED), \
                f"{path.name}: an unexpected exception escaped a reader: {reason}"
            return "rejected"
        if path.stat().st_size <= RENDER_LIMIT:
            stage = "render"
            try:
                pixels = render(path)
                assert isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8
            except LoupeError as exc:
                assert str(exc).strip(), f"{path.name}: render raised an empty message"
        return "imported"
    except Hang:
        raise AssertionError(f"{path.name}: {stage} took longer than {PER_FILE_SECONDS} s (hang)") from None
    except (AssertionError, LoupeError):
        raise
    except Exception as exc:  # any other exception is the bug this fuzz looks for
        raise AssertionError(f"{path.name}: {stage} raised {type(exc).__name__}: {exc}") from exc
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        clear_cache()


_positions = st.one_of(st.integers(0, 2048), st.integers(0, 1 << 24))
_op = st.one_of(
    st.tuples(st.just("truncate"), _positions, st.just(0)),
    st.tuples(st.just("flip"), _positions, st.integers(0, 254)),
    st.tuples(st.just("insert"), _positions, st.one_of(st.sampled_from(BOUNDARY), st.binary(min_size=1, max_size=16))),
    st.tuples(st.just("overwrite"), _positions, st.one_of(st.sampled_from(BOUNDARY), st.binary(min_size=1, max_size=8))),
    st.tuples(st.just("delete"), _positions, st.integers(1, 64)),
)

COUNTS = {"cases": 0, "imported": 0, "rejected": 0}


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(seed=st.integers(0, 1 << 16), ops=st.lists(_op, min_size=1, max_size=4))
def test_fuzzed_file_imports_or_is_rejected_with_a_reason(tmp_path, seed, ops):
    names = sorted(seeds())
    name = names[seed % len(names)]
    COUNTS["cases"] += 1
    path = tmp_path / f"case{COUNTS['cases']:06d}_{name}"
    path.write_bytes(mutate(seeds()[name], ops))
    try:
        COUNTS[check_one(path)] += 1
    finally:
        path.unlink(missing_ok=True)


def test_fuzzed_folder_import_reports_every_rejected_file(tmp_path, workspace):
    """A folder of mutated files: each one is imported or listed once among the errors, the rest imported."""
    import random

    from core.importer import import_paths

    rng = random.Random(11)
    folder = tmp_path / "mixed"
    folder.mkdir()
    all_seeds = seeds()
    names = sorted(all_seeds)
    for i in range(40):
        name = names[i % len(names)]
        ops = [random_op(rng) for _ in range(rng.randrange(0, 3))]
        (folder / f"{i:03d}_{name}").write_bytes(mutate(all_seeds[name], ops))
    report = import_paths(workspace, [folder])
    files = {str(p) for p in folder.iterdir()}
    errored = [e.path for e in report.errors]
    assert len(errored) == len(set(errored))
    assert set(errored) <= files
    assert report.imported + report.skipped + len(errored) == len(files)
    assert all(e.reason.strip() and not e.reason.startswith(UNEXPECTED) for e in report.errors)
    assert report.imported >= 1
    assert workspace.integrity_check()


def teardown_module(module) -> None:  # noqa: ARG001 - pytest hook signature
    logger.info("fuzzed %d files: %d imported, %d rejected", COUNTS["cases"], COUNTS["imported"], COUNTS["rejected"])
    print(f"\nfuzz: {COUNTS['cases']} cases, {COUNTS['imported']} imported, {COUNTS['rejected']} rejected",
          file=sys.stderr)


# --- compressed streams: truncations and bit flips inside the codestreams of every decoded syntax -----------------

#: Mutations inside the pixel data of a codestream seed. ``cut_file``: the file ends inside the pixel data;
#: ``cut_stream``: one frame's codestream is cut and re-wrapped in intact fragments, with or without its end
#: marker put back; ``drop``: a run of bytes inside a frame's codestream is removed (end marker kept);
#: ``flip``: bytes inside a frame's codestream are xor-ed (length and structure unchanged).
CODESTREAM_MUTATIONS = ("cut_file", "cut_stream", "drop", "flip")
#: Mutations after which a decode that differs from the intact image is a partial image.
PARTIAL_MUTATIONS = {"cut_file", "cut_stream"}


def codestream_seed_names() -> list[tuple[str, int]]:
    """(syntax, frames) of every codestream seed: each syntax of tests/core/codestreams.py, 1 and 3 frames."""
    from tests.core import codestreams

    return [(kind, frames) for kind in codestreams.SYNTAXES for frames in (1, 3)]


def mutate_codestream(kind: str, frames: int, mutation: str, rng) -> tuple[bytes, int]:
    """Bytes of a seed file with ``mutation`` applied inside its pixel data; returns (bytes, frame mutated)."""
    import pydicom
    from pydicom.encaps import encapsulate, generate_frames

    from tests.core import codestreams

    data = codestreams.file_bytes(kind, frames)
    span = codestreams.codestream_span(data)
    if span is None:  # native pixel data: cut the file or flip bytes inside the pixel values
        at = data.rfind(b"\xe0\x7f\x10\x00") + 12
        if mutation in PARTIAL_MUTATIONS:
            return data[:rng.randrange(at, len(data))], 0
        buf = bytearray(data)
        for _ in range(rng.randrange(1, 4)):
            buf[rng.randrange(at, len(buf))] ^= rng.randrange(1, 256)
        return bytes(buf), 0
    if mutation == "cut_file":
        return data[:rng.randrange(span[0], len(data) - 8)], 0
    ds = pydicom.dcmread(io.BytesIO(data))
    streams = [bytearray(f) for f in generate_frames(ds.PixelData, number_of_frames=frames)]
    index = rng.randrange(frames)
    stream = streams[index]
    body_end = len(stream.rstrip(b"\x00"))
    marker = stream[body_end - 2:body_end] == b"\xff\xd9"
    start = 64 if kind == "rle" else min(len(stream) - 4, 40)
    if mutation == "cut_stream":
        cut = rng.randrange(start, body_end - (2 if marker else 1))
        new = stream[:cut] + (b"\xff\xd9" if marker and rng.random() < 0.6 else b"")
    elif mutation == "drop":
        at = rng.randrange(start, body_end - 3)
        new = stream[:at] + stream[at + rng.randrange(1, max(2, (body_end - 2 - at) // 2)):]
        if marker and not new.rstrip(b"\x00").endswith(b"\xff\xd9"):
            new = new.rstrip(b"\x00") + b"\xff\xd9"
    else:
        new = bytearray(stream)
        for _ in range(rng.randrange(1, 4)):
            pos = rng.randrange(start, body_end)
            new[pos] ^= 1 << rng.randrange(8) if rng.random() < 0.7 else rng.randrange(1, 256)
    streams[index] = bytearray(new)
    ds.PixelData = encapsulate([bytes(s) + (b"\x00" if len(s) % 2 else b"") for s in streams], has_bot=frames > 1)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue(), index


def _reference_frames(path: Path, frames: int) -> Optional[np.ndarray]:
    """The library's own decode of the same bytes, outside Loupe (None when it cannot decode them)."""
    import warnings

    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.disable(logging.CRITICAL)
            try:
                arr = pydicom.dcmread(path).pixel_array
            finally:
                logging.disable(logging.NOTSET)
    except BaseException as exc:  # noqa: BLE001 - a reference that cannot decode (or panics) has nothing to compare
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return None
    return arr if frames > 1 else arr[None]


_INTACT: dict[tuple[str, int], np.ndarray] = {}


def _intact_frames(kind: str, frames: int) -> np.ndarray:
    import pydicom

    from tests.core import codestreams

    key = (kind, frames)
    if key not in _INTACT:
        arr = pydicom.dcmread(io.BytesIO(codestreams.file_bytes(kind, frames))).pixel_array
        _INTACT[key] = arr if frames > 1 else arr[None]
    return _INTACT[key]


def check_codestream_case(path: Path, kind: str, frames: int, mutation: str, trial_decode: bool = True) -> str:
    """Import and display one mutated codestream file under the watchdog; returns its outcome.

    Outcomes: 'rejected' (one plain reason at import), 'damaged' (the import
    accepted it, the display refused it as damaged), 'whole' (every frame
    decoded exactly as the library decodes the same bytes, and, after a
    truncation-type mutation, exactly as the intact file). ``trial_decode``
    False imports without the trial decode, so the display's own checks are
    what stands between a damaged file and the reader. Raises
    AssertionError for anything else: a silent partial image, a decode that
    differs from the reference, an unexpected exception or a hang.
    """
    from core.errors import DamagedImageError
    from core.imaging import dicom_io
    from core.imaging.integrity import IntegrityOptions

    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, PER_FILE_SECONDS)
    stage = "scan"
    try:
        result = scan_paths([path], integrity=IntegrityOptions(trial_decode=trial_decode))
        assert len(result.records) + len(result.errors) == 1, f"{path.name}: not exactly one outcome"
        if result.errors:
            reason = result.errors[0].reason
            assert reason.strip() and "Traceback" not in reason and not reason.startswith(UNEXPECTED), \
                f"{path.name}: rejected without a plain reason: {reason!r}"
            return "rejected"
        stage = "display"
        decoded = []
        try:
            for f in range(frames):
                raw, _ = dicom_io.decode_frame(path, f)
                pixels = render(path, frame=f)
                assert pixels.shape[:2] == raw.shape[:2], f"{path.name}: render shape {pixels.shape} vs {raw.shape}"
                decoded.append(raw)
        except DamagedImageError as exc:
            assert str(exc).strip(), f"{path.name}: damaged without a reason"
            return "damaged"
        stage = "reference"
        reference = _reference_frames(path, frames)
        assert reference is not None, f"{path.name}: displayed, but the reference decoder cannot decode the same bytes"
        got = np.stack(decoded)
        assert got.shape == reference.shape and np.array_equal(got, reference), \
            f"{path.name}: displayed pixels differ from the reference decode of the same bytes"
        if mutation in PARTIAL_MUTATIONS:
            intact = _intact_frames(kind, frames)
            assert got.shape == intact.shape and np.array_equal(got, intact), \
                f"{path.name}: silent partial image ({mutation} of a {kind} codestream displayed as whole)"
        return "whole"
    except Hang:
        raise AssertionError(f"{path.name}: {stage} took longer than {PER_FILE_SECONDS} s (hang)") from None
    except AssertionError:
        raise
    except BaseException as exc:  # any other exception (decoder panics included) is the bug this fuzz looks for
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise AssertionError(f"{path.name}: {stage} raised {type(exc).__name__}: {exc}") from exc
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        clear_cache()


CODESTREAM_CASES = int(os.environ.get("LOUPE_FUZZ_CODESTREAMS", "2"))


@pytest.mark.parametrize("mutation", CODESTREAM_MUTATIONS)
@pytest.mark.parametrize("kind,frames", codestream_seed_names())
def test_mutated_codestream_is_rejected_or_damaged_or_whole(tmp_path, kind, frames, mutation):
    """Every syntax × 1/3 frames × mutation, twice: never a silent partial image (160 cases)."""
    import random

    rng = random.Random(f"{kind}-{frames}-{mutation}")
    outcomes = []
    for i in range(CODESTREAM_CASES):
        data, _ = mutate_codestream(kind, frames, mutation, rng)
        path = tmp_path / f"{kind}_{frames}_{mutation}_{i}.dcm"
        path.write_bytes(data)
        # odd cases import without the trial decode: the display must then refuse what is damaged
        outcomes.append(check_codestream_case(path, kind, frames, mutation, trial_decode=i % 2 == 0))
    if mutation in ("cut_file", "cut_stream"):
        assert "whole" not in outcomes or kind == "native", outcomes
