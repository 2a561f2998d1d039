"""Exports: PS3.15 de-identification, CSV/JSON rows, DICOM SR and Secondary Capture read back with pydicom.

``write_phi_study`` writes synthetic radiographs whose headers carry known PHI
(``Doe^Jane`` …); the de-identified exports are scanned byte by byte for it.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from tests.conftest import shared_path
from tests.core.dicom_factory import write_dicom

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
SALT = b"test-salt-0001"

#: Patient → (name, birth date, study date) of the synthetic study.
PATIENTS = {"PAT-12345": ("Doe^Jane", "19610203", "20230415"),
            "PAT-67890": ("Roe^Richard", "19550711", "20220930")}
OTHER_PHI = ["ACC998877", "St Elsewhere Hospital", "House^Gregory", "Tech^Terry", "1 Main Street Springfield",
             "SN-4455", "OTHER-777", "XR-ROOM-3", "Jane Doe left side", "Doe private", "Radiology Wing B"]


def write_phi_study(folder: Path) -> dict:
    """Three 32×32 radiographs (two of Jane Doe's in one study, one of Richard Roe) full of PHI.

    Returns ``{"files": [paths], "needles": [PHI strings incl. original UIDs and dates]}``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files, needles = [], [*OTHER_PHI]
    jane_study = pydicom.uid.generate_uid()
    for i, pid in enumerate(["PAT-12345", "PAT-12345", "PAT-67890"]):
        name, birth, date = PATIENTS[pid]
        path = write_dicom(folder / f"xray_{i}.dcm", rng.integers(0, 4000, (32, 32), dtype=np.uint16),
                           modality="CR", patient_id=pid)
        ds = pydicom.dcmread(path)
        ds.PatientName = name
        ds.PatientBirthDate = birth
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = date
        ds.AcquisitionDateTime = date + "101010"
        ds.StudyTime = "101010"
        if pid == "PAT-12345":
            ds.StudyInstanceUID = jane_study
        ds.AccessionNumber = "ACC998877"
        ds.InstitutionName = "St Elsewhere Hospital"
        ds.InstitutionAddress = "1 Main Street Springfield"
        ds.InstitutionalDepartmentName = "Radiology Wing B"
        ds.ReferringPhysicianName = "House^Gregory"
        ds.OperatorsName = "Tech^Terry"
        ds.DeviceSerialNumber = "SN-4455"
        ds.OtherPatientIDs = "OTHER-777"
        ds.StationName = "XR-ROOM-3"
        ds.ImageComments = "Jane Doe left side"
        ds.PatientSex = "F"
        ds.PatientOrientation = ["L", "F"]
        ref = Dataset()
        ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
        ref.ReferencedSOPInstanceUID = pydicom.uid.generate_uid()
        ds.SourceImageSequence = DicomSequence([ref])
        ds.add_new(0x00190010, "LO", "ACME")
        ds.add_new(0x00191001, "LO", "Doe private")
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
        needles += [name, pid, birth, date, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID,
                    ref.ReferencedSOPInstanceUID, path.name, str(folder)]
    return {"files": files, "needles": sorted(set(needles))}


def phi_found(paths, needles) -> list[tuple[str, str]]:
    """(file name, needle) for every PHI string present in the raw bytes of the files."""
    hits = []
    for path in paths:
        data = Path(path).read_bytes()
        hits += [(Path(path).name, n) for n in needles if n and _contains(data, n)]
    return hits


def _contains(data: bytes, needle: str) -> bool:
    """Whether ``needle`` is in ``data``; a number only counts when no digit touches it.

    A short ID such as 26210 otherwise turns up inside a freshly generated
    random UID (2.25.<39 digits>) about once in a few hundred exports.
    """
    if not needle.isdigit():
        return needle.encode() in data
    return re.search(rb"(?<![0-9])" + re.escape(needle.encode()) + rb"(?![0-9])", data) is not None


def _export_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def labelled(tmp_path, workspace):
    """A workspace with the PHI study imported, two images labelled, an active model, predictions and a map."""
    from core.explain.cache import cache_key
    from core.explain.protocol import resolve_params
    from core.importer import import_paths
    from core.types import ModelVersion, Prediction

    study = write_phi_study(tmp_path / "in")
    import_paths(workspace, [tmp_path / "in"])
    refs = {Path(r.path).name: r for r in workspace.images()}
    a, b = refs["xray_0.dcm"], refs["xray_2.dcm"]
    workspace.add_label(a.id, ["pneumonia"], "Dr^Strange", severity=2, note="Jane Doe looks unwell")
    workspace.add_label(b.id, ["normal"], "Dr^Strange")
    model = workspace.add_model(ModelVersion("v1", "resnet18", ("normal", "pneumonia"), str(tmp_path / "m.pt"),
                                             status="active", file_hash="h1", params={"input_spec": {"size": 32}}))
    workspace.add_predictions("v1", [Prediction(a.id, "v1", {"normal": 0.3, "pneumonia": 0.7}, "pneumonia"),
                                     Prediction(b.id, "v1", {"normal": 0.9, "pneumonia": 0.1}, "normal")])
    buf = io.BytesIO()
    np.savez_compressed(buf, map=np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32))
    key = cache_key(a.record.key, "v1", "h1", "gradcam", "predicted", resolve_params("gradcam", 32, {}))
    workspace.put_explanation(key, a.id, "v1", "gradcam", "pneumonia", {}, buf.getvalue(),
                              {"target": "pneumonia", "target_index": 1, "seconds": 0.1})
    return {"ws": workspace, "a": a, "b": b, "model": model, **study}


