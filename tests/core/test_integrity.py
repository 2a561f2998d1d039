"""Integrity of pixel data at import and at display; same identity with different content; damaged images kept
out of prediction, queue and training; site thresholds in their own table; burned-in images held back."""

from __future__ import annotations

import io
import logging
import multiprocessing
import struct

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_frames

from core.errors import DamagedImageError
from core.imaging import clear_cache, dicom_io
from core.imaging.integrity import (
    IntegrityOptions,
    check_codestream,
    jpeg_marker_problem,
    read_encapsulated,
    split_frames,
)
from core.imaging.scan import scan_file
from core.importer import import_paths
from tests.core import codestreams


def _rewrap(data: bytes, frames: int, change, has_bot=None) -> bytes:
    """``data`` with its frames' codestreams passed through ``change(list) -> list`` and re-encapsulated."""
    ds = pydicom.dcmread(io.BytesIO(data))
    streams = change([bytes(s) for s in generate_frames(ds.PixelData, number_of_frames=frames)])
    ds.PixelData = encapsulate([s + b"\x00" * (len(s) % 2) for s in streams],
                               has_bot=frames > 1 if has_bot is None else has_bot)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _cut_keep_marker(streams, fraction=0.5, index=0):
    body = streams[index].rstrip(b"\x00")
    streams[index] = body[:int(len(body) * fraction)] + b"\xff\xd9"
    return streams


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


# --- the checks ---------------------------------------------------------------------------------------------

