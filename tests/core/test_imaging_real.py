"""The real DICOM files in ../shared/data/dicom (skipped when that folder is absent)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from core.imaging import decode_frame, model_input, read_image_header, render, scan_paths
from core.imaging.display import apply_modality_lut, apply_voi
from tests.conftest import shared_path

CHESTS = ["NIH_DX_chest_*.dcm", "SIIM_CR_chest_positive_sample.dcm", "CR-MONO1-10-chest.dcm", "RG1_JLSN.dcm"]


def _one(pattern: str):
    matches = sorted(shared_path("dicom").glob(pattern))
    assert matches, f"{pattern} missing from the shared data"
    return matches[0]


def test_every_shared_file_renders(shared_dicom_dir):
    files = sorted(shared_dicom_dir.glob("*.dcm"))
    assert len(files) == 10
    for path in files:
        rec = read_image_header(path)
        img = render(path)
        assert img.dtype == np.uint8 and img.shape[:2] == (rec.rows, rec.columns), path.name
        assert img.std() > 10, f"{path.name} renders nearly flat"


def test_scan_of_shared_folder_is_clean(shared_dicom_dir):
    result = scan_paths([shared_dicom_dir])
    assert result.errors == []
    assert len(result.records) == 10
    assert len({r.key for r in result.records}) == 10


def test_rg3_three_encodings_render_identically():
    a, b, c = (render(_one(f"RG3_{kind}.dcm")) for kind in ("JPLL", "RLE", "UNC"))
    assert np.array_equal(a, b) and np.array_equal(a, c)


@pytest.mark.parametrize("pattern", CHESTS)
def test_chest_lungs_dark_spine_bright(pattern):
    img = render(_one(pattern)).astype(np.float64)
    h, w = img.shape
    rows = slice(int(h * 0.35), int(h * 0.55))
    centre = img[rows, int(w * 0.46) : int(w * 0.54)].mean()
    left = img[rows, int(w * 0.18) : int(w * 0.32)].mean()
    right = img[rows, int(w * 0.68) : int(w * 0.82)].mean()
    assert centre > left + 30 and centre > right + 30, (pattern, centre, left, right)


def test_cr_mono1_without_preamble_reads():
    path = _one("CR-MONO1-10-chest.dcm")
    assert path.read_bytes()[128:132] != b"DICM"
    rec = read_image_header(path)
    assert rec.photometric == "MONOCHROME1" and rec.transfer_syntax == "1.2.840.10008.1.2"
    assert (rec.rows, rec.columns) == (440, 440) and rec.key


def test_vlut_04_uses_its_voi_lut_not_min_max():
    path = _one("vlut_04.dcm")
    raw, params = decode_frame(path)
    assert len(params.voi_luts) == 1 and params.windows == ()
    lut = params.voi_luts[0]
    # The LUT maps v -> 257 v (16 bits), so the display equals the stored 8-bit value.
    expected = np.floor(lut.data[raw.astype(int) - lut.first_mapped] / 65535 * 255 + 0.5)
    assert np.array_equal(render(path), expected.astype(np.uint8))
    # On pixels whose values do not span 0..255, min/max would stretch; the LUT does not.
    crop = raw[(raw > 50) & (raw < 200)].astype(np.float64)
    assert crop.size > 100
    x = apply_voi(apply_modality_lut(crop, params), params)
    assert np.allclose(x, crop / 255.0, atol=1e-6)
    assert not np.allclose(x, (crop - crop.min()) / np.ptp(crop), atol=0.01)


def test_mlut_18_uses_its_modality_lut():
    path = _one("mlut_18.dcm")
    raw, params = decode_frame(path)
    assert params.modality_lut is not None and params.modality_lut.first_mapped == -2048
    ds = pydicom.dcmread(path)
    data = np.asarray(ds.ModalityLUTSequence[0].LUTData)
    modality = apply_modality_lut(raw, params)
    assert np.array_equal(modality, data[raw.astype(int) + 2048].astype(np.float32))
    assert modality.min() >= 0 and raw.min() < 0  # signed stored values became LUT output


def test_model_input_of_real_radiograph_keeps_precision():
    path = _one("RG3_UNC.dcm")
    x = model_input(path)
    assert x.dtype == np.float32 and x.shape == (1760, 1760)
    assert len(np.unique(x)) > 256
    assert model_input(path, size=224).shape == (224, 224)
