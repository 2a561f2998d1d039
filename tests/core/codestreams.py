"""Small DICOM files in every transfer syntax Loupe decodes, for integrity tests, fuzzing and the soak.

Pixels are a 64 × 64 crop of a real radiograph from ``../shared/data`` when it
is there (a smooth synthetic image otherwise). Encoders: pydicom's (RLE,
JPEG-LS, JPEG 2000 through pyjpegls / pylibjpeg-openjpeg), Pillow's JPEG for
baseline, the same stream re-marked as SOF1 for JPEG Extended (process 2,
8-bit), and :func:`encode_jpeg_lossless` below for JPEG Lossless SV1, which no
installed library encodes. Every file is checked to decode to what was
encoded (exactly for lossless syntaxes) before it is used.
"""

from __future__ import annotations

import io
import logging
import struct
from pathlib import Path
from typing import Optional

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    UID,
    generate_uid,
)

from tests.conftest import SHARED_DATA

logger = logging.getLogger(__name__)

SIZE = 64
#: Transfer syntaxes covered, by short name.
SYNTAXES = {
    "native": ExplicitVRLittleEndian,
    "jpeg_baseline": JPEGBaseline8Bit,
    "jpeg_extended": JPEGExtended12Bit,
    "jpeg_lossless": JPEGLossless,
    "jpeg_lossless_sv1": JPEGLosslessSV1,
    "jpegls": JPEGLSLossless,
    "jpegls_near": JPEGLSNearLossless,
    "j2k": JPEG2000Lossless,
    "j2k_lossy": JPEG2000,
    "rle": RLELossless,
}
LOSSLESS = {"native", "jpeg_lossless", "jpeg_lossless_sv1", "jpegls", "j2k", "rle"}
EIGHT_BIT = {"jpeg_baseline", "jpeg_extended"}


def base_pixels(frames: int = 1) -> np.ndarray:
    """(frames, 64, 64) uint16 12-bit pixels: crops of a real radiograph, else a smooth synthetic image."""
    src = SHARED_DATA / "dicom" / "RG3_UNC.dcm"
    if src.is_file():
        import pydicom

        arr = pydicom.dcmread(src).pixel_array.astype(np.int64)
        out = []
        for f in range(frames):
            y, x = 600 + 97 * f, 500 + 61 * f
            crop = arr[y:y + SIZE * 4:4, x:x + SIZE * 4:4]
            out.append(crop)
        stack = np.stack(out)
        lo, hi = stack.min(), stack.max()
        return ((stack - lo) * 4000 // max(1, hi - lo)).astype(np.uint16)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    rng = np.random.default_rng(3)
    return np.stack([(1500 + 900 * np.sin(xx / (7 + f)) + 700 * np.cos(yy / 9) + rng.integers(0, 60, (SIZE, SIZE)))
                     .astype(np.uint16) for f in range(frames)])


# --- JPEG Lossless (process 14, selection value 1) -------------------------------------------------------------

def encode_jpeg_lossless(frame: np.ndarray, precision: int) -> bytes:
    """A JPEG Lossless SV1 codestream (SOF3, first-order prediction) of a 2-D unsigned array."""
    rows, cols = frame.shape
    x = frame.astype(np.int64)
    pred = np.empty_like(x)
    pred[0, 0] = 1 << (precision - 1)
    pred[0, 1:] = x[0, :-1]
    pred[1:, 0] = x[:-1, 0]
    pred[1:, 1:] = x[1:, :-1]
    diff = (x - pred) % 65536
    diff = np.where(diff >= 32768, diff - 65536, diff)
    # Huffman table: the 17 categories, all with 5-bit codes 0..16 (canonical; never all ones).
    writer = _Bits()
    for d in diff.ravel().tolist():
        mag = abs(d)
        cat = 16 if d == 32768 else mag.bit_length()
        writer.put(cat, 5)
        if 0 < cat < 16:
            writer.put(d if d > 0 else d + (1 << cat) - 1, cat)
    data = writer.finish()
    dht = b"\x00" + bytes([0, 0, 0, 0, 17] + [0] * 11) + bytes(range(17))
    sof = struct.pack(">BHHB", precision, rows, cols, 1) + bytes([1, 0x11, 0])
    sos = bytes([1, 1, 0x00, 1, 0, 0])
    return (b"\xff\xd8" + _segment(0xC4, dht) + _segment(0xC3, sof) + _segment(0xDA, sos) + data + b"\xff\xd9")


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


class _Bits:
    def __init__(self) -> None:
        self.out = bytearray()
        self.acc = 0
        self.n = 0

    def put(self, value: int, bits: int) -> None:
        self.acc = (self.acc << bits) | (value & ((1 << bits) - 1))
        self.n += bits
        while self.n >= 8:
            self.n -= 8
            byte = (self.acc >> self.n) & 0xFF
            self.out.append(byte)
            if byte == 0xFF:
                self.out.append(0)
        self.acc &= (1 << self.n) - 1

    def finish(self) -> bytes:
        if self.n:
            self.put((1 << (8 - self.n)) - 1, 8 - self.n)
        return bytes(self.out)


def _pillow_jpeg(frame8: np.ndarray, extended: bool) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame8).save(buf, "JPEG", quality=92)
    data = bytearray(buf.getvalue())
    if extended:
        at = data.find(b"\xff\xc0")
        data[at + 1] = 0xC1  # SOF1: extended sequential, Huffman — process 2 at 8 bits
    return bytes(data)