def test_native_shortfall_says_how_much_of_the_image_is_there(tmp_path):
    data = codestreams.file_bytes("native", 1)
    start = data.rfind(b"\xe0\x7f\x10\x00") + 8 + 4
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[:start + (len(data) - start) * 6 // 100])
    with pytest.raises(DamagedImageError, match=r"the pixel data stops at 6 % of the image \(the file was cut off "
                                                r"while copying\)") as info:
        scan_file(path)
    assert info.value.key == pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID


def test_every_intact_seed_passes_and_every_cut_file_is_rejected(tmp_path):
    for kind in codestreams.SYNTAXES:
        for frames in (1, 3):
            data = codestreams.file_bytes(kind, frames)
            (tmp_path / "ok.dcm").write_bytes(data)
            record = scan_file(tmp_path / "ok.dcm")
            assert record.frames == frames
            (tmp_path / "cut.dcm").write_bytes(data[:len(data) - 40])
            with pytest.raises(DamagedImageError, match="file is truncated"):
                scan_file(tmp_path / "cut.dcm")


def test_missing_sequence_delimiter_and_cut_fragment():
    frag = b"\xff\xd8" + b"\x11" * 10 + b"\xff\xd9"
    body = b"\xfe\xff\x00\xe0" + struct.pack("<I", 0) + b"\xfe\xff\x00\xe0" + struct.pack("<I", len(frag)) + frag
    enc = read_encapsulated(body + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")
    assert enc.fragments == [frag] and enc.closed
    with pytest.raises(DamagedImageError, match="no end marker"):
        read_encapsulated(body)
    with pytest.raises(DamagedImageError, match="stops part-way, inside its fragment 1"):
        read_encapsulated(body[:-5])


def test_basic_offset_table_must_match_the_fragments():
    a, b = b"\xff\xd8" + b"\x01" * 6 + b"\xff\xd9", b"\xff\xd8" + b"\x02" * 8 + b"\xff\xd9"

    def enc(offsets):
        bot = struct.pack(f"<{len(offsets)}I", *offsets)
        items = b"".join(b"\xfe\xff\x00\xe0" + struct.pack("<I", len(x)) + x for x in (bot, a, b))
        return read_encapsulated(items + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")

    assert split_frames(enc([0, 8 + len(a)]), 2, "1.2.840.10008.1.2.4.70") == [a, b]
    with pytest.raises(DamagedImageError, match="does not match the fragments"):
        split_frames(enc([0, 7]), 2, "1.2.840.10008.1.2.4.70")
    with pytest.raises(DamagedImageError, match="lists 2 frame\\(s\\) but the image has 3"):
        split_frames(enc([0, 8 + len(a)]), 3, "1.2.840.10008.1.2.4.70")


def test_end_markers_and_rle_offsets():
    j2k = "1.2.840.10008.1.2.4.90"
    with pytest.raises(DamagedImageError, match="JPEG 2000 image data stops before its end marker"):
        check_codestream(b"\xff\x4f\xff\x51" + b"\x00\x10" * 20, j2k)
    check_codestream(b"\xff\x4f\xff\x51" + b"\x10" * 20 + b"\xff\xd9", j2k)
    header = struct.pack("<16I", 2, 64, 90, *([0] * 13))
    with pytest.raises(DamagedImageError, match="RLE image data stops before its last segment"):
        check_codestream(header + b"\x00" * 20, "1.2.840.10008.1.2.5")
    check_codestream(header + b"\x00" * 40, "1.2.840.10008.1.2.5", segments=2)
    with pytest.raises(DamagedImageError, match="it has 2 segment\\(s\\) where the image needs 1"):
        check_codestream(header + b"\x00" * 40, "1.2.840.10008.1.2.5", segments=1)


def test_jpeg_marker_walk_finds_a_stray_marker_mid_scan():
    stream = codestreams.encode_jpeg_lossless(codestreams.base_pixels(1)[0], 12)
    assert jpeg_marker_problem(stream) is None
    at = stream.find(b"\xff\xda") + 40
    broken = stream[:at] + b"\xff\xc0" + stream[at + 2:]
    assert "broken marker (FFC0)" in jpeg_marker_problem(broken)
    assert jpeg_marker_problem(stream[:at] + b"\xff\xc4" + stream[at + 2:])  # a table with a bogus length


def test_cut_codestream_with_its_end_marker_put_back_is_caught_by_the_trial_decode_and_by_the_display(tmp_path):
    """The reported case: a JPEG Lossless image cut short decodes without a word, the rest black."""
    data = _rewrap(codestreams.file_bytes("jpeg_lossless_sv1", 1), 1, _cut_keep_marker)
    path = tmp_path / "cut.dcm"
    path.write_bytes(data)
    with pytest.raises(DamagedImageError, match="the JPEG image data ends before the image is complete"):
        scan_file(path)
    # without the trial decode (or over its size limit) the import takes it, and the display refuses it
    for options in (IntegrityOptions(trial_decode=False), IntegrityOptions(trial_decode_limit=100)):
        assert scan_file(path, options).frames == 1
    with pytest.raises(DamagedImageError, match="ends before the image is complete"):
        dicom_io.decode_frame(path, 0)


def test_multiframe_damage_names_the_frame(tmp_path):
    data = _rewrap(codestreams.file_bytes("jpeg_lossless", 3), 3, lambda s: _cut_keep_marker(s, 0.3, index=1))
    path = tmp_path / "mf.dcm"
    path.write_bytes(data)
    with pytest.raises(DamagedImageError, match="frame 2 of 3"):
        scan_file(path)
    dicom_io.decode_frame(path, 0)  # the intact frames still decode at display
    with pytest.raises(DamagedImageError, match="frame 2 of 3"):
        dicom_io.decode_frame(path, 1)


def test_real_compressed_files_pass():
    from tests.conftest import shared_path

    for name in ("SIIM_CR_chest_positive_sample.dcm", "RG3_RLE.dcm", "CR-MONO1-10-chest.dcm"):
        assert scan_file(shared_path("dicom", name)).rows > 0


# --- identity: duplicates, conflicts, replacing a damaged copy ------------------------------------------------

def test_identical_copy_is_skipped_and_a_different_one_is_a_conflict(tmp_path, workspace):
    data = codestreams.file_bytes("j2k", 1)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one.dcm").write_bytes(data)
    (tmp_path / "a" / "two.dcm").write_bytes(data)
    other = pydicom.dcmread(io.BytesIO(data))
    other.SeriesDescription = "edited elsewhere"  # same SOP Instance UID, different content
    other.save_as(tmp_path / "a" / "three.dcm", enforce_file_format=True)
    report = import_paths(workspace, [tmp_path / "a"])
    assert report.imported == 1
    one = str(tmp_path / "a" / "one.dcm")
    assert [(i.path, i.reason) for i in report.skipped_files] == [
        (str(tmp_path / "a" / "two.dcm"), f"identical copy of {one} (imported once)")]
    (conflict,) = report.errors
    assert conflict.path == str(tmp_path / "a" / "three.dcm")
    assert conflict.reason.startswith("conflict: same image identity (SOP Instance UID") and one in conflict.reason
    again = import_paths(workspace, [tmp_path / "a" / "three.dcm"])
    assert "already imported " + one in again.errors[0].reason and "stored copy was kept" in again.errors[0].reason
    assert report.to_json()["skipped_files"] == [{"path": str(tmp_path / "a" / "two.dcm"),
                                                  "reason": f"identical copy of {one} (imported once)"}]


def test_intact_copy_replaces_a_damaged_stored_one(tmp_path, workspace):
    data = codestreams.file_bytes("jpeg_lossless_sv1", 1)
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    damaged = tmp_path / "old" / "img.dcm"
    damaged.write_bytes(_rewrap(data, 1, _cut_keep_marker))
    (tmp_path / "new" / "img.dcm").write_bytes(data)
    # an older import (no trial decode) took the damaged copy and a model predicted on it
    first = import_paths(workspace, [damaged], integrity=IntegrityOptions(trial_decode=False))
    (image_id,) = first.image_ids
    with workspace._pool.write() as db:  # a prediction row as a model would have stored it
        db.execute("INSERT INTO predictions (image_id, version, probs, predicted, created_at) VALUES (?,?,?,?,?)",
                   (image_id, "v1", "{}", "a", "now"))
    report = import_paths(workspace, [tmp_path / "new"])
    assert report.imported == 0 and not report.errors
    (replaced,) = report.replaced
    assert str(damaged) in replaced.reason and "ends before the image is complete" in replaced.reason
    ref = workspace.image(image_id)
    assert ref.path == str(tmp_path / "new" / "img.dcm")
    assert workspace.damaged_images() == {}
    assert workspace.predictions("v1") == {}
    (entry,) = workspace.audit_log(action="images.replace")
    assert entry["detail"]["old_path"] == str(damaged) and entry["detail"]["new_path"] == ref.path
    assert workspace.verify_audit() == (True, None)


def test_damaged_images_leave_prediction_queue_and_training(tmp_path, workspace):
    from core.models.data import labelled_set
    from core.worklist import worklist_rows

    (tmp_path / "in").mkdir()
    for kind in ("native", "rle", "j2k"):
        (tmp_path / "in" / f"{kind}.dcm").write_bytes(codestreams.file_bytes(kind, 1))
    import_paths(workspace, [tmp_path / "in"])
    ids = [r.id for r in workspace.images()]
    for i, image_id in enumerate(ids):
        workspace.add_label(image_id, ["a" if i % 2 else "b"], "ann")
        workspace.set_split(image_id, "train")
    assert workspace.mark_damaged(ids[0], "the image data is damaged: test", actor="viewer")
    assert not workspace.mark_damaged(ids[0], "again", actor="viewer")
    assert workspace.damaged_images() == {ids[0]: "the image data is damaged: test"}
    data = labelled_set(workspace, ["a", "b"], multilabel=False, splits=("train",))
    assert ids[0] not in data.image_ids and len(data.image_ids) == 2
    assert any("damaged" in reason for reason in data.skipped)
    row = {r.ref.id: r for r in worklist_rows(workspace)}[ids[0]]
    assert row.status == "damaged" and row.damaged == "the image data is damaged: test"


# --- site thresholds -------------------------------------------------------------------------------------------

def _save_many(path: str, version: str, classes: list[str], value: float) -> None:
    from core.workspace import Workspace

    with Workspace.open(path) as ws:
        for name in classes:
            ws.save_site_threshold(version, name, value, actor="proc")


def test_two_processes_saving_thresholds_at_once_lose_nothing(tmp_path):
    from core.workspace import Workspace

    path = str(tmp_path / "ws.sqlite")
    Workspace.open(path).close()
    left = [f"c{i}" for i in range(0, 30, 2)]
    right = [f"c{i}" for i in range(1, 30, 2)]
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_save_many, args=(path, "v1", names, value))
             for names, value in ((left, 0.25), (right, 0.75))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with Workspace.open(path) as ws:
        saved = ws.site_threshold_rows("v1")["v1"]
        assert saved == {**{c: 0.25 for c in left}, **{c: 0.75 for c in right}}
        assert len(ws.audit_log(action="model.threshold")) == 30
        assert ws.verify_audit() == (True, None)


def test_the_json_setting_moves_into_the_table(tmp_path, monkeypatch):
    from core.workspace import Workspace, schema

    path = tmp_path / "old.sqlite"
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:1])
    with Workspace.open(path) as ws:
        ws.set_setting("site_thresholds", {"v1": {"pos": 0.3, "neg": None}, "v2": {"pos": 0.9}})
    monkeypatch.undo()
    with Workspace.open(path) as ws:
        assert ws.site_threshold_rows() == {"v1": {"pos": 0.3}, "v2": {"pos": 0.9}}
        assert ws.get_setting("site_thresholds") is None
        from core.models.site_thresholds import site_thresholds

        assert site_thresholds(ws, "v1") == {"pos": 0.3}


