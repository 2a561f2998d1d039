"""The DICOM grayscale display pipeline, in pure numpy.

Order (PS3.3 C.11 and PS3.4 N.2): stored values → Modality LUT (sequence,
else rescale slope/intercept) → VOI (VOI LUT Sequence, else Window
Center/Width with its VOI LUT Function, else the image's full range) →
inversion for MONOCHROME1 or Presentation LUT Shape INVERSE, applied once and
last. Colour images skip the grayscale steps and stay RGB.

:func:`display_params` pulls every value the pipeline needs out of a pydicom
Dataset once; the step functions take only arrays and :class:`DisplayParams`,
so each is testable with hand-computed numbers.
"""

from __future__ import annotations

import logging
import math
import struct
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from core.types import WindowPreset

logger = logging.getLogger(__name__)

VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")


@dataclass(frozen=True)
class Lut:
    """One lookup table from a Modality or VOI LUT Sequence item.

    ``first_mapped`` is the input value mapped to ``data[0]``; inputs below it
    map to the first entry and inputs past the end to the last (PS3.3
    C.11.1.1.1). ``bits`` is the output bit depth used to scale VOI output,
    already corrected when the data does not fit the declared depth.
    """

    first_mapped: int
    bits: int
    data: np.ndarray = field(compare=False, repr=False)
    explanation: str = ""

    def lookup(self, values: np.ndarray) -> np.ndarray:
        """Map ``values`` through the table; returns float32 of the same shape."""
        idx = np.rint(np.asarray(values, dtype=np.float64)) - self.first_mapped
        idx = np.clip(idx, 0, len(self.data) - 1).astype(np.intp)
        return self.data[idx].astype(np.float32)


@dataclass(frozen=True)
class DisplayParams:
    """Everything the display pipeline needs from a DICOM header."""

    photometric: str = "MONOCHROME2"
    samples_per_pixel: int = 1
    bits_stored: int = 8
    pixel_representation: int = 0
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    rescale_type: str = ""
    modality_lut: Optional[Lut] = None
    voi_luts: tuple[Lut, ...] = ()
    windows: tuple[WindowPreset, ...] = ()
    voi_lut_function: str = "LINEAR"
    presentation_lut_shape: str = ""

    @property
    def is_color(self) -> bool:
        """True for RGB/YBR images (shown as RGB, no VOI)."""
        return self.samples_per_pixel >= 3

    @property
    def inverted(self) -> bool:
        """True when the grayscale output must be inverted (exactly once)."""
        return self.photometric == "MONOCHROME1" or self.presentation_lut_shape == "INVERSE"


# ---------------------------------------------------------------- header parsing


def _multi(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, (str, bytes)):
        return [value]
    try:
        return list(value)
    except TypeError:
        return [value]


def _float(value: Any, default: float) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if math.isfinite(out) else default


def _lut_array(item: Any, nr_entries: int, bits: int, little_endian: bool) -> np.ndarray:
    """LUT Data as an int array; handles US lists, OW bytes and packed 8-bit entries."""
    raw = item.get("LUTData")
    if isinstance(raw, (bytes, bytearray)):
        if bits <= 8 and len(raw) == nr_entries:
            # 8-bit entries packed two per 16-bit word (allowed by older editions)
            return np.frombuffer(bytes(raw), dtype=np.uint8).astype(np.int64)
        count = len(raw) // 2
        fmt = ("<" if little_endian else ">") + f"{count}H"
        return np.asarray(struct.unpack(fmt, bytes(raw[: count * 2])), dtype=np.int64)
    return np.asarray(_multi(raw), dtype=np.int64)


