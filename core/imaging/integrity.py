"""Is the pixel data whole? Checks at import and at display, so a damaged image is never shown as if it were whole.

Three levels, cheapest first:

1. **Length** (native pixel data): the element holds rows × columns × samples ×
   frames × bytes; a short one says how much of the image is there.
2. **Structure** (encapsulated pixel data, no decoding): the fragment items are
   complete and closed by the Sequence Delimiter, the Basic Offset Table agrees
   with the fragments, and each frame's codestream is closed by its end marker
   (JPEG / JPEG-LS EOI, JPEG 2000 EOC) or, for RLE, its segment offsets lie
   inside the frame.
3. **Trial decode** (optional, the caller decides; see :class:`IntegrityOptions`):
   every frame is decoded, any decoder warning or error or an image smaller than
   the header says is damage. JPEG-family decoders fill a cut-off entropy-coded
   segment silently (the rest of the image comes out black), so each such frame
   is decoded a second time with filler bytes put before its end marker: a
   complete codestream never reads them, a cut-off one does and decodes
   differently.

Every failure raises :class:`~core.errors.DamagedImageError` with a reason a
person understands. :func:`decode_guard` is the display side: it turns decoder
warnings and log errors raised while decoding into that same error.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Union

import numpy as np

from core.errors import DamagedImageError, DicomReadError, ImageReadError

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

#: Transfer syntaxes whose frames are JPEG-family codestreams (SOI ... EOI).
JPEG_FAMILY = frozenset({
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81",
} | {f"1.2.840.10008.1.2.4.{n}" for n in (52, 53, 54, 55, 56, 58, 59, 60, 61, 62, 63, 64, 65, 66)})
#: JPEG 2000 and HTJ2K (SOC ... EOC).
J2K_FAMILY = frozenset({"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.92",
                        "1.2.840.10008.1.2.4.93", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202",
                        "1.2.840.10008.1.2.4.203"})
RLE = "1.2.840.10008.1.2.5"
DEFLATED = "1.2.840.10008.1.2.1.99"

_ITEM = b"\xfe\xff\x00\xe0"
_DELIMITER = b"\xfe\xff\xdd\xe0"
_EOI = b"\xff\xd9"
#: Filler put before a JPEG-family end marker by the trial decode: no 0xFF (never a marker), mixed bits.
PROBE_FILLER = bytes([0x5A, 0xA5, 0x3C, 0xC3, 0x69, 0x96, 0x0F, 0xF0 & 0x7F]) * 16

CUT_OFF = "the file was cut off while copying"


@dataclass(frozen=True)
class IntegrityOptions:
    """What the import checks beyond the header.

    ``trial_decode``: decode every frame (on by default) for files up to
    ``trial_decode_limit`` bytes (larger files get the length and structure
    checks only, and are checked again when first displayed).
    """

    trial_decode: bool = True
    trial_decode_limit: int = 64 * 1024 * 1024

    def wants_trial(self, size: int) -> bool:
        """True when a file of ``size`` bytes gets a trial decode."""
        return self.trial_decode and size <= self.trial_decode_limit


DEFAULT_OPTIONS = IntegrityOptions()


def _percent(part: int, whole: int) -> str:
    if whole <= 0:
        return "0"
    value = 100.0 * part / whole
    return f"{value:.0f}" if value >= 1 or value == 0 else f"{value:.1f}"


def native_shortfall_reason(present: int, expected: int) -> str:
    """The reason for native pixel data holding ``present`` of ``expected`` bytes."""
    return (f"file is truncated: the pixel data stops at {_percent(present, expected)} % of the image "
            f"({CUT_OFF})")


@dataclass
class Encapsulated:
    """The fragment structure of encapsulated pixel data."""

    offsets: list[int]          # Basic Offset Table entries (may be empty)
    fragments: list[bytes]      # fragment values, in order
    fragment_starts: list[int]  # each fragment item's position relative to the first item after the table
    closed: bool                # the Sequence Delimiter was found


def read_encapsulated(buf: bytes) -> Encapsulated:
    """Parse encapsulated pixel data (the element's value, from its first item on).

    Returns the structure; raises :class:`DamagedImageError` when an item is
    cut off or a tag is not an item where one must be.
    """
    pos = 0
    items: list[tuple[int, bytes]] = []
    closed = False
    while pos + 8 <= len(buf):
        tag, length = buf[pos:pos + 4], struct.unpack("<I", buf[pos + 4:pos + 8])[0]
        if tag == _DELIMITER:
            closed = True
            break
        if tag != _ITEM:
            raise DamagedImageError("the compressed pixel data is damaged: its fragment list is broken "
                                    f"at byte {pos} (expected an item, found {tag.hex()})")
        if length == 0xFFFFFFFF:
            raise DamagedImageError("the compressed pixel data is damaged: a fragment has no length")
        end = pos + 8 + length
        if end > len(buf):
            which = "its frame offset table" if not items else f"its fragment {len(items)}"
            raise DamagedImageError(f"file is truncated: the compressed pixel data stops part-way, inside {which} "
                                    f"({CUT_OFF})")
        items.append((pos, buf[pos + 8:end]))
        pos = end
    if not items:
        raise DamagedImageError(f"file is truncated: the compressed pixel data is missing ({CUT_OFF})")
    if not closed:
        raise DamagedImageError(f"file is truncated: the compressed pixel data has no end marker "
                                f"(Sequence Delimiter), so later parts of the image may be missing ({CUT_OFF})")
    bot = items[0][1]
    if len(bot) % 4:
        raise DamagedImageError("the compressed pixel data is damaged: its frame offset table has a broken length")
    offsets = list(struct.unpack(f"<{len(bot) // 4}I", bot)) if bot else []
    first = items[1][0] if len(items) > 1 else pos
    return Encapsulated(offsets=offsets, fragments=[v for _, v in items[1:]],
                        fragment_starts=[p - first for p, _ in items[1:]], closed=closed)


def split_frames(enc: Encapsulated, frames: int, tsyntax: str) -> list[bytes]:
    """The codestream of each frame, using the Basic Offset Table when there is one.

    Raises :class:`DamagedImageError` when the table disagrees with the
    fragments or fewer frames are present than the header says.
    """
    if not enc.fragments:
        raise DamagedImageError(f"the compressed pixel data holds no image data ({CUT_OFF} or the file is damaged)")
    if enc.offsets:
        starts = enc.fragment_starts
        if len(enc.offsets) != frames:
            raise DamagedImageError(f"the compressed pixel data is damaged: its frame offset table lists "
                                    f"{len(enc.offsets)} frame(s) but the image has {frames}")
        if enc.offsets[0] != 0 or any(b <= a for a, b in zip(enc.offsets, enc.offsets[1:])) \
                or any(o not in starts for o in enc.offsets):
            raise DamagedImageError("the compressed pixel data is damaged: its frame offset table does not "
                                    "match the fragments")
        index = [starts.index(o) for o in enc.offsets] + [len(starts)]
        return [b"".join(enc.fragments[index[i]:index[i + 1]]) for i in range(frames)]
    if frames == 1:
        return [b"".join(enc.fragments)]
    if len(enc.fragments) == frames:
        return list(enc.fragments)
    # No table and more fragments than frames: a frame starts with its codestream's start marker.
    start = b"\xff\xd8" if tsyntax in JPEG_FAMILY else (b"\xff\x4f" if tsyntax in J2K_FAMILY else None)
    if start is None or len(enc.fragments) < frames:
        raise DamagedImageError(f"the compressed pixel data is incomplete: {len(enc.fragments)} fragment(s) for "
                                f"{frames} frames ({CUT_OFF} or the file is damaged)")
    out: list[bytearray] = []
    for frag in enc.fragments:
        if frag.startswith(start) or not out:
            out.append(bytearray(frag))
        else:
            out[-1] += frag
    if len(out) != frames:
        raise DamagedImageError(f"the compressed pixel data holds {len(out)} of its {frames} frames "
                                f"({CUT_OFF} or the file is damaged)")
    return [bytes(f) for f in out]


def _frame_label(index: int, frames: int) -> str:
    return f"frame {index + 1} of {frames}: " if frames > 1 else ""


def codestream_size(body: bytes, tsyntax: str) -> Optional[tuple[int, int, int]]:
    """(rows, columns, components) a JPEG / JPEG-LS / JPEG 2000 codestream's own header declares, or None."""
    if tsyntax in J2K_FAMILY:
        at = body.find(b"\xff\x51")
        if at < 0 or at + 40 > len(body):
            return None
        xsiz, ysiz, xo, yo = struct.unpack(">4I", body[at + 6:at + 22])
        comps = struct.unpack(">H", body[at + 38:at + 40])[0]
        return ysiz - yo, xsiz - xo, comps
    pos = 2
    while pos + 4 <= len(body) and body[pos] == 0xFF:
        marker = body[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        length = int.from_bytes(body[pos + 2:pos + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7):
            if pos + 10 > len(body):
                return None
            rows, cols = struct.unpack(">HH", body[pos + 5:pos + 9])
            return rows, cols, body[pos + 9]
        if marker == 0xDA or length < 2:
            return None
        pos += 2 + length
    return None


def check_codestream(frame: bytes, tsyntax: str, index: int = 0, frames: int = 1,
                     segments: Optional[int] = None, shape: Optional[tuple[int, int, int]] = None) -> None:
    """Check that one frame's codestream is closed: end marker present, RLE offsets inside the frame.

    ``segments`` is the number of RLE segments the image needs (samples ×
    bytes per sample); None skips that comparison. ``shape`` (rows, columns,
    samples from the DICOM header) must match what a JPEG or JPEG 2000
    codestream declares: a damaged size field would make the decoder build
    (and allocate) an image of another size; a height of 0 (size given later
    by a DNL marker, never used in DICOM) makes libjpeg grow its image without
    bound. Raises :class:`DamagedImageError`.
    """
    where = _frame_label(index, frames)
    body = frame.rstrip(b"\x00")  # a frame is padded to an even length (some writers pad more)
    if tsyntax in JPEG_FAMILY or tsyntax in J2K_FAMILY:
        jpeg = tsyntax in JPEG_FAMILY
        name = "JPEG" if jpeg else "JPEG 2000"
        soi_ok = body.startswith(b"\xff\xd8") if jpeg else (body.startswith(b"\xff\x4f\xff\x51")
                                                            or body[4:8] == b"jP  ")
        if not soi_ok:
            raise DamagedImageError(f"{where}the {name} image data is damaged: it does not start like a {name} image")
        if not body.endswith(_EOI):
            raise DamagedImageError(f"file is truncated: {where}the {name} image data stops before its end marker "
                                    f"({CUT_OFF} or the file is damaged)")
        if jpeg:
            problem = jpeg_marker_problem(body, jpeg_ls=tsyntax in ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"))
            if problem:
                raise DamagedImageError(f"{where}the JPEG image data is damaged: {problem}")
        if shape is not None:
            declared = codestream_size(body, tsyntax)
            if declared is None:
                raise DamagedImageError(f"{where}the {name} image data is damaged: its size header is missing")
            rows, cols, comps = declared
            if rows != shape[0] or cols != shape[1] or comps != shape[2]:  # 0 rows (DNL) included: see above
                raise DamagedImageError(f"{where}the {name} image data is damaged: it declares {cols}×{rows} pixels "
                                        f"with {comps} component(s) where the DICOM header says {shape[1]}×{shape[0]} "
                                        f"with {shape[2]}")
        return
    if tsyntax == RLE:
        if len(frame) < 64:
            raise DamagedImageError(f"file is truncated: {where}the RLE image data stops inside its header ({CUT_OFF})")
        header = struct.unpack("<16I", frame[:64])
        count, offsets = header[0], header[1:]
        if not 1 <= count <= 15 or offsets[0] != 64:
            raise DamagedImageError(f"{where}the RLE image data is damaged: its header is broken")
        used = offsets[:count]
        if any(b <= a for a, b in zip(used, used[1:])) or used[-1] >= len(frame):
            raise DamagedImageError(f"file is truncated: {where}the RLE image data stops before its last segment "
                                    f"({CUT_OFF} or the file is damaged)")
        if segments is not None and count != segments:
            raise DamagedImageError(f"{where}the RLE image data is damaged: it has {count} segment(s) where the "
                                    f"image needs {segments}")


#: Markers that stand alone (no length field): TEM, RSTn, SOI, EOI.
_STANDALONE = {0x01, *range(0xD0, 0xDA)}


def jpeg_marker_problem(body: bytes, jpeg_ls: bool = False) -> Optional[str]:
    """Walk a JPEG / JPEG-LS codestream's markers; returns what is wrong, or None when it is well formed.

    Segments must chain by their lengths from SOI; each scan's entropy-coded
    data may hold only stuffed bytes and restart markers; the first marker
    after the last scan must be the final EOI. A decoder meeting a stray
    marker mid-scan stops there and fills the rest of the image silently,
    which is why this is checked before any decode.
    """
    n = len(body)
    pos = 2
    scans = 0
    while pos + 4 <= n:
        if body[pos] != 0xFF:
            return f"a segment does not start with a marker at byte {pos}"
        marker = body[pos + 1]
        if marker == 0xFF:  # fill bytes before a marker
            pos += 1
            continue
        if marker == 0xD9:
            return "it ends before its image data" if scans == 0 else (
                None if pos + 2 == n else "data follows its end marker")
        if marker in _STANDALONE:
            pos += 2
            continue
        length = int.from_bytes(body[pos + 2:pos + 4], "big")
        if length < 2 or pos + 2 + length > n:
            return f"a segment length runs past the end of the data (byte {pos})"
        pos += 2 + length
        if marker != 0xDA:
            continue
        scans += 1
        # entropy-coded data: skip to the next real marker
        while True:
            at = body.find(b"\xff", pos)
            if at < 0 or at + 1 >= n:
                return "a scan runs to the end of the data without an end marker"
            nxt = body[at + 1]
            if (jpeg_ls and nxt < 0x80) or (not jpeg_ls and nxt == 0x00) or 0xD0 <= nxt <= 0xD7 or nxt == 0xFF:
                pos = at + (1 if nxt == 0xFF else 2)
                continue
            pos = at
            break
        nxt = body[pos + 1]
        if nxt == 0xD9:
            if pos + 2 != n:
                return "a broken marker ends its image data early"
            return None
        if nxt not in (0xC4, 0xDA, 0xDB, 0xDC, 0xDD, 0xF8, 0xF7) and not 0xE0 <= nxt <= 0xEF and nxt != 0xFE:
            return f"a broken marker (FF{nxt:02X}) interrupts its image data"
    return "it stops before its end marker"


def _fatal(exc: BaseException) -> bool:
    """True for exceptions that must pass (interrupts); decoder panics from Rust/C++ bindings are BaseException too."""
    return isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit))


# --- decoding under watch -------------------------------------------------------------------------------------

#: Loggers of the pixel decoders (not pydicom's header parser, whose complaints about odd values are no damage).
_DECODER_LOGGERS = ("pydicom.pixels", "pylibjpeg", "libjpeg", "openjpeg", "rle", "jpeg_ls", "PIL")
#: Where a decoder warning comes from (a header-parsing warning raised while a file is read is not damage).
_DECODER_SOURCES = tuple(f"{os.sep}{name}{os.sep}" for name in ("pixels", "pylibjpeg", "libjpeg", "openjpeg", "rle",
                                                                  "jpeg_ls", "PIL"))
#: Decoder messages that say nothing about damage: memory layout, padding, a colour-space hint, a fallback plugin.
_BENIGN = ("view on the original", "excess padding", "'Photometric Interpretation'", "decoding plugin has changed")
_WARN_LOCK = threading.RLock()


def _benign(message: str) -> bool:
    if "non-conformant padding" in message:
        # An RLE segment of an odd-sized image decoded one byte long is a writer padding it to an even length;
        # anything else means its runs do not describe the image (pylibjpeg-rle refuses those outright).
        import re

        found = re.search(r"(\d+) vs\. (\d+) bytes", message)
        return bool(found) and int(found.group(2)) % 2 == 1 and int(found.group(1)) == int(found.group(2)) + 1
    return any(part in message for part in _BENIGN)


class _Collect(logging.Handler):
    def __init__(self, thread: int) -> None:
        super().__init__(logging.WARNING)
        self.thread = thread
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.thread == self.thread and not _benign(message):
            self.messages.append(message.splitlines()[0] if message else record.levelname)


@contextmanager
def decode_guard(what: str = "decoding the image") -> Iterator[list[str]]:
    """Watch a decode: decoder warnings and decoder log records (WARNING and above) become damage.

    Messages about memory layout, padding or a colour-space hint, and warnings
    of pydicom's header parser (odd values read along the way), are logged
    but are no damage.

    Yields the list the messages are collected in; on leaving, raises
    :class:`DamagedImageError` when it is not empty (exceptions of the body
    pass through unchanged). Library records still reach the log file.
    """
    collect = _Collect(threading.get_ident())
    loggers = [logging.getLogger(name) for name in _DECODER_LOGGERS]
    for lg in loggers:
        lg.addHandler(collect)
    try:
        with _WARN_LOCK, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield collect.messages
        for w in caught:
            text = str(w.message)
            logger.info("warning while %s: %s (%s)", what, text, w.filename)
            if _benign(text) or not any(src in str(w.filename) for src in _DECODER_SOURCES):
                continue
            collect.messages.append(text.splitlines()[0] if text else type(w.message).__name__)
    finally:
        for lg in loggers:
            lg.removeHandler(collect)
    if collect.messages:
        raise DamagedImageError(f"the image data is damaged: the decoder reported a problem while {what} "
                                f"({collect.messages[0][:160]})")


def _decode_single(header: Any, frame: bytes, tsyntax: str, plugin: str = "", raw: bool = True) -> np.ndarray:
    """Decode one codestream with ``header``'s image description (no file involved)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.pixels import pixel_array
    from pydicom.uid import UID

    from pydicom.dataset import Dataset

    ds = Dataset()  # a new dataset: the caller's header is never changed
    for elem in header:
        if elem.tag.group == 0x0028 and elem.tag != 0x00280008:  # Image Pixel module, less Number of Frames
            ds.add(elem)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(tsyntax)
    ds.NumberOfFrames = 1
    if len(frame) % 2:
        frame += b"\x00"
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return pixel_array(ds, decoding_plugin=plugin, raw=raw)


def decoding_plugin(tsyntax: str) -> str:
    """The pydicom decoding plugin Loupe uses for ``tsyntax`` ('' = pydicom's own order).

    RLE goes to pydicom's own decoder: pylibjpeg-rle panics (a Rust panic that
    prints its backtrace on the terminal) on some damaged RLE data.
    """
    return "pydicom" if tsyntax == RLE else ""


def image_shape(header: Any) -> tuple[int, int, int]:
    """(Rows, Columns, Samples per Pixel) of a DICOM header."""
    return (int(header.get("Rows", 0) or 0), int(header.get("Columns", 0) or 0),
            int(header.get("SamplesPerPixel", 1) or 1))


def _expected_shape(header: Any) -> tuple[int, ...]:
    rows, cols = int(header.get("Rows", 0) or 0), int(header.get("Columns", 0) or 0)
    spp = int(header.get("SamplesPerPixel", 1) or 1)
    return (rows, cols) if spp == 1 else (rows, cols, spp)


def _decode_error_reason(exc: Exception, where: str) -> str:
    low = str(exc).lower()
    if any(k in low for k in ("end of the data", "less than expected", "truncat", "end of file", "unexpected end",
                              "not enough", "doesn't match the expected", "does not match the expected",
                              "broken data stream", "premature")):
        return f"file is truncated: {where}the image data stops before the image is complete ({CUT_OFF} or the file is damaged)"
    return f"{where}the image data is damaged: it cannot be decoded"


def trial_decode_frame(header: Any, frame: bytes, tsyntax: str, index: int = 0, frames: int = 1,
                       raw: bool = True) -> np.ndarray:
    """Decode one frame's codestream and prove it whole; returns the decoded frame.

    ``raw=False`` returns it as the display wants it (YCbCr converted to RGB).
    Raises :class:`DamagedImageError` on a decoder error or warning, an image
    smaller than the header says, or (JPEG family) a codestream the decoder
    reads past its end (see the module docstring).
    """
    where = _frame_label(index, frames)
    shape = _expected_shape(header)
    try:
        with decode_guard(f"decoding {where or 'the image'}".rstrip(": ")):
            arr = _decode_single(header, frame, tsyntax, plugin=decoding_plugin(tsyntax), raw=raw)
    except DamagedImageError:
        raise
    except BaseException as exc:  # noqa: BLE001 - every decoder failure (panics included) is damage
        if _fatal(exc):
            raise
        logger.info("trial decode failed (%s): %s", where or "frame", exc)
        raise DamagedImageError(_decode_error_reason(exc, where)) from None
    if tuple(arr.shape) != shape:
        raise DamagedImageError(f"{where}the image data is damaged: it decodes to {arr.shape} pixels "
                                f"where the header says {shape}")
    if tsyntax in JPEG_FAMILY:
        body = frame.rstrip(b"\x00")
        probe = body[:-2] + PROBE_FILLER + _EOI
        try:
            with decode_guard("checking that the image data is complete"):
                again = _decode_single(header, probe, tsyntax, raw=raw)
        except BaseException as exc:  # noqa: BLE001 - a decoder that trips on the filler read into it
            if _fatal(exc):
                raise
            logger.info("completeness probe failed (%s): %s", where or "frame", exc)
            again = None
        if again is None or again.shape != arr.shape or not np.array_equal(again, arr):
            pct = ""
            if again is not None and again.shape == arr.shape:
                same = np.all((again == arr).reshape(arr.shape[0], -1), axis=1)
                bad = np.flatnonzero(~same)
                if bad.size:
                    pct = f"; only the first {_percent(int(bad[0]), arr.shape[0])} % of its rows decode"
            raise DamagedImageError(f"file is truncated: {where}the JPEG image data ends before the image is "
                                    f"complete{pct} ({CUT_OFF} or the file is damaged)")
    return arr


# --- the import check -----------------------------------------------------------------------------------------

def _segments(header: Any) -> int:
    spp = int(header.get("SamplesPerPixel", 1) or 1)
    bits = int(header.get("BitsAllocated", 8) or 8)
    return spp * max(1, bits // 8)


def encapsulated_frames(path: PathLike, offset: int, frames: int, tsyntax: str) -> list[bytes]:
    """Read and split the encapsulated pixel data that starts at byte ``offset`` of ``path``.

    Raises :class:`DamagedImageError` for a broken structure.
    """
    with open(path, "rb") as fp:
        fp.seek(offset)
        buf = fp.read()
    return split_frames(read_encapsulated(buf), frames, tsyntax)


def check_dicom_pixels(path: PathLike, header: Any, pixel: Optional[tuple[int, int]], tsyntax: str,
                       frames: int, options: IntegrityOptions = DEFAULT_OPTIONS, key: Optional[str] = None) -> None:
    """Check that a DICOM file's pixel data is whole (levels 2 and 3 of the module docstring).

    Takes the path, a header dataset (with Rows, Columns, SamplesPerPixel,
    BitsAllocated, PhotometricInterpretation…), the pixel element's
    ``(value offset, length)`` from :func:`~core.imaging.dicom_io.read_dataset`,
    the transfer syntax, the frame count and the options. Native pixel data's
    length is checked by :func:`~core.imaging.dicom_io.validate_pixels`; here a
    native file is only trial-decoded. Raises :class:`DamagedImageError`
    (carrying ``key``).
    """
    try:
        size = os.path.getsize(path)
        if pixel is not None and pixel[1] < 0 and pixel[0] > 0:
            codestreams = encapsulated_frames(path, pixel[0], frames, tsyntax)
            for i, frame in enumerate(codestreams):
                check_codestream(frame, tsyntax, i, frames, _segments(header) if tsyntax == RLE else None,
                                 shape=image_shape(header))
            if options.wants_trial(size):
                full = _full_header(path, header)
                for i, frame in enumerate(codestreams):
                    trial_decode_frame(full, frame, tsyntax, i, frames)
        elif tsyntax == DEFLATED and options.wants_trial(size):
            # Native data's length is checked from the header; a deflated stream only by inflating it.
            _trial_decode_file(path, frames)
    except DamagedImageError as exc:
        raise DamagedImageError(str(exc), key=key) from None
    except DicomReadError:
        raise
    except OSError as exc:
        raise DicomReadError(f"cannot read file: {exc.strerror or exc}") from exc


def _full_header(path: PathLike, header: Any) -> Any:
    """The whole header (a scan reads only some tags; decoders need e.g. Planar Configuration)."""
    import pydicom

    try:
        return pydicom.dcmread(os.fspath(path), stop_before_pixels=True, force=True)
    except Exception:  # noqa: BLE001 - the scan already read this header once
        return header


def _trial_decode_file(path: PathLike, frames: int) -> None:
    """Decode every frame of a native or deflated file under watch."""
    from pydicom.pixels import iter_pixels

    count = 0
    try:
        with decode_guard("decoding the image"):
            for _ in iter_pixels(os.fspath(path), raw=True):
                count += 1
    except DamagedImageError:
        raise
    except BaseException as exc:  # noqa: BLE001 - every decoder failure is damage
        if _fatal(exc):
            raise
        logger.info("trial decode of %s failed: %s", path, exc)
        raise DamagedImageError(_decode_error_reason(exc, "")) from None
    if count != frames:
        raise DamagedImageError(f"file is truncated: only {count} of its {frames} frames decode ({CUT_OFF})")


# --- photographs ---------------------------------------------------------------------------------------------

def _pillow_pixels(data: bytes) -> Optional[np.ndarray]:
    import io

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                return np.asarray(im).copy()
    except Exception:  # noqa: BLE001 - Pillow raises many kinds for broken data
        return None


def check_photo(path: PathLike, options: IntegrityOptions = DEFAULT_OPTIONS, key: Optional[str] = None) -> None:
    """Prove a JPEG photograph whole (the completeness probe of the module docstring, decoded by Pillow).

    A JPEG cut short with its end marker put back decodes without complaint
    (the rest grey); PNG and TIFF decoders raise on cut data, so only JPEG
    needs this. Files over ``options``' size limit, and JPEGs followed by
    trailing data (camera trailers, multi-picture files), are not probed.
    Raises :class:`DamagedImageError` (carrying ``key``).
    """
    try:
        size = os.path.getsize(path)
        if not options.wants_trial(size):
            return
        with open(path, "rb") as fp:
            data = fp.read()
    except OSError as exc:
        raise ImageReadError(f"cannot read file: {exc.strerror or exc}") from exc
    if not data.startswith(b"\xff\xd8\xff"):
        return
    body = data.rstrip(b"\x00")
    if not body.endswith(_EOI):
        return
    whole = _pillow_pixels(body)
    if whole is None:
        raise DamagedImageError("the JPEG picture is damaged: it cannot be decoded", key=key)
    again = _pillow_pixels(body[:-2] + PROBE_FILLER + _EOI)
    if again is None or again.shape != whole.shape or not np.array_equal(again, whole):
        raise DamagedImageError(f"file is truncated: the JPEG picture ends before the image is complete "
                                f"({CUT_OFF} or the file is damaged)", key=key)