# --- de-identification -------------------------------------------------------------------------


def test_profile_keywords_are_dicom_keywords():
    from core.export.deidentify import EMPTY, REMOVE

    unknown = [k for k in (*REMOVE, *EMPTY) if tag_for_keyword(k) is None]
    assert not unknown


def test_uids_remapped_deterministically_per_salt():
    from core.export.deidentify import Deidentifier

    one, again, other = Deidentifier(SALT), Deidentifier(SALT), Deidentifier(b"other")
    uid = "1.2.3.4.5.6789"
    assert one.uid(uid) == again.uid(uid) != other.uid(uid)
    assert one.uid(uid).startswith("2.25.") and len(one.uid(uid)) <= 64
    assert one.uid("1.2.840.10008.5.1.4.1.1.1") == "1.2.840.10008.5.1.4.1.1.1"  # a SOP class stays
    assert one.shift_date("1995.07.20", "p") == one.shift_date("19950720", "p") != "19950720"
    assert one.shift_date("garbage", "p") == ""


def test_deidentify_applies_the_basic_profile(tmp_path):
    from core.export.deidentify import Deidentifier

    study = write_phi_study(tmp_path)
    deid = Deidentifier(SALT)
    sources = [pydicom.dcmread(f) for f in study["files"]]
    out = [deid.deidentify(ds) for ds in sources]
    first, second, roe = out
    assert str(sources[0].PatientName) == "Doe^Jane"  # the input is untouched
    assert str(first.PatientName) != "Doe^Jane" and first.PatientID.startswith("LOUPE-")
    assert first.PatientID == second.PatientID != roe.PatientID
    assert first.StudyInstanceUID == second.StudyInstanceUID != roe.StudyInstanceUID
    assert first.StudyInstanceUID == deid.uid(sources[0].StudyInstanceUID)
    assert first.file_meta.MediaStorageSOPInstanceUID == first.SOPInstanceUID
    assert first.SourceImageSequence[0].ReferencedSOPInstanceUID.startswith("2.25.")
    assert first.SOPClassUID == sources[0].SOPClassUID
    for keyword in ("InstitutionName", "InstitutionAddress", "OperatorsName", "DeviceSerialNumber",
                    "OtherPatientIDs", "StationName", "ImageComments", "InstitutionalDepartmentName"):
        assert keyword not in first, keyword
    assert first.AccessionNumber == "" and first.PatientBirthDate == "" and first.ReferringPhysicianName == ""
    assert not any(e.tag.is_private for e in first)
    assert first.StudyDate != "20230415" and len(first.StudyDate) == 8
    assert first.AcquisitionDateTime.startswith(first.StudyDate)
    assert first.PatientIdentityRemoved == "YES"
    assert {i.CodeValue for i in first.DeidentificationMethodCodeSequence} == {"113100", "113107"}
    assert first.DeidentificationMethod and first.LongitudinalTemporalInformationModified == "MODIFIED"
    buf = io.BytesIO()
    first.save_as(buf)
    hits = [n for n in study["needles"] if n.encode() in buf.getvalue()]
    assert not hits


