"""The lookup-table render path against the plain float pipeline, bit for bit.

``render_array`` / ``render`` push an integer frame's stored range through the
pipeline once and index the resulting uint8 table. Every output value must
equal what the straightforward float pipeline gives; the reference below is a
verbatim copy of that pipeline (nested np.where, float64 round-half-up), kept
here so the faster in-place implementations are checked against it too.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from core.imaging import display, loader
from core.imaging.display import (
    LUT_MAX_ENTRIES,
    DisplayParams,
    Lut,
    apply_table,
    apply_window,
    display_float,
    display_table,
    render_array,
    table_range,
    to_uint8,
)
from core.types import WindowPreset
from tests.conftest import shared_path
from tests.core.dicom_factory import write_dicom

# SIGMOID at far-away values overflows exp to inf (giving exactly 0), as it always has.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")

# ---------------------------------------------------------------- the reference float pipeline


def _ref_modality(arr, params):
    if params.modality_lut is not None:
        return params.modality_lut.lookup(arr)
    out = np.asarray(arr, dtype=np.float32)
    if params.rescale_slope != 1.0 or params.rescale_intercept != 0.0:
        out = out * np.float32(params.rescale_slope) + np.float32(params.rescale_intercept)
    return out.astype(np.float32, copy=False)


def _ref_window(x, center, width, function="LINEAR"):
    x = np.asarray(x, dtype=np.float64)
    c, w = float(center), float(width)
    if function == "SIGMOID":
        y = 1.0 / (1.0 + np.exp(-4.0 * (x - c) / w))
    elif function == "LINEAR_EXACT":
        y = np.clip((x - c) / w + 0.5, 0.0, 1.0)
        y = np.where(x <= c - w / 2, 0.0, np.where(x > c + w / 2, 1.0, y))
    else:
        lo, hi = c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2
        if w == 1:
            y = (x > lo).astype(np.float64)
        else:
            y = np.where(x <= lo, 0.0, np.where(x > hi, 1.0, (x - (c - 0.5)) / (w - 1) + 0.5))
    return y.astype(np.float32)


def _ref_full_range(x):
    lo, hi = float(np.min(x)), float(np.max(x))
    if hi <= lo:
        return np.zeros(x.shape, dtype=np.float32)
    return ((x.astype(np.float64) - lo) / (hi - lo)).astype(np.float32)


def _ref_voi(x, params, window, voi_index):
    if window is not None:
        return _ref_window(x, window[0], window[1], params.voi_lut_function)
    n_luts = len(params.voi_luts)
    if n_luts + len(params.windows) == 0:
        return _ref_full_range(x)
    if voi_index < n_luts:
        lut = params.voi_luts[voi_index]
        return (lut.lookup(x) / np.float32(2**lut.bits - 1)).clip(0, 1).astype(np.float32)
    preset = params.windows[voi_index - n_luts]
    return _ref_window(x, preset.center, preset.width, params.voi_lut_function)


def _ref_to_uint8(x01):
    x = np.clip(np.asarray(x01, dtype=np.float64), 0.0, 1.0)
    return np.floor(x * 255.0 + 0.5).astype(np.uint8)


def _reference(raw, params, window=None, voi_index=0):
    y = _ref_voi(_ref_modality(raw, params), params, window, voi_index)
    if params.inverted:
        y = (np.float32(1.0) - y).astype(np.float32)
    return _ref_to_uint8(y)


def _lut(first: int, bits: int, data, name: str = "") -> Lut:
    return Lut(first_mapped=first, bits=bits, data=np.asarray(data, dtype=np.float32), explanation=name)


def _assert_table_path_exact(raw, params, window=None, voi_index=0):
    expected = _reference(raw, params, window, voi_index)
    table = display_table(raw, params, window=window, voi_index=voi_index)
    assert table is not None, "an integer grayscale frame must take the table path"
    got = apply_table(raw, *table)
    assert got.dtype == np.uint8 and got.shape == raw.shape
    assert np.array_equal(got, expected)
    assert np.array_equal(render_array(raw, params, window=window, voi_index=voi_index), expected)
    # the (optimised) float path must agree as well
    assert np.array_equal(to_uint8(display_float(raw, params, window=window, voi_index=voi_index)), expected)


# ---------------------------------------------------------------- synthetic frames

_RNG = np.random.default_rng(1234)
FRAMES = {
    "u16_12bit": _RNG.integers(0, 4096, size=(64, 80)).astype(np.uint16),
    "u16_offset": _RNG.integers(30000, 33000, size=(50, 50)).astype(np.uint16),
    "u16_full": np.arange(65536, dtype=np.uint16).reshape(256, 256),
    "i16_signed": _RNG.integers(-2048, 2048, size=(64, 64)).astype(np.int16),
    "i16_wide": np.concatenate([np.arange(-32768, 32768, 7), [32767]]).astype(np.int16).reshape(-1, 1),
    "u8": _RNG.integers(0, 256, size=(40, 40)).astype(np.uint8),
    "i8": _RNG.integers(-128, 128, size=(40, 40)).astype(np.int8),
    "i32_small": _RNG.integers(-70000, -60000, size=(30, 30)).astype(np.int32),
    "u16_big_endian": _RNG.integers(0, 1024, size=(20, 30)).astype(">u2"),
    "u16_strided": _RNG.integers(0, 1024, size=(40, 60)).astype(np.uint16)[::2, ::3],
    "constant": np.full((8, 8), 77, dtype=np.uint16),
}

RESCALES = [(1.0, 0.0), (2.0, -100.0), (0.5, -1024.25), (-1.0, 3.0), (1.0, -1024.0), (0.001, 0.3)]


def _windows_for(raw, slope, intercept):
    lo, hi = float(raw.min()) * slope + intercept, float(raw.max()) * slope + intercept
    lo, hi = min(lo, hi), max(lo, hi)
    mid, span = (lo + hi) / 2, max(hi - lo, 2.0)
    return [
        (mid, span / 3),
        (mid + 0.5, 1.0),  # LINEAR threshold; a boundary exactly on integers
        (round(mid), 2.0),
        (mid + 0.25, 10.5),
        (lo, span * 4),
        (hi + 100, 50.0),
        (mid, 0.5),  # invalid for LINEAR (must raise), valid otherwise
    ]


@pytest.mark.parametrize("name", sorted(FRAMES))
@pytest.mark.parametrize("slope,intercept", RESCALES)
@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_table_equals_float_pipeline_windows_and_rescale(name, slope, intercept, function, photometric):
    raw = FRAMES[name]
    windows = _windows_for(raw, slope, intercept)
    presets = tuple(WindowPreset(center=c, width=w, name="") for c, w in windows if w >= 1)
    params = DisplayParams(
        photometric=photometric,
        bits_stored=8 * raw.dtype.itemsize,
        pixel_representation=int(raw.dtype.kind == "i"),
        rescale_slope=slope,
        rescale_intercept=intercept,
        windows=presets,
        voi_lut_function=function,
    )
    _assert_table_path_exact(raw, params)  # voi_index 0: the first header window
    for i in range(len(presets)):
        _assert_table_path_exact(raw, params, voi_index=i)
    for window in windows:
        if function == "LINEAR" and window[1] < 1:
            with pytest.raises(ValueError):
                display_table(raw, params, window=window)
            continue
        _assert_table_path_exact(raw, params, window=window)
    # full range (no VOI in the header)
    _assert_table_path_exact(raw, dataclasses.replace(params, windows=()))


@pytest.mark.parametrize("name", ["u16_12bit", "i16_signed", "u8", "u16_offset"])
@pytest.mark.parametrize("inverse", [False, True])
def test_table_equals_float_pipeline_voi_lut_and_modality_lut(name, inverse):
    raw = FRAMES[name]
    lo, hi = int(raw.min()), int(raw.max())
    rng = np.random.default_rng(7)
    # VOI LUTs: one starting inside the range (clamps below), one short (clamps above), 8-bit and 16-bit
    voi_a = _lut(lo + (hi - lo) // 4, 12, np.sort(rng.integers(0, 4096, size=(hi - lo) // 2 + 1)))
    voi_b = _lut(lo - 10, 8, rng.integers(0, 256, size=50), "B")
    # a non-monotonic Modality LUT whose extremes sit outside the stored range
    mlut = _lut(lo - 5, 16, rng.integers(100, 60000, size=hi - lo + 11))
    base = DisplayParams(
        bits_stored=16,
        pixel_representation=int(raw.dtype.kind == "i"),
        voi_luts=(voi_a, voi_b),
        windows=(WindowPreset(center=(lo + hi) / 2, width=(hi - lo) / 5 + 1, name="W"),),
        presentation_lut_shape="INVERSE" if inverse else "",
    )
    for params in (base, dataclasses.replace(base, modality_lut=mlut)):
        for i in range(3):
            _assert_table_path_exact(raw, params, voi_index=i)
        _assert_table_path_exact(raw, params, window=(30000.0, 20000.0))
        _assert_table_path_exact(raw, dataclasses.replace(params, voi_luts=(), windows=()))


def test_full_range_counts_only_modality_values_present_in_the_frame():
    # stored 10..12 present; the LUT maps 11 (absent) to the extreme 60000
    raw = np.array([[10, 12], [12, 10]], dtype=np.uint16)
    params = DisplayParams(modality_lut=_lut(10, 16, [100, 60000, 200]))
    _assert_table_path_exact(raw, params)
    assert render_array(raw, params).tolist() == [[0, 255], [255, 0]]
    raw2 = np.array([[10, 11], [12, 10]], dtype=np.uint16)
    _assert_table_path_exact(raw2, params)


def test_voi_errors_still_raised_on_the_table_path():
    raw = FRAMES["u16_12bit"]
    params = DisplayParams(windows=(WindowPreset(center=100, width=50, name=""),))
    with pytest.raises(ValueError):
        render_array(raw, params, voi_index=1)
    with pytest.raises(ValueError):
        render_array(raw, params, window=(100, 0.5))
    with pytest.raises(ValueError):
        render_array(raw, DisplayParams(), voi_index=2)


def test_float_colour_and_huge_ranges_keep_the_float_path():
    params = DisplayParams()
    floats = np.linspace(-3.0, 900.0, 600, dtype=np.float32).reshape(20, 30)
    assert table_range(floats, params) is None
    assert np.array_equal(render_array(floats, params, window=(400, 300)), _reference(floats, params, (400, 300)))
    assert np.array_equal(render_array(floats, params), _reference(floats, params))
    wide = np.array([[0, LUT_MAX_ENTRIES]], dtype=np.int32)
    assert table_range(wide, params) is None
    assert np.array_equal(render_array(wide, params), _reference(wide, params))
    edge = np.array([[5, 5 + LUT_MAX_ENTRIES - 1]], dtype=np.int32)
    assert table_range(edge, params) == (5, 5 + LUT_MAX_ENTRIES - 1)
    _assert_table_path_exact(edge, params)
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    assert table_range(rgb, DisplayParams(photometric="RGB", samples_per_pixel=3)) is None
    assert table_range(np.array([[True, False]]), params) is None


def test_to_uint8_matches_float64_round_half_up_at_every_boundary():
    xs = []
    for k in range(1, 256):
        b = np.float32((k - 0.5) / 255).view(np.int32)
        xs.append((b + np.arange(-64, 64, dtype=np.int32)).view(np.float32))
    x32 = np.concatenate(xs + [np.array([-1e30, -0.0, 0.0, 0.5, 1.0, 1.5, 1e30, np.inf, -np.inf], np.float32)])
    assert np.array_equal(to_uint8(x32), _ref_to_uint8(x32))
    x64 = np.concatenate([x32.astype(np.float64), np.random.default_rng(3).uniform(-0.2, 1.2, 10000)])
    assert np.array_equal(to_uint8(x64), _ref_to_uint8(x64))
    ints = np.array([-1, 0, 1, 2], dtype=np.int16)
    assert np.array_equal(to_uint8(ints), _ref_to_uint8(ints))
    before = x32.copy()
    to_uint8(x32)
    assert np.array_equal(x32, before)  # the input is not modified in place


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_in_place_window_matches_reference_on_floats(function):
    x = np.random.default_rng(5).uniform(-500, 1500, 20000).astype(np.float32)
    x[:7] = [np.nan, np.inf, -np.inf, 99.5, 100.0, 100.5, 149.5]
    for c, w in [(100, 1), (100, 2), (149.5, 100.25), (0.3, 1000.0)]:
        got, want = apply_window(x, c, w, function), _ref_window(x, c, w, function)
        assert got.dtype == np.float32
        assert np.array_equal(got, want, equal_nan=True)
    x64 = x.astype(np.float64)
    before = x64.copy()
    apply_window(x64, 100, 50, function)
    assert np.array_equal(x64, before, equal_nan=True)  # the input is not modified in place


# ---------------------------------------------------------------- loader: cached tables


def test_render_caches_tables_per_window_and_matches_reference(tmp_path):
    raw = FRAMES["u16_12bit"]
    path = write_dicom(tmp_path / "a.dcm", raw, slope=2, intercept=-100, windows=[(3000, 2000, "A"), (500, 300, "B")])
    loader.clear_cache()
    _, dec, params = loader._decoded(path, 0)
    first = loader.render(path)
    assert np.array_equal(first, _reference(dec, params))
    n = len(loader._TABLES)
    again = loader.render(path)
    assert len(loader._TABLES) == n and np.array_equal(again, first)
    assert again is not first and again.flags.writeable
    again[:] = 0  # the caller's copy; the cached table must not change
    assert np.array_equal(loader.render(path), first)
    for window in [(1000.0, 400.0), (1000, 400), (2000.5, 1.0)]:
        assert np.array_equal(loader.render(path, window=window), _reference(dec, params, window))
    assert np.array_equal(loader.render(path, voi_index=1), _reference(dec, params, voi_index=1))
    with pytest.raises(ValueError):
        loader.render(path, voi_index=2)
    with pytest.raises(ValueError):
        loader.render(path, window=(100, 0))
    with pytest.raises(TypeError):
        loader.render(path, voi_index=1.0)  # not served the cached voi_index=1 table
    loader.clear_cache()
    assert not loader._TABLES and not loader._RANGES


def test_rewritten_file_is_not_served_a_stale_table(tmp_path):
    path = tmp_path / "a.dcm"
    write_dicom(path, FRAMES["u16_12bit"], windows=[(2000, 1000, "")])
    old = loader.render(path)
    st = os.stat(path)
    write_dicom(path, FRAMES["u16_12bit"][::-1].copy(), windows=[(2000, 1000, "")])
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert np.array_equal(loader.render(path), old[::-1])


def test_table_cache_stays_bounded(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", FRAMES["u16_12bit"], windows=[(2000, 1000, "")])
    for i in range(loader.TABLE_CACHE_SIZE * 2):
        loader.render(path, window=(1000 + i, 500))
    assert len(loader._TABLES) <= loader.TABLE_CACHE_SIZE


# ---------------------------------------------------------------- every real file


def _real_files():
    folder = shared_path("dicom")
    return sorted(p for p in folder.iterdir() if p.is_file())


def test_every_real_file_table_render_equals_float_pipeline():
    for path in _real_files():
        loader.clear_cache()
        _, raw, params = loader._decoded(path, 0)
        assert params is not None
        if table_range(raw, params) is None:
            assert np.array_equal(loader.render(path), _reference(raw, params)), path.name
            continue
        lo, hi = float(raw.min()), float(raw.max())
        n_choices = len(params.voi_luts) + len(params.windows)
        for voi_index in range(max(n_choices, 1)):
            want = _reference(raw, params, voi_index=voi_index)
            assert np.array_equal(loader.render(path, voi_index=voi_index), want), (path.name, voi_index)
            assert np.array_equal(loader.render(path, voi_index=voi_index), want), (path.name, "cached")
        windows = [
            ((lo + hi) / 2, (hi - lo) / 3 + 1),
            (lo + (hi - lo) * 0.37 + 0.5, 1.0),
            (lo + (hi - lo) * 0.61 + 0.25, 2.5),
            (hi, (hi - lo) * 2 + 1),
        ]
        for window in windows:
            want = _reference(raw, params, window=window)
            assert np.array_equal(loader.render(path, window=window), want), (path.name, window)
        for function in ("LINEAR_EXACT", "SIGMOID"):
            other = dataclasses.replace(params, voi_lut_function=function)
            for window in windows:
                _assert_table_path_exact(raw, other, window=window)
        _assert_table_path_exact(raw, dataclasses.replace(params, voi_luts=(), windows=()))
        inverted = dataclasses.replace(params, presentation_lut_shape="INVERSE", photometric="MONOCHROME2")
        _assert_table_path_exact(raw, inverted, window=windows[0])


def test_real_files_take_the_table_path():
    names = {p.name for p in _real_files()}
    for name in ("RG1_JLSN.dcm", "RG2_JPLL.dcm", "RG3_UNC.dcm", "CR-MONO1-10-chest.dcm", "mlut_18.dcm"):
        if name not in names:
            continue
        _, raw, params = loader._decoded(shared_path("dicom", name), 0)
        assert table_range(raw, params) is not None, name


def test_display_module_exports():
    assert display.apply_table is apply_table and callable(display.display_table)