def _parse_lut(item: Any, pixel_representation: int, little_endian: bool, what: str) -> Optional[Lut]:
    desc = _multi(item.get("LUTDescriptor"))
    if len(desc) != 3 or item.get("LUTData") is None:
        logger.warning("%s item without a usable LUT Descriptor/Data ignored", what)
        return None
    nr_entries, first, bits = (int(v) for v in desc)
    nr_entries = nr_entries or 65536  # PS3.3 C.11.1.1.1: 0 means 2**16 entries
    if pixel_representation == 1 and first >= 32768:
        first -= 65536  # descriptor stored as US although the input is signed
    data = _lut_array(item, nr_entries, bits, little_endian)
    if data.size == 0:
        logger.warning("%s item with empty LUT Data ignored", what)
        return None
    if data.size != nr_entries:
        logger.warning("%s: descriptor says %d entries, data has %d; using the data", what, nr_entries, data.size)
    # Declared depth is 8..16; when the data does not fit (e.g. 16-bit values
    # under an 8- or 12-bit descriptor) trust the data, as DCMTK does.
    bits = bits if 1 <= bits <= 16 else 16
    top = int(data.max())
    if top > 2**bits - 1:
        fixed = max(top.bit_length(), 1)
        logger.info("%s: values up to %d exceed the declared %d bits; using %d bits", what, top, bits, fixed)
        bits = fixed
    data = data.astype(np.float32)
    data.setflags(write=False)
    return Lut(first_mapped=first, bits=bits, data=data, explanation=str(item.get("LUTExplanation", "") or ""))


def _windows(ds: Any) -> tuple[WindowPreset, ...]:
    centers = _multi(ds.get("WindowCenter"))
    widths = _multi(ds.get("WindowWidth"))
    names = _multi(ds.get("WindowCenterWidthExplanation"))
    out = []
    for i, (c, w) in enumerate(zip(centers, widths)):
        c_f, w_f = _float(c, math.nan), _float(w, math.nan)
        if math.isnan(c_f) or math.isnan(w_f) or w_f <= 0:
            logger.warning("window %d (%r/%r) ignored: not a valid center/width", i, c, w)
            continue
        name = str(names[i]).strip() if i < len(names) else ""
        out.append(WindowPreset(center=c_f, width=w_f, name=name))
    return tuple(out)


def window_presets_from(ds: Any) -> tuple[WindowPreset, ...]:
    """Every valid Window Center/Width pair of a header, named by its explanation.

    Takes a pydicom Dataset; returns a tuple of :class:`WindowPreset` (empty
    when the header has none). Never raises for malformed values: they are
    logged and skipped.
    """
    return _windows(ds)


def display_params(ds: Any) -> DisplayParams:
    """Extract the display pipeline's inputs from a pydicom Dataset.

    Takes a Dataset (pixel data not needed). Returns a :class:`DisplayParams`.
    Malformed optional values (LUTs, windows) are logged and ignored rather
    than raised, so a slightly broken header still displays.
    """
    pixrep = int(ds.get("PixelRepresentation", 0) or 0)
    encoding = getattr(ds, "original_encoding", (True, True))
    little = encoding[1] if encoding and encoding[1] is not None else True
    modality_lut = None
    seq = ds.get("ModalityLUTSequence")
    if seq:
        modality_lut = _parse_lut(seq[0], pixrep, little, "Modality LUT")
    voi_luts: list[Lut] = []
    for item in ds.get("VOILUTSequence") or []:
        lut = _parse_lut(item, pixrep, little, "VOI LUT")
        if lut is not None:
            voi_luts.append(lut)
    function = str(ds.get("VOILUTFunction", "") or "LINEAR").strip().upper()
    if function not in VOI_FUNCTIONS:
        logger.warning("unknown VOI LUT Function %r; using LINEAR", function)
        function = "LINEAR"
    return DisplayParams(
        photometric=str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip().upper(),
        samples_per_pixel=int(ds.get("SamplesPerPixel", 1) or 1),
        bits_stored=int(ds.get("BitsStored", 0) or ds.get("BitsAllocated", 8) or 8),
        pixel_representation=pixrep,
        rescale_slope=_float(ds.get("RescaleSlope"), 1.0) or 1.0,
        rescale_intercept=_float(ds.get("RescaleIntercept"), 0.0),
        rescale_type=str(ds.get("RescaleType", "") or ""),
        modality_lut=modality_lut,
        voi_luts=tuple(voi_luts),
        windows=_windows(ds),
        voi_lut_function=function,
        presentation_lut_shape=str(ds.get("PresentationLUTShape", "") or "").strip().upper(),
    )


# ---------------------------------------------------------------- pipeline steps