def test_real_headers_lose_their_phi():
    from core.export.deidentify import Deidentifier

    folder = shared_path("dicom")
    deid = Deidentifier(SALT)
    for path in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(path, force=True)
        needles = [str(ds.get(k, "") or "") for k in ("PatientName", "PatientID", "AccessionNumber",
                                                       "InstitutionName", "ReferringPhysicianName",
                                                       "StationName", "DeviceSerialNumber")]
        needles += [str(e.value) for e in ds.iterall() if e.VR in ("DA", "UI") and e.value
                    and not str(e.value).startswith("1.2.840.10008.")]
        # Manufacturer is kept by the profile (OFFIS's test files name it as the institution too).
        needles = [n for n in needles if len(n) >= 4 and n != str(ds.get("Manufacturer", ""))]
        clean = deid.deidentify(ds)
        buf = io.BytesIO()
        clean.save_as(buf)
        back = pydicom.dcmread(io.BytesIO(buf.getvalue()), force=True)
        assert back.PatientIdentityRemoved == "YES"
        assert back.PixelData == ds.PixelData  # pixels untouched
        hits = [n for n in needles if n.encode() in buf.getvalue()]
        assert not hits, (path.name, hits)


# --- CSV / JSON ------------------------------------------------------------------------------------


def test_csv_and_json_rows(labelled, tmp_path):
    from core.export import export_workspace

    ws, a = labelled["ws"], labelled["a"]
    report = export_workspace(ws, tmp_path / "out.csv", "csv")
    assert report.counts == {"images": 3, "labelled": 2, "predicted": 2}
    rows = {r["image_id"]: r for r in csv.DictReader(open(tmp_path / "out.csv", encoding="utf-8"))}
    row = rows[a.id]
    assert row["label"] == "pneumonia" and row["severity"] == "2" and row["annotator"] == "Dr^Strange"
    assert row["sop_uid"] == a.record.sop_uid and row["path"] == a.path
    assert row["predicted"] == "pneumonia" and float(row["prob_pneumonia"]) == pytest.approx(0.7)
    assert row["model_version"] == "v1" and row["note"] == "Jane Doe looks unwell"
    export_workspace(ws, tmp_path / "out.json", "json")
    doc = json.loads((tmp_path / "out.json").read_text())
    assert doc["classes"] == ["normal", "pneumonia"] and doc["model_version"] == "v1"
    by_id = {r["image_id"]: r for r in doc["images"]}
    assert by_id[a.id]["probs"] == {"normal": 0.3, "pneumonia": 0.7}
    assert by_id[a.id]["classes"] == ["pneumonia"]


def test_deidentified_tables_hold_no_phi(labelled, tmp_path):
    from core.export import export_workspace

    ws = labelled["ws"]
    export_workspace(ws, tmp_path / "out" / "t.csv", "csv", deidentify=True, salt=SALT)
    export_workspace(ws, tmp_path / "out" / "t.json", "json", deidentify=True, salt=SALT)
    needles = labelled["needles"] + [labelled["a"].id, labelled["b"].id, "Dr^Strange", "Jane Doe looks unwell"]
    assert not phi_found(_export_files(tmp_path / "out"), needles)
    rows = list(csv.DictReader(open(tmp_path / "out" / "t.csv", encoding="utf-8")))
    assert "path" not in rows[0] and all(r["image_id"].startswith("img-") for r in rows)
    assert all(r["sop_uid"].startswith("2.25.") for r in rows)
    # labelled_at moves with the patient's dates: same offset as the study date, so the interval is kept.
    import datetime as dt

    from core.export.deidentify import Deidentifier

    a = labelled["a"]
    created = ws.current_label(a.id).created_at
    row = [r for r in rows if r["sop_uid"] == Deidentifier(SALT).uid(a.record.sop_uid)][0]
    shift = dt.datetime.fromisoformat(row["labelled_at"]) - dt.datetime.fromisoformat(created)
    assert shift.days == Deidentifier(SALT).day_offset("PAT-12345") and row["note"] == ""


