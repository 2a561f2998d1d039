"""The display pipeline against values computed by hand (PS3.3 C.11 formulas)."""

from __future__ import annotations

import numpy as np
import pytest

from core.imaging import decode_frame, render
from core.imaging.display import (
    DisplayParams,
    Lut,
    apply_modality_lut,
    apply_voi,
    apply_window,
    render_array,
    to_uint8,
    voi_choices,
)
from core.types import WindowPreset
from tests.core.dicom_factory import write_dicom

# Stored values; with slope 2 / intercept -100 they become 100, 120, ... 200.
RAW = np.array([[100, 110, 120], [130, 140, 150]], dtype=np.uint16)


def _lut(first: int, bits: int, data: list[int], name: str = "") -> Lut:
    return Lut(first_mapped=first, bits=bits, data=np.asarray(data, dtype=np.float32), explanation=name)


def test_rescale_then_linear_window_by_hand(tmp_path):
    # modality = 2*raw - 100 = [[100,120,140],[160,180,200]]
    # LINEAR, c=150, w=101: y = (x - 149.5)/100 + 0.5 inside (99.5, 199.5]
    #   100 -> .005 -> 1.275 -> 1 ; 120 -> .205 -> 52 ; 140 -> .405 -> 103
    #   160 -> .605 -> 154 ; 180 -> .805 -> 205 ; 200 > 199.5 -> 255
    path = write_dicom(tmp_path / "a.dcm", RAW, slope=2, intercept=-100, windows=[(150, 101, "SOFT")])
    expected = np.array([[1, 52, 103], [154, 205, 255]], dtype=np.uint8)
    assert render(path).tolist() == expected.tolist()
    raw, params = decode_frame(path)
    assert apply_modality_lut(raw, params).tolist() == [[100, 120, 140], [160, 180, 200]]
    assert apply_modality_lut(raw, params).dtype == np.float32


@pytest.mark.parametrize(
    "photometric, shape",
    [("MONOCHROME1", None), ("MONOCHROME1", "INVERSE"), ("MONOCHROME2", "INVERSE"), ("MONOCHROME1", "IDENTITY")],
)
def test_inversion_happens_exactly_once(tmp_path, photometric, shape):
    # 1 - y of the previous test: .995 -> 254, .795 -> 203, .595 -> 152, .395 -> 101, .195 -> 50, 0 -> 0
    path = write_dicom(
        tmp_path / "m1.dcm", RAW, photometric=photometric, slope=2, intercept=-100,
        windows=[(150, 101, "")], presentation_lut_shape=shape,
    )
    assert render(path).tolist() == [[254, 203, 152], [101, 50, 0]]


def test_monochrome2_identity_is_not_inverted(tmp_path):
    path = write_dicom(tmp_path / "m2.dcm", RAW, slope=2, intercept=-100, windows=[(150, 101, "")],
                       presentation_lut_shape="IDENTITY")
    assert render(path).tolist() == [[1, 52, 103], [154, 205, 255]]


def test_linear_exact_and_sigmoid_formulas():
    x = np.array([[100, 120, 140], [160, 180, 200]], dtype=np.float32)
    # LINEAR_EXACT c=150 w=100: 0 at x <= 100, else (x-150)/100 + .5
    exact = to_uint8(apply_window(x, 150, 100, "LINEAR_EXACT"))
    assert exact.tolist() == [[0, 51, 102], [153, 204, 255]]
    # SIGMOID c=150 w=100: 1/(1+exp(-4(x-150)/100)): .1192 .2315 .4013 .5987 .7685 .8808
    sig = to_uint8(apply_window(x, 150, 100, "SIGMOID"))
    assert sig.tolist() == [[30, 59, 102], [153, 196, 225]]


def test_linear_width_one_is_a_threshold_and_bad_widths_raise():
    x = np.array([9, 9.5, 10, 11], dtype=np.float32)
    assert apply_window(x, 10, 1).tolist() == [0, 0, 1, 1]  # threshold at c - 0.5
    with pytest.raises(ValueError):
        apply_window(x, 10, 0.5, "LINEAR")
    with pytest.raises(ValueError):
        apply_window(x, 10, 0, "SIGMOID")


def test_voi_lut_function_from_header(tmp_path):
    path = write_dicom(tmp_path / "e.dcm", RAW, slope=2, intercept=-100, windows=[(150, 100, "")],
                       voi_function="LINEAR_EXACT")
    assert render(path).tolist() == [[0, 51, 102], [153, 204, 255]]


def test_full_range_when_header_has_no_voi(tmp_path):
    # modality 100..200 -> (x - 100) / 100 -> 0 .2 .4 .6 .8 1
    path = write_dicom(tmp_path / "f.dcm", RAW, slope=2, intercept=-100)
    assert render(path).tolist() == [[0, 51, 102], [153, 204, 255]]