# --- logging -------------------------------------------------------------------------------------------------

def test_terminal_handler_shows_only_loupe_lines_without_tracebacks():
    from app.logging_setup import quiet_libraries

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    quiet_libraries(handler)
    lib, own = logging.getLogger("pydicom.pixels.decoders.base"), logging.getLogger("core.imaging.test")
    for lg in (lib, own):
        lg.addHandler(handler)
    try:
        try:
            raise ValueError("The decoded segment length does not match")
        except ValueError:
            lib.exception("decoder failed")
            own.exception("cannot show x: the image data is damaged")
    finally:
        for lg in (lib, own):
            lg.removeHandler(handler)
    text = stream.getvalue()
    assert text.strip() == "ERROR core.imaging.test: cannot show x: the image data is damaged"


# --- de-identified export: burned-in annotation ---------------------------------------------------------------

def test_deidentified_export_holds_back_burned_in_images_unless_included(tmp_path, workspace):
    from core.export import export_workspace

    (tmp_path / "in").mkdir()
    for name, burned in (("plain.dcm", "NO"), ("burned.dcm", "YES")):
        ds = codestreams.build("native", 1)
        ds.BurnedInAnnotation = burned
        codestreams.write(ds, tmp_path / "in" / name)
    import_paths(workspace, [tmp_path / "in"])
    for ref in workspace.images():
        workspace.add_label(ref.id, ["a"], "ann")
    held = export_workspace(workspace, tmp_path / "out1", "dicom-sr", deidentify=True, salt=b"s" * 16)
    assert held.counts["sr"] == 1 and len(held.held_back) == 1
    assert "Burned In Annotation = YES" in held.held_back[0]["reason"]
    assert held.to_json()["held_back"] == held.held_back
    everything = export_workspace(workspace, tmp_path / "out2", "dicom-sr", deidentify=True, salt=b"s" * 16,
                                  include_burned_in=True)
    assert everything.counts["sr"] == 2 and everything.held_back == []
    plain = export_workspace(workspace, tmp_path / "out3", "dicom-sr")  # not de-identified: nothing held back
    assert plain.counts["sr"] == 2 and plain.held_back == []
    audit = workspace.audit_log(action="export")
    assert [e["detail"]["held_back"] for e in audit] == [0, 0, 1]