# --- DICOM SR and Secondary Capture --------------------------------------------------------------


def _content_items(ds):
    for item in ds.get("ContentSequence", []):
        yield item
        yield from _content_items(item)


def test_dicom_sr_export_reads_back(labelled, tmp_path):
    import highdicom as hd

    from core.export import export_workspace

    ws, a, b = labelled["ws"], labelled["a"], labelled["b"]
    report = export_workspace(ws, tmp_path / "sr", "dicom-sr")
    assert report.counts == {"photo": 0, "sr": 2, "sc": 1, "skipped": 0}
    names = sorted(p.name for p in (tmp_path / "sr").iterdir())
    assert names == ["SC-00001.dcm", "SR-00001.dcm", "SR-00002.dcm", "manifest.json"]
    manifest = json.loads((tmp_path / "sr" / "manifest.json").read_text())["files"]
    by_file = {m["file"]: m for m in manifest}
    sources = {a.id: a, b.id: b}
    for name in ("SR-00001.dcm", "SR-00002.dcm"):
        sr = pydicom.dcmread(tmp_path / "sr" / name)
        src = sources[by_file[name]["image_id"]].record
        assert sr.SOPClassUID == COMPREHENSIVE_SR and sr.Modality == "SR"
        assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
        assert sr.StudyInstanceUID == src.study_uid and sr.PatientID == src.patient_id
        items = list(_content_items(sr))
        refs = {i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in items if "ReferencedSOPSequence" in i}
        assert refs == {src.sop_uid}
        assert "Dr^Strange" in {str(i.PersonName) for i in items if "PersonName" in i}
        texts = {str(i.TextValue) for i in items if "TextValue" in i}
        assert "Loupe v1" in texts and "v1" in texts and "resnet18" in texts
        parsed = hd.sr.srread(tmp_path / "sr" / name)
        groups = parsed.content.get_image_measurement_groups()
        human = [g for g in groups if g.tracking_identifier == "annotator finding"][0]
        meanings = {q.name.meaning for q in human.get_qualitative_evaluations()}
        expected = "Pneumonia" if src.sop_uid == a.record.sop_uid else "Normal"
        assert expected in meanings
        model_group = [g for g in groups if g.tracking_identifier == "model prediction"][0]
        assert len(model_group.get_measurements()) == 2
    sc = pydicom.dcmread(tmp_path / "sr" / "SC-00001.dcm")
    assert sc.SOPClassUID == SECONDARY_CAPTURE and sc.PhotometricInterpretation == "RGB"
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == a.record.sop_uid
    assert sc.StudyInstanceUID == a.record.study_uid
    assert sc.pixel_array.shape == (32, 32, 3)
    assert "gradcam" in sc.DerivationDescription and "v1" in sc.DerivationDescription
    assert ws.verify_audit() == (True, None)
    assert ws.audit_log(limit=1)[0]["action"] == "export.dicom-sr"


