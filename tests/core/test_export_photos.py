"""DICOM export of labelled photographs: a VL Photographic Image per photograph, then its SR and SCs.

The photographs sit in folders and files named after made-up patients (``Doe_Jane_MRN4455``
…) and the labels CSV carries patient columns, so the de-identified export can be scanned
byte by byte for names, IDs, file names and paths.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from tests.core.conftest import write_dataset
from tests.core.test_export import COMPREHENSIVE_SR, SALT, SECONDARY_CAPTURE, phi_found

VL_PHOTO = "1.2.840.10008.5.1.4.1.1.77.1.4"
JANE, ROE = "Doe_Jane_MRN4455", "Roe_Richard_MRN7788"
NOTE = "Jane Doe, mole on the left shoulder"


def _rgb(path: Path, seed: int, shape=(24, 40)) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(path, quality=95)
    return path


@pytest.fixture
def photos(tmp_path, workspace):
    """Two folders ("studies") of photographs: labelled RGB PNG/JPEG, CSV-labelled grayscale, one explained."""
    from core.explain.cache import cache_key
    from core.explain.protocol import resolve_params
    from core.importer import import_paths
    from core.types import ModelVersion, Prediction

    jane, roe = tmp_path / "in" / JANE, tmp_path / "in" / ROE
    jane.mkdir(parents=True)
    files = [_rgb(jane / "Jane_Doe_back.png", 1), _rgb(jane / "Jane_Doe_arm.jpg", 2, (30, 20))]
    write_dataset(roe, n=3)  # img000..img002.png (grayscale) + labels.csv
    with open(tmp_path / "in" / "labels.csv", "w", newline="") as fh:  # patient columns Loupe must never leak
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "patient_id", "patient_name"])
        writer.writerow([f"{JANE}/Jane_Doe_back.png", "melanoma", "MRN4455", "Doe^Jane"])
        writer.writerow([f"{ROE}/img000.png", "nevus", "MRN7788", "Roe^Richard"])
        writer.writerow([f"{ROE}/img001.png", "nevus", "MRN7788", "Roe^Richard"])
    _rgb(jane / "Jane_Doe_unlabelled.png", 3)  # neither labelled nor explained: not exported
    report = import_paths(workspace, [tmp_path / "in"], tmp_path / "in" / "labels.csv")
    assert report.imported == 6 and not report.errors, report.errors
    refs = {Path(r.path).name: r for r in workspace.images()}
    back, arm = refs["Jane_Doe_back.png"], refs["Jane_Doe_arm.jpg"]
    workspace.add_label(back.id, ["melanoma"], "Dr^Strange", severity=2, note=NOTE)
    model = workspace.add_model(ModelVersion("v1", "resnet18", ("melanoma", "nevus"), str(tmp_path / "m.pt"),
                                             status="active", file_hash="h1", params={"input_spec": {"size": 32}}))
    workspace.add_predictions("v1", [Prediction(back.id, "v1", {"melanoma": 0.8, "nevus": 0.2}, "melanoma")])
    buf = io.BytesIO()  # only the arm photograph is explained (not labelled): photo + SC, no SR
    np.savez_compressed(buf, map=np.linspace(0, 1, 30 * 20, dtype=np.float32).reshape(30, 20))
    key = cache_key(arm.record.key, "v1", "h1", "gradcam", "melanoma", resolve_params("gradcam", 32, {}))
    workspace.put_explanation(key, arm.id, "v1", "gradcam", "melanoma", {}, buf.getvalue(),
                              {"target": "melanoma", "target_index": 0, "seconds": 0.1})
    needles = [JANE, ROE, "Jane_Doe", "Doe^Jane", "Roe^Richard", "MRN4455", "MRN7788", "Dr^Strange", NOTE,
               str(tmp_path), "img000", "img001", "labels.csv", *[r.id for r in refs.values()],
               *[r.record.key.split(":")[1] for r in refs.values()]]
    return {"ws": workspace, "refs": refs, "model": model, "needles": needles, "files": files}


def _manifest(folder: Path) -> list[dict]:
    return json.loads((folder / "manifest.json").read_text())["files"]


def _content_items(ds):
    for item in ds.get("ContentSequence", []):
        yield item
        yield from _content_items(item)


def _photo_uids(folder: Path) -> dict[str, tuple[str, str, str]]:
    """image id (as exported) → (study, series, SOP instance UID) of its photo object."""
    out = {}
    for entry in _manifest(folder):
        if entry["kind"] == "photo":
            ds = pydicom.dcmread(folder / entry["file"])
            out[entry["image_id"]] = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    return out


def test_photographs_export_as_vl_photographic_images_with_sr_and_sc(photos, tmp_path):
    import highdicom as hd

    from core.export import export_workspace
    from core.imaging.photo import decode_photo

    ws, refs = photos["ws"], photos["refs"]
    report = export_workspace(ws, tmp_path / "sr", "dicom-sr")
    assert report.counts == {"photo": 4, "sr": 3, "sc": 1, "skipped": 0}
    names = sorted(p.name for p in (tmp_path / "sr").iterdir())
    assert names == [f"PH-0000{i}.dcm" for i in range(1, 5)] + ["SC-00001.dcm"] + \
        [f"SR-0000{i}.dcm" for i in range(1, 4)] + ["manifest.json"]
    by_id = {r.id: r for r in refs.values()}
    manifest = _manifest(tmp_path / "sr")
    objects = {e["image_id"]: {} for e in manifest}
    for entry in manifest:
        ds = pydicom.dcmread(tmp_path / "sr" / entry["file"])  # every file reads back
        assert ds.SOPInstanceUID == entry["sop_instance_uid"]
        objects[entry["image_id"]][entry["kind"]] = ds
    assert set(objects) == {refs[n].id for n in ("Jane_Doe_back.png", "Jane_Doe_arm.jpg", "img000.png", "img001.png")}
    for image_id, kinds in objects.items():
        photo, ref = kinds["photo"], by_id[image_id]
        assert photo.SOPClassUID == VL_PHOTO and photo.Modality == "XC"
        assert photo.file_meta.MediaStorageSOPInstanceUID == photo.SOPInstanceUID
        expected = decode_photo(ref.path)
        assert np.array_equal(photo.pixel_array, expected)
        assert photo.PhotometricInterpretation == ("RGB" if expected.ndim == 3 else "MONOCHROME2")
        assert photo.LossyImageCompression == ("01" if ref.path.endswith(".jpg") else "00")
        if "sr" in kinds:
            sr = kinds["sr"]
            assert sr.SOPClassUID == COMPREHENSIVE_SR and sr.StudyInstanceUID == photo.StudyInstanceUID
            assert sr.PatientID == photo.PatientID
            refd = {i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                    for i in _content_items(sr) if "ReferencedSOPSequence" in i}
            assert refd == {photo.SOPInstanceUID}
            evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
            assert evidence.StudyInstanceUID == photo.StudyInstanceUID
            assert evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPClassUID == VL_PHOTO
    back = objects[refs["Jane_Doe_back.png"].id]
    back_sr = [e["file"] for e in manifest if e["kind"] == "sr" and e["image_id"] == refs["Jane_Doe_back.png"].id]
    parsed = hd.sr.srread(tmp_path / "sr" / back_sr[0])
    groups = parsed.content.get_image_measurement_groups()
    human = [g for g in groups if g.tracking_identifier == "annotator finding"][0]
    assert "Malignant melanoma" in {q.name.meaning for q in human.get_qualitative_evaluations()}
    assert human.source_images[0].referenced_sop_instance_uid == back["photo"].SOPInstanceUID
    assert [g for g in groups if g.tracking_identifier == "model prediction"]
    arm = objects[refs["Jane_Doe_arm.jpg"].id]
    assert set(arm) == {"photo", "sc"}  # explained but not labelled
    sc = arm["sc"]
    assert sc.SOPClassUID == SECONDARY_CAPTURE and sc.StudyInstanceUID == arm["photo"].StudyInstanceUID
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == arm["photo"].SOPInstanceUID
    assert sc.SourceImageSequence[0].ReferencedSOPClassUID == VL_PHOTO
    assert sc.pixel_array.shape == (30, 20, 3)
    # one folder is one study (and one photo series); the two folders are two studies
    jane = {back["photo"].StudyInstanceUID, arm["photo"].StudyInstanceUID}
    roe = {objects[refs[n].id]["photo"].StudyInstanceUID for n in ("img000.png", "img001.png")}
    assert len(jane) == 1 and len(roe) == 1 and jane != roe
    assert back["photo"].SeriesInstanceUID == arm["photo"].SeriesInstanceUID
    # identity comes from the workspace, never from the file: no path or file name in any DICOM byte
    dicom = sorted((tmp_path / "sr").glob("*.dcm"))
    assert not phi_found(dicom, [JANE, ROE, "Jane_Doe", "img000", "img001", str(tmp_path), ".png", ".jpg"])
    assert ws.audit_log(limit=1)[0]["action"] == "export.dicom-sr"


def test_exporting_twice_gives_the_same_uids(photos, tmp_path):
    from core.export import export_workspace

    ws = photos["ws"]
    export_workspace(ws, tmp_path / "one", "dicom-sr")
    export_workspace(ws, tmp_path / "two", "dicom-sr")
    first, second = _photo_uids(tmp_path / "one"), _photo_uids(tmp_path / "two")
    assert first == second and len(first) == 4
    refs_one = {e["file"]: e["referenced_sop_instance_uid"] for e in _manifest(tmp_path / "one")}
    assert refs_one == {e["file"]: e["referenced_sop_instance_uid"] for e in _manifest(tmp_path / "two")}
    # de-identified with the same salt: the same pseudonymous UIDs; a new salt: new ones
    export_workspace(ws, tmp_path / "d1", "dicom-sr", deidentify=True, salt=SALT, include_burned_in=True)
    export_workspace(ws, tmp_path / "d2", "dicom-sr", deidentify=True, salt=SALT, include_burned_in=True)
    export_workspace(ws, tmp_path / "d3", "dicom-sr", deidentify=True, salt=b"another salt", include_burned_in=True)
    d1, d2, d3 = (_photo_uids(tmp_path / d) for d in ("d1", "d2", "d3"))
    assert d1 == d2
    flat = lambda uids: {u for t in uids.values() for u in t}  # noqa: E731
    assert not flat(d1) & flat(d3) and not flat(d1) & flat(first)


def test_deidentified_photo_export_holds_no_phi(photos, tmp_path):
    from core.export import export_workspace

    ws = photos["ws"]
    out = tmp_path / "out"
    plain = export_workspace(ws, tmp_path / "plain", "dicom-sr")
    report = export_workspace(ws, out / "sr", "dicom-sr", deidentify=True, salt=SALT, include_burned_in=True)
    export_workspace(ws, out / "t.csv", "csv", deidentify=True, salt=SALT)
    export_workspace(ws, out / "t.json", "json", deidentify=True, salt=SALT)
    assert report.counts == plain.counts
    # the identifiers of the plain export (derived UIDs, LOUPE-PH patient ids) must not survive either
    originals = [str(getattr(pydicom.dcmread(f), k)) for f in plain.files
                 for k in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")]
    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert not phi_found(files, photos["needles"] + originals)
    manifest = _manifest(out / "sr")
    photo_of = {e["image_id"]: e["sop_instance_uid"] for e in manifest if e["kind"] == "photo"}
    rows = {r["image_id"] for r in json.loads((out / "t.json").read_text())["images"]}
    assert set(photo_of) <= rows  # the same image pseudonyms as the tables
    for entry in manifest:
        ds = pydicom.dcmread(out / "sr" / entry["file"])
        assert ds.PatientIdentityRemoved == "YES" and str(ds.PatientName).startswith("ANONYMOUS^")
        assert {i.CodeValue for i in ds.DeidentificationMethodCodeSequence} == {"113100", "113107"}
        if entry["kind"] == "photo":
            assert ds.SOPClassUID == VL_PHOTO and "SeriesDescription" not in ds
        else:
            assert entry["referenced_sop_instance_uid"] == photo_of[entry["image_id"]]


def test_build_photo_keeps_a_known_patient_and_deidentify_removes_it():
    from core.export.deidentify import Deidentifier
    from core.export.photo_dicom import build_photo, photo_uids
    from core.types import ImageRecord

    rec = ImageRecord(key="sha256:" + "ab" * 32, path="/data/Doe_Jane/Jane_Doe_back.png", kind="photo",
                      modality="XC", rows=4, columns=5, patient_id="MRN4455", patient_name="Doe^Jane",
                      study_uid="folder:0123456789abcdef", study_description="Doe_Jane", series_description="PNG")
    pixels = np.arange(60, dtype=np.uint8).reshape(4, 5, 3)
    ds = build_photo(rec, pixels, instance_number=3)
    assert ds.PatientID == "MRN4455" and str(ds.PatientName) == "Doe^Jane" and ds.InstanceNumber == 3
    assert (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID) == photo_uids(rec)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    assert b"Doe_Jane" not in buf.getvalue() and b"/data" not in buf.getvalue()  # no path, no folder name
    back = pydicom.dcmread(io.BytesIO(buf.getvalue()))
    assert np.array_equal(back.pixel_array, pixels)
    clean = Deidentifier(SALT).deidentify(ds)
    buf = io.BytesIO()
    clean.save_as(buf, enforce_file_format=True)
    needles = ("MRN4455", "Doe^Jane", ds.StudyInstanceUID, ds.SOPInstanceUID)
    assert not [n for n in needles if n.encode() in buf.getvalue()]
    assert np.array_equal(pydicom.dcmread(io.BytesIO(buf.getvalue())).pixel_array, pixels)


def test_build_photo_refuses_pixels_it_cannot_store():
    from core.export.photo_dicom import build_photo
    from core.types import ImageRecord

    rec = ImageRecord(key="sha256:00", path="x.png", kind="photo", modality="XC", rows=2, columns=2)
    with pytest.raises(ValueError, match="8-bit"):
        build_photo(rec, np.zeros((2, 2), np.uint16))
    with pytest.raises(ValueError, match="shape"):
        build_photo(rec, np.zeros((2, 2, 2), np.uint8))
    gray = build_photo(rec, np.full((2, 2), 7, np.uint8))  # no folder key: the image is its own study
    assert gray.PhotometricInterpretation == "MONOCHROME2" and gray.LossyImageCompression == ""
    other = build_photo(dataclasses.replace(rec, key="sha256:01"), np.zeros((2, 2), np.uint8))
    assert other.StudyInstanceUID != gray.StudyInstanceUID


def test_tables_are_unaffected_by_photo_export(photos, tmp_path):
    from core.export import export_workspace
    from core.export.tabular import BASE_COLUMNS

    ws, refs = photos["ws"], photos["refs"]
    export_workspace(ws, tmp_path / "sr", "dicom-sr")
    report = export_workspace(ws, tmp_path / "t.csv", "csv")
    assert report.counts == {"images": 6, "labelled": 3, "predicted": 1}
    rows = list(csv.DictReader(open(tmp_path / "t.csv", encoding="utf-8")))
    assert list(rows[0]) == BASE_COLUMNS + ["prob_melanoma", "prob_nevus"]
    back = [r for r in rows if r["image_id"] == refs["Jane_Doe_back.png"].id][0]
    assert back["path"] == refs["Jane_Doe_back.png"].path and back["sop_uid"] == "" and back["modality"] == "XC"
    assert back["label"] == "melanoma" and back["note"] == NOTE
    export_workspace(ws, tmp_path / "t.json", "json")
    doc = json.loads((tmp_path / "t.json").read_text())
    assert len(doc["images"]) == 6 and doc["classes"] == ["melanoma", "nevus"]