# --- files ---------------------------------------------------------------------------------------------------

def _dataset(pixels: np.ndarray, bits: int) -> Dataset:
    frames = pixels.shape[0]
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "CODESTREAM"
    ds.PatientName = "Test^Codestream"
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape[1:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16 if bits > 8 else 8
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    return ds


def build(kind: str, frames: int = 1) -> Dataset:
    """A dataset of ``frames`` 64 × 64 frames in the transfer syntax named ``kind`` (a key of :data:`SYNTAXES`)."""
    tsyntax = SYNTAXES[kind]
    pixels = base_pixels(frames)
    if kind in EIGHT_BIT or kind == "jpegls_near":
        pass
    if kind in EIGHT_BIT:
        pixels = (pixels >> 4).astype(np.uint8)
        bits = 8
    else:
        bits = 12
    ds = _dataset(pixels, bits)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    arr = pixels if frames > 1 else pixels[0]
    if kind == "native":
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.PixelData = arr.tobytes()
        return ds
    if kind in ("rle", "jpegls", "jpegls_near", "j2k", "j2k_lossy"):
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.PixelData = arr.tobytes()
        kwargs = {"jls_error": 2} if kind == "jpegls_near" else ({"j2k_cr": [15]} if kind == "j2k_lossy" else {})
        ds.compress(tsyntax, arr, encoding_plugin="" if kind != "rle" else "pydicom", **kwargs)
        return ds
    if kind in EIGHT_BIT:
        streams = [_pillow_jpeg(f, kind == "jpeg_extended") for f in pixels]
        if kind == "jpeg_baseline":
            ds.PhotometricInterpretation = "MONOCHROME2"
    else:
        streams = [encode_jpeg_lossless(f, bits) for f in pixels]
    ds.file_meta.TransferSyntaxUID = UID(tsyntax)
    ds.PixelData = encapsulate(streams, has_bot=frames > 1)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return ds


def write(ds: Dataset, path: Path) -> Path:
    """Write ``ds`` as a DICOM file with preamble; returns the path."""
    ds.preamble = b"\x00" * 128
    ds.save_as(path, enforce_file_format=True)
    return path


_CACHE: dict[tuple[str, int], bytes] = {}


def file_bytes(kind: str, frames: int = 1) -> bytes:
    """The bytes of a file :func:`build` makes (cached per process; checked to decode correctly)."""
    key = (kind, frames)
    if key not in _CACHE:
        buf = io.BytesIO()
        ds = build(kind, frames)
        ds.preamble = b"\x00" * 128
        ds.save_as(buf, enforce_file_format=True)
        data = buf.getvalue()
        _verify(data, kind, frames)
        _CACHE[key] = data
    return _CACHE[key]


def _verify(data: bytes, kind: str, frames: int) -> None:
    import pydicom

    arr = pydicom.dcmread(io.BytesIO(data)).pixel_array
    want = base_pixels(frames)
    if kind in EIGHT_BIT:
        want = (want >> 4).astype(np.uint8)
    want = want if frames > 1 else want[0]
    if arr.shape != want.shape:
        raise AssertionError(f"{kind}: decodes to {arr.shape}, expected {want.shape}")
    err = np.abs(arr.astype(np.int64) - want.astype(np.int64)).max()
    if kind in LOSSLESS and err:
        raise AssertionError(f"{kind}: lossless encoding differs by {err}")
    if kind not in LOSSLESS and err > (40 if kind in EIGHT_BIT else 400):
        raise AssertionError(f"{kind}: lossy encoding differs by {err}")


def codestream_span(data: bytes) -> Optional[tuple[int, int]]:
    """(start, end) byte range of the encapsulated fragments' values' region in a file (None for native)."""
    at = data.rfind(b"\xe0\x7f\x10\x00")
    if at < 0 or data[at + 8:at + 12] != b"\xff\xff\xff\xff":
        return None
    return at + 12, len(data)
