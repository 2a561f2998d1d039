"""Photographs through Pillow: identity, EXIF orientation, bit depths, pages, broken files."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from core.errors import ImageReadError
from core.imaging import frame_count, model_input, read_image_header, render
from core.imaging.photo import decode_photo
from core.types import PHOTO_MODALITY


def test_png_header_record(tmp_path):
    folder = tmp_path / "lesions"
    folder.mkdir()
    path = folder / "a.png"
    Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4) * 20).save(path)
    rec = read_image_header(path)
    assert rec.key == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert rec.kind == "photo" and rec.modality == PHOTO_MODALITY
    assert (rec.rows, rec.columns, rec.frames) == (3, 4, 1)
    assert rec.photometric == "MONOCHROME2" and rec.samples_per_pixel == 1
    assert rec.study_uid == "folder:" + hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:16]
    assert rec.study_description == "lesions" and rec.patient_id is None
    assert render(path).tolist() == (np.arange(12).reshape(3, 4) * 20).tolist()  # grayscale stays 2-D


def test_jpeg_exif_orientation_applied(tmp_path):
    # Stored 16 rows x 32 columns with a red block top-left; orientation 6 = rotate 90 deg clockwise.
    arr = np.zeros((16, 32, 3), np.uint8)
    arr[:8, :8] = (255, 0, 0)
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6
    path = tmp_path / "r.jpg"
    im.save(path, quality=95, exif=exif.tobytes())
    rec = read_image_header(path)
    assert (rec.rows, rec.columns) == (32, 16) and rec.photometric == "RGB"
    img = render(path)
    assert img.shape == (32, 16, 3) and img.dtype == np.uint8
    block = img[:8, 8:].reshape(-1, 3).mean(axis=0)  # top-left went to top-right
    assert block[0] > 200 and block[1] < 60


def test_16bit_png_min_max(tmp_path):
    arr = np.array([[1000, 2000], [3000, 5000]], dtype=np.uint16)
    path = tmp_path / "d.png"
    Image.fromarray(arr).save(path)
    assert read_image_header(path).bits_stored == 16
    assert decode_photo(path).dtype == np.uint16
    # (v - 1000) / 4000 = 0, .25, .5, 1 -> 0, 63.75 -> 64, 127.5 -> 128, 255
    assert render(path).tolist() == [[0, 64], [128, 255]]
    x = model_input(path)
    assert x.dtype == np.float32 and x.tolist() == [[0.0, 0.25], [0.5, 1.0]]


def test_rgba_and_palette_become_rgb(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 1] = 200
    Image.fromarray(rgba).save(tmp_path / "a.png")
    Image.fromarray(np.full((2, 2, 3), 90, np.uint8)).convert("P").save(tmp_path / "p.png")
    assert render(tmp_path / "a.png").shape == (2, 2, 3)
    assert render(tmp_path / "a.png")[0, 0].tolist() == [0, 200, 0]
    assert render(tmp_path / "p.png").shape == (2, 2, 3)


def test_multipage_tiff_frames(tmp_path):
    pages = [Image.fromarray(np.full((4, 5), v, np.uint8)) for v in (10, 20, 30)]
    path = tmp_path / "m.tif"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    assert frame_count(path) == 3 and read_image_header(path).frames == 3
    assert [int(render(path, frame=i)[0, 0]) for i in range(3)] == [10, 20, 30]
    assert render(path)[0, 0] == 10
    with pytest.raises(ImageReadError, match="frame 3 does not exist"):
        render(path, frame=3)


def test_model_input_photo_resized(tmp_path):
    arr = np.zeros((40, 60, 3), np.uint8)
    arr[:, :30] = 255
    path = tmp_path / "h.png"
    Image.fromarray(arr).save(path)
    x = model_input(path, size=10)
    assert x.shape == (10, 10, 3) and x.dtype == np.float32
    assert np.allclose(x[:, :4], 1.0) and np.allclose(x[:, 6:], 0.0)
    assert 0.0 < x[0, 5, 0] < 1.0 or 0.0 < x[0, 4, 0] < 1.0  # the edge is averaged, not aliased


@pytest.mark.parametrize("suffix, fmt", [(".png", "PNG"), (".jpg", "JPEG")])
def test_truncated_photo(tmp_path, suffix, fmt):
    rng = np.random.default_rng(0)
    path = tmp_path / f"t{suffix}"
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path, format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="truncated"):
        read_image_header(path)
    with pytest.raises(ImageReadError, match="truncated|corrupt"):
        render(path)


def test_corrupt_photo_header(tmp_path):
    path = tmp_path / "c.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(ImageReadError):
        read_image_header(path)
