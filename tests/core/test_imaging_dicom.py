"""DICOM reading on synthetic files: headers, frames, tolerant reading, plain-word errors."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.pixels import get_decoder

from core.errors import DicomReadError, UnsupportedTransferSyntax
from core.imaging import (
    check_decodable,
    check_transfer_syntax,
    decode_frame,
    frame_count,
    model_input,
    read_image_header,
    render,
    window_presets,
)
from core.imaging.dicom_io import transfer_syntax_name
from core.types import WindowPreset
from tests.core.dicom_factory import write_dicom

IMG = np.array([[0, 100, 200], [300, 400, 500]], dtype=np.uint16)


def test_header_record_fields(tmp_path):
    path = write_dicom(tmp_path / "h.dcm", IMG, sop_uid="1.2.3.4.5", modality="CR", patient_id="P42",
                       windows=[(250, 500, "DEFAULT"), (100, 50, "NARROW")], bits_stored=12)
    rec = read_image_header(path)
    assert rec.key == rec.sop_uid == "1.2.3.4.5"
    assert rec.kind == "dicom" and rec.modality == "CR" and rec.patient_id == "P42"
    assert (rec.rows, rec.columns, rec.frames, rec.samples_per_pixel) == (2, 3, 1, 1)
    assert rec.photometric == "MONOCHROME2" and rec.bits_stored == 12
    assert rec.transfer_syntax == "1.2.840.10008.1.2.1"
    assert rec.study_uid and rec.series_uid and rec.study_date == "20240102"
    assert rec.path == str(path.resolve())
    assert rec.window_presets == (WindowPreset(250, 500, "DEFAULT"), WindowPreset(100, 50, "NARROW"))
    assert window_presets(path) == rec.window_presets


def test_multiframe_every_frame_reachable_first_default(tmp_path):
    frames = np.stack([np.full((2, 3), v, dtype=np.uint16) for v in (10, 20, 30)])
    frames[:, 0, 0] = 0
    frames[:, 1, 2] = 40  # same full range in every frame
    path = write_dicom(tmp_path / "mf.dcm", frames)
    assert frame_count(path) == 3 and read_image_header(path).frames == 3
    for i, v in enumerate((10, 20, 30)):
        raw, _ = decode_frame(path, i)
        assert raw.shape == (2, 3) and raw[0, 1] == v
    assert np.array_equal(decode_frame(path)[0], decode_frame(path, 0)[0])
    # (v - 0) / 40 * 255: 10 -> 63.75 -> 64 ; 30 -> 191.25 -> 191
    assert render(path)[0, 1] == 64 and render(path, frame=2)[0, 1] == 191
    with pytest.raises(DicomReadError, match="frame 3 does not exist: the image has 3 frame"):
        decode_frame(path, 3)
    with pytest.raises(DicomReadError, match="does not exist"):
        render(path, frame=-1)


def test_no_preamble_no_file_meta_reads_as_implicit_le(tmp_path):
    path = write_dicom(tmp_path / "np.dcm", IMG, preamble=False)
    assert path.read_bytes()[128:132] != b"DICM"
    rec = read_image_header(path)
    assert rec.transfer_syntax == "1.2.840.10008.1.2"
    raw, _ = decode_frame(path)
    assert np.array_equal(raw, IMG)


def test_no_pixel_data_is_reported_plainly(tmp_path):
    path = write_dicom(tmp_path / "sr.dcm", pixel_data=False)
    with pytest.raises(DicomReadError, match=r"no pixel data \(a DICOM object without an image"):
        read_image_header(path)


def test_truncated_pixel_data(tmp_path):
    path = write_dicom(tmp_path / "t.dcm", np.zeros((64, 64), np.uint16), truncate=100)
    with pytest.raises(DicomReadError, match="file is truncated: the pixel data stops at"):
        read_image_header(path)
    with pytest.raises(DicomReadError, match="truncated"):
        render(path)


def test_unknown_transfer_syntax(tmp_path):
    path = write_dicom(tmp_path / "u.dcm", IMG, transfer_syntax="1.2.3.4.5.6.7")
    rec = read_image_header(path)  # the header itself is readable
    with pytest.raises(UnsupportedTransferSyntax, match=r"unknown transfer syntax 1\.2\.3\.4\.5\.6\.7: cannot decode its pixels"):
        check_transfer_syntax(rec.transfer_syntax)
    with pytest.raises(UnsupportedTransferSyntax):
        render(path)


def test_missing_decoder_names_syntax_and_remedy(tmp_path, monkeypatch):
    uid = "1.2.840.10008.1.2.4.51"
    decoder = get_decoder(uid)
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {"gdcm": ("gdcm>=3.0.10",)})
    with pytest.raises(UnsupportedTransferSyntax) as info:
        check_transfer_syntax(uid)
    assert str(info.value) == "JPEG Extended 12-bit: no decoder installed; install GDCM to read it"
    path = write_dicom(tmp_path / "j.dcm", IMG, transfer_syntax=uid, encapsulated=True)
    with pytest.raises(UnsupportedTransferSyntax, match="JPEG Extended 12-bit"):
        check_decodable(pydicom.dcmread(path, stop_before_pixels=True))


def test_known_syntaxes_decodable_here_and_named():
    for uid, name in [
        ("1.2.840.10008.1.2", "Implicit VR Little Endian"),
        ("1.2.840.10008.1.2.4.50", "JPEG Baseline"),
        ("1.2.840.10008.1.2.4.70", "JPEG Lossless (Process 14, SV1)"),
        ("1.2.840.10008.1.2.4.80", "JPEG-LS lossless"),
        ("1.2.840.10008.1.2.4.81", "JPEG-LS near-lossless"),
        ("1.2.840.10008.1.2.4.90", "JPEG 2000 (lossless)"),
        ("1.2.840.10008.1.2.5", "RLE Lossless"),
    ]:
        check_transfer_syntax(uid)
        assert transfer_syntax_name(uid).startswith(name)


def test_video_syntax_has_no_decoder():
    with pytest.raises(UnsupportedTransferSyntax, match="MPEG-4 AVC/H.264 video: cannot decode its pixels"):
        check_transfer_syntax("1.2.840.10008.1.2.4.102")


def test_model_input_is_float_not_quantised(tmp_path):
    ramp = np.arange(1024, dtype=np.uint16).reshape(32, 32)
    path = write_dicom(tmp_path / "r.dcm", ramp, photometric="MONOCHROME1", bits_stored=10)
    x = model_input(path)
    assert x.dtype == np.float32 and x.shape == (32, 32)
    assert len(np.unique(x)) == 1024  # not 256 levels
    assert x[0, 0] == pytest.approx(1.0) and x[-1, -1] == pytest.approx(0.0)  # inverted once
    assert np.array_equal(np.floor(x * 255 + 0.5).astype(np.uint8), render(path))
    small = model_input(path, size=8)
    assert small.shape == (8, 8) and small.dtype == np.float32
    assert 0.0 <= small.min() and small.max() <= 1.0
    # area-like averaging: each 4x4 block's mean, within interpolation tolerance
    assert small.mean() == pytest.approx(x.mean(), abs=0.01)


def test_model_input_rgb(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 255
    path = write_dicom(tmp_path / "c.dcm", rgb, rgb=True)
    x = model_input(path, size=2)
    assert x.shape == (2, 2, 3)
    assert np.allclose(x[..., 0], 1.0) and np.allclose(x[..., 1:], 0.0)
