"""Compressed DICOM decoded in a worker process: bit for bit what the in-process decode gives, the same errors,
and no image lost when the worker is killed (it is decoded in-process and the pool restarts)."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from core.errors import DamagedImageError, DicomReadError, LoupeError
from core.imaging import clear_cache, decode_pool, dicom_io, loader
from core.imaging.decode_pool import OFFLOADED, DecodePool, file_transfer_syntax
from tests.core import codestreams
from tests.core.dicom_factory import write_dicom, write_text_file

#: Every syntax of the repo's codestream fixtures that the pool decodes in a worker.
COMPRESSED = [kind for kind, uid in codestreams.SYNTAXES.items() if str(uid) in OFFLOADED]


@pytest.fixture(scope="module")
def pool():
    p = DecodePool(workers=1)
    assert p.wait_ready(120), "the decode worker did not start"
    yield p
    p.shutdown()


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


def _same_error(call_a, call_b) -> tuple[LoupeError, LoupeError]:
    errors = []
    for call in (call_a, call_b):
        with pytest.raises(LoupeError) as info:
            call()
        errors.append(info.value)
    a, b = errors
    assert type(a) is type(b)
    assert str(a) == str(b)
    assert getattr(a, "key", None) == getattr(b, "key", None)
    return a, b


def test_the_fixtures_cover_jpeg_jpegls_and_j2k():
    assert {"jpeg_baseline", "jpeg_lossless", "jpegls", "jpegls_near", "j2k", "j2k_lossy"} <= set(COMPRESSED)
    assert "rle" not in COMPRESSED and "native" not in COMPRESSED  # their decoders let the UI thread run


@pytest.mark.parametrize("kind", COMPRESSED)
def test_worker_decode_equals_in_process_decode_bit_for_bit(pool, tmp_path, kind):
    path = codestreams.write(codestreams.build(kind, frames=3), tmp_path / f"{kind}.dcm")
    assert file_transfer_syntax(path) == str(codestreams.SYNTAXES[kind])
    for frame in (0, 2):
        before = pool.offloaded
        got, got_params = pool.decode_frame(path, frame)
        assert pool.offloaded == before + 1  # the worker answered, not the in-process fallback
        want, want_params = dicom_io.decode_frame(path, frame)
        assert got.dtype == want.dtype and got.shape == want.shape == (64, 64)
        assert got.tobytes() == want.tobytes()
        assert got_params == want_params
    assert pool.fallbacks == 0


def test_uncompressed_and_rle_stay_in_process(pool, tmp_path):
    for kind in ("native", "rle"):
        path = codestreams.write(codestreams.build(kind), tmp_path / f"{kind}.dcm")
        before = pool.offloaded
        got, _ = pool.decode_frame(path)
        assert pool.offloaded == before
        assert np.array_equal(got, dicom_io.decode_frame(path)[0])


def test_damaged_files_give_the_same_error_through_the_worker(pool, tmp_path):
    data = codestreams.file_bytes("jpegls", 1)
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:len(data) - 40])
    # a JPEG codestream cut short with its end marker put back: caught by the completeness probe in the worker
    from tests.core.test_integrity import _cut_keep_marker, _rewrap

    silent = tmp_path / "silent_cut.dcm"
    silent.write_bytes(_rewrap(codestreams.file_bytes("jpeg_lossless_sv1", 1), 1, _cut_keep_marker))
    # a JPEG-LS file whose fragment is not a codestream at all
    garbage = write_dicom(tmp_path / "garbage.dcm", np.arange(64, dtype=np.uint16).reshape(8, 8),
                          transfer_syntax="1.2.840.10008.1.2.4.80", encapsulated=True)
    for path in (cut, silent, garbage):
        before = pool.offloaded
        error, _ = _same_error(lambda: pool.decode_frame(path, 0), lambda: dicom_io.decode_frame(path, 0))
        assert isinstance(error, DamagedImageError)
        assert pool.offloaded == before + 1  # the worker gave the error, the app did not decode it again
        assert "\n" not in str(error)
    assert "ends before the image is complete" in str(_same_error(lambda: pool.decode_frame(silent, 0),
                                                                  lambda: dicom_io.decode_frame(silent, 0))[0])
    # a frame that does not exist: the worker's plain error
    path = codestreams.write(codestreams.build("j2k"), tmp_path / "one.dcm")
    error, _ = _same_error(lambda: pool.decode_frame(path, 3), lambda: dicom_io.decode_frame(path, 3))
    assert str(error).startswith("frame 3 does not exist")
    assert pool.fallbacks == 0


def test_unknown_syntax_and_non_dicom_give_the_same_error(pool, tmp_path):
    unknown = write_dicom(tmp_path / "u.dcm", np.zeros((8, 8), np.uint16), transfer_syntax="1.2.3.4.5.6.7")
    text = write_text_file(tmp_path / "notes.dcm")
    for path in (unknown, text):
        error, _ = _same_error(lambda: pool.decode_frame(path, 0), lambda: dicom_io.decode_frame(path, 0))
        assert isinstance(error, DicomReadError)
    assert "unknown transfer syntax 1.2.3.4.5.6.7" in str(_same_error(
        lambda: pool.decode_frame(unknown, 0), lambda: dicom_io.decode_frame(unknown, 0))[0])


def test_a_killed_worker_loses_no_image_and_the_pool_restarts(tmp_path, caplog):
    path = codestreams.write(codestreams.build("jpegls", frames=1), tmp_path / "jls.dcm")
    want, _ = dicom_io.decode_frame(path)
    p = DecodePool(workers=1)
    try:
        assert p.wait_ready(120)
        (pid,) = p.pids()
        os.kill(pid, signal.SIGKILL)
        for _ in range(100):  # until the pool has noticed (or the decode below finds out itself)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        with caplog.at_level("WARNING", logger="core.imaging.decode_pool"):
            got, _ = p.decode_frame(path)
        assert got.tobytes() == want.tobytes()
        assert (p.fallbacks, p.rebuilds) == (1, 1)
        assert "a decode worker stopped" in caplog.text
        assert p.wait_ready(120)  # rebuilt in the background
        assert p.pids() and p.pids() != [pid]
        before = p.offloaded
        assert p.decode_frame(path)[0].tobytes() == want.tobytes()
        assert p.offloaded == before + 1
    finally:
        p.shutdown()
    assert p.pids() == []
    assert p.decode_frame(path)[0].tobytes() == want.tobytes()  # shut down: in-process


def test_before_the_workers_answer_decodes_run_in_process_and_start_them(tmp_path):
    path = codestreams.write(codestreams.build("j2k"), tmp_path / "j2k.dcm")
    p = DecodePool(workers=1)
    try:
        assert not p.ready
        got, _ = p.decode_frame(path)  # in-process, and the workers are spawned in the background
        assert p.offloaded == 0
        assert got.tobytes() == dicom_io.decode_frame(path)[0].tobytes()
        assert p.wait_ready(120)
        p.decode_frame(path)
        assert p.offloaded == 1
    finally:
        p.shutdown()


def test_the_loader_decodes_through_the_enabled_pool_and_enable_is_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(decode_pool, "_POOL", None)  # independent of any session another test left open
    monkeypatch.setattr(decode_pool, "_USERS", 0)
    path = codestreams.write(codestreams.build("jpegls_near"), tmp_path / "jlsn.dcm")
    want = loader.render(path)
    clear_cache()
    assert decode_pool.current() is None
    first = decode_pool.enable(workers=1)
    second = decode_pool.enable(workers=1)  # a second window while a workspace switches: the same pool
    try:
        assert first is second
        assert first.wait_ready(120)
        assert np.array_equal(loader.render(path), want)
        kind, raw, params = loader.decoded_frame(path)  # cached: no second decode
        assert first.offloaded == 1 and kind == "dicom" and raw.shape == (64, 64)
        decode_pool.disable()
        assert decode_pool.current() is first and first.ready
    finally:
        decode_pool.disable()
    assert decode_pool.current() is None
    assert first.pids() == []


def test_a_worker_killed_in_the_middle_of_a_decode_loses_no_image(tmp_path):
    import threading

    import pydicom
    from pydicom.uid import JPEGLSLossless

    ds = codestreams.build("native")
    big = np.tile(codestreams.base_pixels(1)[0], (32, 32))  # 2048 × 2048, 12-bit: a decode of a few hundred ms
    ds.Rows, ds.Columns = big.shape
    ds.PixelData = big.tobytes()
    ds.compress(JPEGLSLossless, big)
    path = codestreams.write(ds, tmp_path / "big_jls.dcm")
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == JPEGLSLossless
    p = DecodePool(workers=1)
    try:
        assert p.wait_ready(120)
        (pid,) = p.pids()
        out = []
        decoding = threading.Thread(target=lambda: out.append(p.decode_frame(path)[0]))
        decoding.start()
        time.sleep(0.05)  # the decode is sent (and usually under way): the worker dies before it can answer
        os.kill(pid, signal.SIGKILL)
        decoding.join(120)
        assert out and out[0].tobytes() == big.tobytes()
        assert (p.fallbacks, p.rebuilds, p.offloaded) == (1, 1, 0)
    finally:
        p.shutdown()