def test_report_details_lists_every_file_not_imported(tmp_path, workspace):
    from core.importer import report_details

    (tmp_path / "in").mkdir()
    data = codestreams.file_bytes("rle", 1)
    (tmp_path / "in" / "a.dcm").write_bytes(data)
    (tmp_path / "in" / "b.dcm").write_bytes(data)
    (tmp_path / "in" / "c.dcm").write_bytes(data[:-30])
    (tmp_path / "in" / "labels.csv").write_text("file,label\n")
    (tmp_path / "in" / ".hidden").write_bytes(b"x")
    report = import_paths(workspace, [tmp_path / "in"])
    assert report.imported == 1 and report.skipped == 1
    text = report_details(report).splitlines()
    assert text[0].startswith("not imported: c.dcm: file is truncated")
    assert "skipped: b.dcm: identical copy of" in "\n".join(text)
    assert any(line.startswith("skipped: labels.csv: not an image") for line in text)
    assert any(line.startswith("skipped: .hidden: hidden file") for line in text)
    assert len(text) == 4


def test_trial_decode_leaves_the_callers_header_alone():
    from core.imaging.integrity import trial_decode_frame

    data = codestreams.file_bytes("jpeg_lossless", 3)
    ds = pydicom.dcmread(io.BytesIO(data))
    streams = list(generate_frames(ds.PixelData, number_of_frames=3))
    header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    arr = trial_decode_frame(header, streams[2], str(ds.file_meta.TransferSyntaxUID), 2, 3)
    assert header.NumberOfFrames == 3 and "PixelData" not in header
    assert (arr == ds.pixel_array[2]).all()


def test_prediction_marks_an_image_it_finds_damaged_and_leaves_it_out_next_time(tmp_path, workspace, single_thread):
    from core.models.service import predict_images
    from tests.core.conftest import tiny_model

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "ok.dcm").write_bytes(codestreams.file_bytes("jpeg_lossless_sv1", 1))
    cut = _rewrap(codestreams.file_bytes("jpeg_lossless", 1), 1, _cut_keep_marker)
    (tmp_path / "in" / "cut.dcm").write_bytes(cut)
    import_paths(workspace, [tmp_path / "in"], integrity=IntegrityOptions(trial_decode=False))
    by_name = {r.path.rsplit("/", 1)[-1]: r.id for r in workspace.images()}
    tiny_model(workspace)
    predictions, failed = predict_images(workspace, device="cpu")
    assert [p.image_id for p in predictions] == [by_name["ok.dcm"]]
    assert [i for i, _ in failed] == [by_name["cut.dcm"]]
    assert set(workspace.damaged_images()) == {by_name["cut.dcm"]}
    predictions, failed = predict_images(workspace, device="cpu")  # the damaged image is no longer tried
    assert [p.image_id for p in predictions] == [by_name["ok.dcm"]] and failed == []