def test_voi_lut_sequence_wins_over_window(tmp_path):
    # LUT: first mapped 100, 4 entries, 8 bits: 99,100 -> 0 ; 101 -> 100 ; 102 -> 200 ; 103,104 -> 255
    raw = np.array([[99, 100, 101], [102, 103, 104]], dtype=np.uint16)
    path = write_dicom(tmp_path / "v.dcm", raw, windows=[(50, 10, "IGNORED")],
                       voi_luts=[([4, 100, 8], [0, 100, 200, 255], "LUT A")])
    assert render(path).tolist() == [[0, 0, 100], [200, 255, 255]]
    # voi_index 1 is the header's window (after the one LUT): everything above 54.5 -> 255
    assert render(path, voi_index=1).tolist() == [[255, 255, 255], [255, 255, 255]]
    with pytest.raises(ValueError):
        render(path, voi_index=2)


def test_explicit_window_overrides_voi_lut_and_header_window(tmp_path):
    path = write_dicom(tmp_path / "w.dcm", RAW, slope=2, intercept=-100, windows=[(0, 10, "")],
                       voi_luts=[([4, 0, 8], [0, 1, 2, 3], "")])
    assert render(path, window=(150, 101)).tolist() == [[1, 52, 103], [154, 205, 255]]


def test_voi_lut_bits_fixed_when_data_exceeds_descriptor():
    # Descriptor says 8 bits, data goes to 4095: normalise by 12 bits (as DCMTK does).
    params = DisplayParams(voi_luts=(_lut(0, 12, [0, 1365, 2730, 4095]),))
    out = to_uint8(apply_voi(np.array([0, 1, 2, 3]), params))
    assert out.tolist() == [0, 85, 170, 255]


def test_lut_descriptor_bits_corrected_when_parsed(tmp_path):
    raw = np.array([[0, 1, 2, 3]], dtype=np.uint16)
    path = write_dicom(tmp_path / "b.dcm", raw, voi_luts=[([4, 0, 8], [0, 1365, 2730, 4095], "")])
    _, params = decode_frame(path)
    assert params.voi_luts[0].bits == 12
    assert render(path).tolist() == [[0, 85, 170, 255]]


def test_lut_descriptor_zero_entries_means_65536(tmp_path):
    raw = np.array([[0, 32768, 65535]], dtype=np.uint16)
    path = write_dicom(tmp_path / "z.dcm", raw, voi_luts=[([0, 0, 16], np.arange(65536, dtype="<u2").tobytes(), "")])
    _, params = decode_frame(path)
    assert len(params.voi_luts[0].data) == 65536
    # 32768 / 65535 * 255 = 127.502 -> 128
    assert render(path).tolist() == [[0, 128, 255]]


def test_modality_lut_sequence_replaces_rescale(tmp_path):
    # LUT first mapped 10: 9,10 -> 1000 ; 11 -> 2000 ; 12 -> 3000 ; 13,14 -> 4000 (slope/intercept ignored)
    raw = np.array([[9, 10, 11], [12, 13, 14]], dtype=np.uint16)
    path = write_dicom(tmp_path / "ml.dcm", raw, slope=2, intercept=-100,
                       modality_lut=([4, 10, 16], [1000, 2000, 3000, 4000]))
    raw2, params = decode_frame(path)
    assert apply_modality_lut(raw2, params).tolist() == [[1000, 1000, 2000], [3000, 4000, 4000]]
    # full range 1000..4000 -> 0 0 1/3 2/3 1 1
    assert render(path).tolist() == [[0, 0, 85], [170, 255, 255]]


def test_signed_pixels_with_negative_first_mapped(tmp_path):
    raw = np.array([[-5, 0, 5]], dtype=np.int16)
    path = write_dicom(tmp_path / "s.dcm", raw, modality_lut=([11, -5, 16], list(range(0, 1100, 100))))
    raw2, params = decode_frame(path)
    assert params.modality_lut.first_mapped == -5
    assert apply_modality_lut(raw2, params).tolist() == [[0, 500, 1000]]
    assert render(path).tolist() == [[0, 128, 255]]


def test_all_window_presets_kept_with_names(tmp_path):
    windows = [(40, 400, "SOFT TISSUE"), (-600, 1500, "LUNG"), (300, 1500, "BONE")]
    path = write_dicom(tmp_path / "p.dcm", RAW, windows=windows)
    _, params = decode_frame(path)
    assert params.windows == tuple(WindowPreset(c, w, n) for c, w, n in windows)
    assert voi_choices(params) == ["SOFT TISSUE", "LUNG", "BONE"]
    assert not np.array_equal(render(path, voi_index=0), render(path, voi_index=1))


def test_rgb_stays_rgb_and_untouched(tmp_path):
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    path = write_dicom(tmp_path / "rgb.dcm", rgb, rgb=True, windows=[(5, 2, "")])
    out = render(path)
    assert out.shape == (2, 3, 3) and out.dtype == np.uint8
    assert np.array_equal(out, rgb)


def test_to_uint8_rounds_half_up_and_clips():
    assert to_uint8(np.array([-1.0, 0.0, 0.5 / 255, 1.49 / 255, 0.5, 1.0, 2.0])).tolist() == [0, 0, 1, 1, 128, 255, 255]


def test_render_array_on_params_only():
    params = DisplayParams(photometric="MONOCHROME1", rescale_slope=2, rescale_intercept=-100,
                           windows=(WindowPreset(150, 101),))
    assert render_array(RAW, params).tolist() == [[254, 203, 152], [101, 50, 0]]
    assert render_array(RAW, params).dtype == np.uint8