def apply_modality_lut(arr: np.ndarray, params: DisplayParams) -> np.ndarray:
    """Stored values → modality values (e.g. Hounsfield units), as float32.

    Uses the Modality LUT Sequence when present, else Rescale Slope/Intercept
    (identity when absent). Takes a 2-D array; returns a new float32 array.
    """
    if params.modality_lut is not None:
        return params.modality_lut.lookup(arr)
    if params.rescale_slope != 1.0 or params.rescale_intercept != 0.0:
        out = np.array(arr, dtype=np.float32)  # a fresh copy, so the in-place steps never touch ``arr``
        out *= np.float32(params.rescale_slope)
        out += np.float32(params.rescale_intercept)
        return out
    return np.asarray(arr, dtype=np.float32)


def apply_window(x: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """Apply one window with the exact PS3.3 C.11.2.1.2 formula, output in [0, 1].

    ``function`` is LINEAR, LINEAR_EXACT or SIGMOID. Raises ValueError for a
    width the formula does not allow (< 1 for LINEAR, <= 0 otherwise).
    """
    # Same float64 arithmetic as the textbook nested np.where form, but done
    # in place on one buffer: the output is identical value for value.
    x = np.asarray(x, dtype=np.float64)
    c, w = float(center), float(width)
    if function == "SIGMOID":
        if w <= 0:
            raise ValueError(f"window width must be > 0 for SIGMOID, got {w}")
        y = np.subtract(x, c)  # 1 / (1 + exp(-4 (x - c) / w))
        y *= -4.0
        y /= w
        np.exp(y, out=y)
        y += 1.0
        np.divide(1.0, y, out=y)
    elif function == "LINEAR_EXACT":
        if w <= 0:
            raise ValueError(f"window width must be > 0 for LINEAR_EXACT, got {w}")
        y = np.subtract(x, c)  # clip((x - c) / w + 0.5, 0, 1)
        y /= w
        y += 0.5
        np.clip(y, 0.0, 1.0, out=y)
        np.copyto(y, 1.0, where=x > c + w / 2)
        np.copyto(y, 0.0, where=x <= c - w / 2)  # last: it wins, as the first test in the standard
    else:
        if w < 1:
            raise ValueError(f"window width must be >= 1 for LINEAR, got {w}")
        lo, hi = c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2
        if w == 1:
            return (x > lo).astype(np.float32)  # a threshold at c - 0.5
        y = np.subtract(x, c - 0.5)  # (x - (c - 0.5)) / (w - 1) + 0.5
        y /= w - 1
        y += 0.5
        np.copyto(y, 1.0, where=x > hi)
        np.copyto(y, 0.0, where=x <= lo)  # last: it wins, as the first test in the standard
    return y.astype(np.float32)


def voi_choices(params: DisplayParams) -> list[str]:
    """Names of the header's VOI options, in the order ``voi_index`` counts them.

    VOI LUT Sequence items come first, then Window Center/Width presets.
    Returns an empty list when the header has neither (full range is used).
    """
    names = [lut.explanation or f"VOI LUT {i + 1}" for i, lut in enumerate(params.voi_luts)]
    names += [w.name or f"{w.center:g}/{w.width:g}" for w in params.windows]
    return names


def _full_range(x: np.ndarray, value_range: Optional[tuple[float, float]] = None) -> np.ndarray:
    """``x`` over min..max → [0, 1]; ``value_range`` gives that min and max when ``x``
    is not the image itself (a lookup table over the stored range)."""
    lo, hi = (float(np.min(x)), float(np.max(x))) if value_range is None else value_range
    if hi <= lo:
        return np.zeros(x.shape, dtype=np.float32)
    y = x.astype(np.float64)
    y -= lo
    y /= hi - lo
    return y.astype(np.float32)


def apply_voi(
    arr: np.ndarray,
    params: DisplayParams,
    window: Optional[Sequence[float]] = None,
    voi_index: int = 0,
) -> np.ndarray:
    """Modality values → float32 in [0, 1] (before any inversion).

    Takes modality values, the params, an optional explicit ``(center, width)``
    that wins over the header, and ``voi_index`` into :func:`voi_choices`
    (VOI LUTs first, then windows). Without either, the image's min..max is
    used. Raises ValueError when ``voi_index`` is out of range or an explicit
    window is invalid.
    """
    return _voi(arr, params, window, voi_index)


def _voi(
    arr: np.ndarray,
    params: DisplayParams,
    window: Optional[Sequence[float]],
    voi_index: int,
    value_range: Optional[tuple[float, float]] = None,
) -> np.ndarray:
    """:func:`apply_voi`; ``value_range`` is the image's modality min..max for the
    full-range case when ``arr`` is a lookup table rather than the image."""
    x = np.asarray(arr)
    if window is not None:
        center, width = window
        return apply_window(x, center, width, params.voi_lut_function)
    n_luts, n_windows = len(params.voi_luts), len(params.windows)
    if n_luts + n_windows == 0:
        if voi_index != 0:
            raise ValueError(f"VOI choice {voi_index} does not exist: the header has no VOI LUT or window")
        return _full_range(x, value_range)
    if not 0 <= voi_index < n_luts + n_windows:
        raise ValueError(f"VOI choice {voi_index} does not exist: the header has {n_luts + n_windows}")
    if voi_index < n_luts:
        lut = params.voi_luts[voi_index]
        return (lut.lookup(x) / np.float32(2**lut.bits - 1)).clip(0, 1).astype(np.float32)
    preset = params.windows[voi_index - n_luts]
    return apply_window(x, preset.center, preset.width, params.voi_lut_function)


def apply_inversion(x01: np.ndarray, params: DisplayParams) -> np.ndarray:
    """Invert [0, 1] values once for MONOCHROME1 or Presentation LUT Shape INVERSE."""
    return (np.float32(1.0) - x01).astype(np.float32) if params.inverted else x01


def to_uint8(x01: np.ndarray) -> np.ndarray:
    """[0, 1] floats → uint8 with round-half-up (0.5/255 steps), clipping outside values."""
    x = np.asarray(x01)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    # floor(clip(x, 0, 1) * 255 + 0.5) in float64, done in place on one buffer:
    # clipping the result to [0.5, 255.5] is the same as clipping x first, and
    # the uint8 cast truncates, which is floor for these non-negative values.
    # (float32 arithmetic would not do: x * 255 rounds there and moves some
    # values across a .5 boundary.)
    y = np.multiply(x, 255.0, dtype=np.float64)
    y += 0.5
    np.clip(y, 0.5, 255.5, out=y)
    return y.astype(np.uint8)


def color_to_unit(raw: np.ndarray, params: DisplayParams) -> np.ndarray:
    """An RGB frame → float32 [0, 1], scaled by its bit depth (no VOI for colour)."""
    if raw.dtype == np.uint8:
        return raw.astype(np.float32) / np.float32(255.0)
    bits = params.bits_stored if 1 <= params.bits_stored <= 16 else 16
    top = max(2**bits - 1, int(raw.max()) if raw.size else 1)
    return np.clip(raw.astype(np.float32) / np.float32(top), 0, 1)


def display_float(
    raw: np.ndarray,
    params: DisplayParams,
    window: Optional[Sequence[float]] = None,
    voi_index: int = 0,
) -> np.ndarray:
    """The full pipeline kept in float32 [0, 1]: modality LUT → VOI → inversion.

    Takes a decoded frame ((H, W) grayscale or (H, W, 3) colour). Returns
    float32 of the same shape. Raises ValueError as :func:`apply_voi` does.
    """
    if params.is_color or raw.ndim == 3:
        return color_to_unit(raw, params)
    x = apply_modality_lut(raw, params)
    x = apply_voi(x, params, window=window, voi_index=voi_index)
    return apply_inversion(x, params)


def render_array(
    raw: np.ndarray,
    params: DisplayParams,
    window: Optional[Sequence[float]] = None,
    voi_index: int = 0,
) -> np.ndarray:
    """What a viewer shows: :func:`display_float` quantised with :func:`to_uint8`.

    Returns uint8 (H, W) for grayscale or (H, W, 3) for colour. Integer
    grayscale frames go through :func:`display_table` and :func:`apply_table`
    (the same values, much faster); everything else through the float path.
    """
    table = display_table(raw, params, window=window, voi_index=voi_index)
    if table is not None:
        return apply_table(raw, *table)
    return to_uint8(display_float(raw, params, window=window, voi_index=voi_index))


# ---------------------------------------------------------------- lookup-table rendering

#: Integer frames whose stored values span at most this many values are
#: rendered through a uint8 lookup table; wider ranges use the float path.
LUT_MAX_ENTRIES = 1 << 17


def table_range(raw: np.ndarray, params: DisplayParams) -> Optional[tuple[int, int]]:
    """``(lo, hi)``, the stored min and max, when ``raw`` can be rendered through a table.

    That is a non-empty 2-D integer grayscale frame whose range spans at most
    :data:`LUT_MAX_ENTRIES` values; returns None otherwise (colour, floats,
    huge ranges), where :func:`render_array` keeps the float path.
    """
    if params.is_color or raw.ndim != 2 or raw.size == 0 or raw.dtype.kind not in "iu":
        return None
    lo, hi = int(raw.min()), int(raw.max())
    if hi - lo + 1 > LUT_MAX_ENTRIES:
        return None
    return lo, hi


def _offsets(raw: np.ndarray, lo: int) -> np.ndarray:
    """``raw - lo`` as unsigned integers of raw's width (never overflows: the
    difference is taken modulo 2**bits and the range is smaller than that)."""
    if not raw.dtype.isnative:
        raw = raw.astype(raw.dtype.newbyteorder("="))
    if raw.dtype.kind == "u" and lo == 0:
        return raw
    unsigned = np.dtype(f"u{raw.dtype.itemsize}")
    return raw.view(unsigned) - unsigned.type(lo % (1 << (8 * unsigned.itemsize)))


def display_table(
    raw: np.ndarray,
    params: DisplayParams,
    window: Optional[Sequence[float]] = None,
    voi_index: int = 0,
    value_range: Optional[tuple[int, int]] = None,
) -> Optional[tuple[int, np.ndarray]]:
    """The whole display pipeline as a uint8 table over the frame's stored range.

    Every stored value lo..hi is pushed once through exactly the float
    pipeline (Modality LUT → VOI → inversion → :func:`to_uint8`); all of those
    steps work value by value, so ``table[raw - lo]`` equals
    :func:`to_uint8` of :func:`display_float` bit for bit. The one step that
    looks at the whole image, the full-range VOI fallback, is given the
    min..max of the modality values the frame actually contains.

    Takes a frame, its params, the window/voi_index of :func:`render_array`
    and optionally its :func:`table_range` if already known. Returns
    ``(lo, table)`` or None when the frame needs the float path (see
    :func:`table_range`). Raises ValueError as :func:`apply_voi` does.
    """
    rng = table_range(raw, params) if value_range is None else value_range
    if rng is None:
        return None
    lo, hi = rng
    values = np.arange(lo, hi + 1, dtype=np.int64).astype(raw.dtype)
    x = apply_modality_lut(values, params)
    full = None
    if window is None and not params.voi_luts and not params.windows:
        full = _present_range(raw, lo, x)
    y = _voi(x, params, window, voi_index, full)
    table = to_uint8(apply_inversion(y, params))
    table.setflags(write=False)
    return lo, table


def _present_range(raw: np.ndarray, lo: int, x: np.ndarray) -> tuple[float, float]:
    """min and max of the modality values ``x[raw - lo]`` without building that image."""
    steps = np.diff(x)
    if x.size == 1 or bool(np.all(steps >= 0)) or bool(np.all(steps <= 0)):
        present = x[[0, -1]]  # monotonic (e.g. a rescale): lo and hi both occur in raw
    else:  # a non-monotonic Modality LUT: only the values that occur count
        present = x[np.bincount(_offsets(raw, lo).ravel(), minlength=x.size) > 0]
    return float(np.min(present)), float(np.max(present))


def apply_table(raw: np.ndarray, lo: int, table: np.ndarray) -> np.ndarray:
    """``table[raw - lo]``: a frame rendered through a :func:`display_table` table.

    Returns a new uint8 array of raw's shape.
    """
    return np.take(table, _offsets(raw, lo))