def test_a_jpeg_photograph_cut_short_with_its_end_marker_is_damaged(tmp_path):
    from PIL import Image

    from core.imaging import render

    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[0:120, 0:160]
    pixels = np.stack([(xx + yy) % 256, (2 * xx) % 256, (3 * yy) % 256], -1).astype(np.uint8)
    pixels = np.clip(pixels.astype(int) + rng.integers(0, 20, pixels.shape), 0, 255).astype(np.uint8)
    whole = tmp_path / "whole.jpg"
    Image.fromarray(pixels).save(whole, "JPEG", quality=90)
    data = whole.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[:len(data) // 2] + b"\xff\xd9")
    assert scan_file(whole).kind == "photo" and render(whole).shape == (120, 160, 3)
    with pytest.raises(DamagedImageError, match="the JPEG picture ends before the image is complete") as info:
        scan_file(cut)
    assert info.value.key.startswith("sha256:")
    assert scan_file(cut, IntegrityOptions(trial_decode=False)).kind == "photo"
    with pytest.raises(DamagedImageError):
        render(cut)


def test_a_codestream_declaring_another_size_is_refused_before_decoding(tmp_path):
    """Found by the soak: a JPEG height flipped to 0 made libjpeg grow its image without bound."""
    def zero_height(streams):
        body = bytearray(streams[1])
        at = body.find(b"\xff\xc0")
        body[at + 5:at + 7] = b"\x00\x00"
        streams[1] = bytes(body)
        return streams

    path = tmp_path / "dnl.dcm"
    path.write_bytes(_rewrap(codestreams.file_bytes("jpeg_baseline", 3), 3, zero_height))
    for options in (IntegrityOptions(), IntegrityOptions(trial_decode=False)):
        with pytest.raises(DamagedImageError, match=r"frame 2 of 3: .* declares 64×0 pixels"):
            scan_file(path, options)
    with pytest.raises(DamagedImageError, match="declares 64×0 pixels"):
        dicom_io.decode_frame(path, 1)
    j2k = bytearray(codestreams.file_bytes("j2k", 1))
    at = j2k.find(b"\xff\x4f\xff\x51")
    j2k[at + 8:at + 12] = (4096).to_bytes(4, "big")  # Xsiz: 4096 columns
    (tmp_path / "wide.dcm").write_bytes(bytes(j2k))
    with pytest.raises(DamagedImageError, match="declares 4096×64 pixels"):
        scan_file(tmp_path / "wide.dcm")


def test_header_oddities_are_no_damage_but_decoder_complaints_are(tmp_path):
    import warnings

    from core.imaging.integrity import decode_guard

    ds = codestreams.build("jpeg_lossless_sv1", 1)
    ds.ReferringPhysicianName = "A" * 70  # pydicom warns about the value when it reads it back
    ds.add_new(0x00081150, "UI", "1.2.3.abc")  # an invalid UI: another parser warning
    path = codestreams.write(ds, tmp_path / "odd.dcm")
    raw, _ = dicom_io.decode_frame(path, 0)  # decodes, not damaged
    assert raw.shape == (64, 64)
    with pytest.raises(DamagedImageError, match="the decoder reported a problem"):
        with decode_guard():
            logging.getLogger("pydicom.pixels.decoders.base").error("The decoded segment length does not match")
    with decode_guard():  # a memory-layout note is no damage
        logging.getLogger("pydicom.pixels.decoders.base").warning("Unable to return an ndarray that's a view on the "
                                                                  "original buffer")
        warnings.warn("Invalid value for VR UI", UserWarning)  # raised here, not by a decoder: no damage


def test_an_rle_segment_longer_than_one_pad_byte_is_damage():
    from core.imaging.integrity import _benign

    note = "The decoded RLE segment contains non-conformant padding - {} vs. {} bytes expected"
    assert not _benign(note.format(4097, 4096))  # an even-sized image needs no pad: its runs changed
    assert _benign(note.format(4096, 4095))  # odd-sized image padded to an even length
    assert not _benign(note.format(4160, 4095))