def test_deidentified_dicom_export_is_clean_and_consistent(labelled, tmp_path):
    from core.export import export_workspace

    ws = labelled["ws"]
    export_workspace(ws, tmp_path / "out" / "sr", "dicom-sr", deidentify=True, salt=SALT)
    export_workspace(ws, tmp_path / "out" / "t.csv", "csv", deidentify=True, salt=SALT)
    files = _export_files(tmp_path / "out")
    needles = labelled["needles"] + [labelled["a"].id, labelled["b"].id, "Dr^Strange"]
    assert not phi_found(files, needles)
    rows = {r["image_id"]: r for r in csv.DictReader(open(tmp_path / "out" / "t.csv", encoding="utf-8"))}
    manifest = json.loads((tmp_path / "out" / "sr" / "manifest.json").read_text())["files"]
    for entry in manifest:
        ds = pydicom.dcmread(tmp_path / "out" / "sr" / entry["file"])
        row = rows[entry["image_id"]]
        assert ds.PatientIdentityRemoved == "YES" and ds.StudyInstanceUID == row["study_uid"]
        assert str(ds.PatientName).startswith("ANONYMOUS^")
        if ds.SOPClassUID == SECONDARY_CAPTURE:
            assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == row["sop_uid"]
        else:
            refs = {i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                    for i in _content_items(ds) if "ReferencedSOPSequence" in i}
            assert refs == {row["sop_uid"]}
            assert {i.CodeValue for i in ds.DeidentificationMethodCodeSequence} == {"113100", "113107"}


def test_a_photograph_is_exported_with_its_sr_and_folder_must_be_new(workspace, tmp_path):
    from PIL import Image

    from core.errors import LoupeError
    from core.export import export_workspace
    from core.imaging import clear_cache
    from core.importer import import_paths

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "skin.png")
    import_paths(workspace, [tmp_path / "skin.png"])
    ref = workspace.images()[0]
    workspace.add_label(ref.id, ["nevus"], "Dr^Strange")
    report = export_workspace(workspace, tmp_path / "sr", "dicom-sr")
    assert report.counts == {"photo": 1, "sr": 1, "sc": 0, "skipped": 0} and not report.skipped
    photo = pydicom.dcmread(tmp_path / "sr" / "PH-00001.dcm")
    sr = pydicom.dcmread(tmp_path / "sr" / "SR-00001.dcm")
    assert sr.StudyInstanceUID == photo.StudyInstanceUID
    assert {i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
            for i in _content_items(sr) if "ReferencedSOPSequence" in i} == {photo.SOPInstanceUID}
    (tmp_path / "skin.png").write_bytes(b"gone")  # a photograph that cannot be read any more is skipped
    clear_cache()
    report = export_workspace(workspace, tmp_path / "sr2", "dicom-sr")
    assert report.counts["photo"] == 0 and report.skipped[0]["id"] == ref.id
    assert "cannot read the photograph" in report.skipped[0]["reason"]
    with pytest.raises(LoupeError, match="not an empty folder"):
        export_workspace(workspace, tmp_path / "sr", "dicom-sr")
    with pytest.raises(LoupeError, match="unknown export format"):
        export_workspace(workspace, tmp_path / "x", "xml")


def test_every_cached_map_of_the_active_model_is_exported_whatever_its_parameters(labelled, tmp_path):
    from core.explain.cache import cache_key
    from core.explain.protocol import resolve_params
    from core.export import export_workspace

    ws, a, b = labelled["ws"], labelled["a"], labelled["b"]
    buf = io.BytesIO()
    np.savez_compressed(buf, map=np.full((32, 32), 0.25, np.float32))
    params = resolve_params("occlusion", 32, {"window": 8})
    ws.put_explanation(cache_key(b.record.key, "v1", "h1", "occlusion", "normal", params), b.id, "v1", "occlusion",
                       "normal", params, buf.getvalue(), {"target": "normal"})
    # a map of another model version is not the active model's finding: left out
    ws.put_explanation("other-version", b.id, "v0", "lime", "normal", {}, buf.getvalue(), {"target": "normal"})
    assert len(ws.explanations_for(b.id)) == 2 and len(ws.explanations_for(b.id, "v1")) == 1
    report = export_workspace(ws, tmp_path / "sr", "dicom-sr")
    assert report.counts["sc"] == 2
    derivations = sorted(str(pydicom.dcmread(p).DerivationDescription) for p in (tmp_path / "sr").glob("SC-*.dcm"))
    assert any("occlusion" in d for d in derivations) and not any("lime" in d for d in derivations)
