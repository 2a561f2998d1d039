"""De-identified DICOM SR / Secondary Capture export of the real radiographs in ../shared/data/dicom.

Every exported file is scanned byte by byte for the PHI of the source headers
(names, IDs, accession numbers, institutions, physicians, dates, UIDs, file names).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pydicom

from tests.conftest import shared_path
from tests.core.test_export import COMPREHENSIVE_SR, SALT, SECONDARY_CAPTURE, phi_found

PHI_KEYWORDS = ("PatientName", "PatientID", "OtherPatientIDs", "AccessionNumber", "InstitutionName",
                "InstitutionAddress", "ReferringPhysicianName", "StationName", "DeviceSerialNumber", "StudyID")


def _needles(path: Path) -> list[str]:
    ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
    keep = str(ds.get("Manufacturer", ""))  # retained by the profile (OFFIS names itself as institution too)
    values = [str(ds.get(k, "") or "") for k in PHI_KEYWORDS]
    values += [str(e.value) for e in ds.iterall() if e.VR in ("DA", "UI") and e.value
               and not str(e.value).startswith("1.2.840.10008.")]
    values += [path.name, path.stem]
    return [v for v in values if len(v) >= 4 and v != keep]


def test_real_dicom_export_is_deidentified(workspace, tmp_path):
    from core.explain.cache import cache_key
    from core.explain.protocol import resolve_params
    from core.export import export_workspace
    from core.importer import import_paths
    from core.types import ModelVersion

    folder = shared_path("dicom")
    report = import_paths(workspace, [folder])
    assert report.imported + report.skipped > 0
    refs = workspace.images()
    for ref in refs:
        workspace.add_label(ref.id, ["pneumonia"], "Dr^Strange")
    workspace.add_model(ModelVersion("v1", "resnet18", ("normal", "pneumonia"), str(tmp_path / "m.pt"),
                                     status="active", file_hash="h1", params={"input_spec": {"size": 32}}))
    small = min(refs, key=lambda r: r.record.rows * r.record.columns)
    buf = io.BytesIO()
    np.savez_compressed(buf, map=np.full((small.record.rows, small.record.columns), 0.5, np.float32))
    key = cache_key(small.record.key, "v1", "h1", "occlusion", "pneumonia", resolve_params("occlusion", 32, {}))
    workspace.put_explanation(key, small.id, "v1", "occlusion", "pneumonia", {}, buf.getvalue(), {})

    out = tmp_path / "export"
    result = export_workspace(workspace, out / "sr", "dicom-sr", deidentify=True, salt=SALT)
    export_workspace(workspace, out / "t.csv", "csv", deidentify=True, salt=SALT)
    export_workspace(workspace, out / "t.json", "json", deidentify=True, salt=SALT)
    assert result.counts["sr"] == len(refs) - len(result.skipped) and result.counts["sc"] == 1

    needles = sorted({n for ref in refs for n in _needles(Path(ref.path))} | {str(folder), "Dr^Strange"})
    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert not phi_found(files, needles)

    rows = {r["image_id"]: r for r in json.loads((out / "t.json").read_text())["images"]}
    for entry in json.loads((out / "sr" / "manifest.json").read_text())["files"]:
        ds = pydicom.dcmread(out / "sr" / entry["file"])
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.SOPClassUID in (COMPREHENSIVE_SR, SECONDARY_CAPTURE)
        assert ds.StudyInstanceUID == rows[entry["image_id"]]["study_uid"]
        assert entry["referenced_sop_instance_uid"] == rows[entry["image_id"]]["sop_uid"]
        if ds.SOPClassUID == SECONDARY_CAPTURE:
            assert ds.pixel_array.shape == (small.record.rows, small.record.columns, 3)


def test_real_photographs_export_deidentified(workspace, tmp_path):
    """Real HAM10000 dermatoscopy JPEGs: each becomes a VL Photographic Image with the decoded pixels,
    referenced by its SR; no file name, lesion id or folder path is in any exported byte."""
    import shutil

    from core.export import export_workspace
    from core.export.deidentify import Deidentifier
    from core.imaging.photo import decode_photo
    from core.importer import import_paths

    folder = shared_path("ham10000_sample")
    picked = [sorted((folder / c).glob("*.jpg"))[0] for c in ("mel", "nv", "bcc")]
    for src in picked:  # a copy under the patient-named folders a clinic might use
        (tmp_path / "in" / f"Doe_Jane_{src.parent.name}").mkdir(parents=True)
        shutil.copy(src, tmp_path / "in" / f"Doe_Jane_{src.parent.name}" / src.name)
    import_paths(workspace, [tmp_path / "in"])
    refs = workspace.images()
    for ref in refs:
        workspace.add_label(ref.id, [Path(ref.path).parent.name.split("_")[-1]], "Dr^Strange")
    out = tmp_path / "export"
    held = export_workspace(workspace, tmp_path / "held", "dicom-sr", deidentify=True, salt=SALT)
    assert held.counts == {"photo": 0, "sr": 0, "sc": 0, "skipped": 0} and len(held.held_back) == 3
    result = export_workspace(workspace, out / "sr", "dicom-sr", deidentify=True, salt=SALT, include_burned_in=True)
    export_workspace(workspace, out / "t.json", "json", deidentify=True, salt=SALT)
    assert result.counts == {"photo": 3, "sr": 3, "sc": 0, "skipped": 0}
    needles = ["Doe_Jane", "Dr^Strange", str(tmp_path), str(folder)] + [p.stem for p in picked]
    needles += [ref.id for ref in refs] + [ref.record.key.split(":")[1] for ref in refs]
    assert not phi_found(sorted(p for p in out.rglob("*") if p.is_file()), needles)
    manifest = json.loads((out / "sr" / "manifest.json").read_text())["files"]
    photos = {e["image_id"]: pydicom.dcmread(out / "sr" / e["file"]) for e in manifest if e["kind"] == "photo"}
    shown = Deidentifier(SALT)
    pixels = {shown.pseudonym("img", ref.id, 12): decode_photo(ref.path) for ref in refs}
    assert set(photos) == set(pixels)
    for entry in manifest:
        ds = pydicom.dcmread(out / "sr" / entry["file"])
        assert ds.PatientIdentityRemoved == "YES"
        if entry["kind"] == "photo":
            assert ds.PhotometricInterpretation == "RGB" and ds.LossyImageCompression == "01"
            assert np.array_equal(ds.pixel_array, pixels[entry["image_id"]])
        else:
            assert ds.SOPClassUID == COMPREHENSIVE_SR
            assert entry["referenced_sop_instance_uid"] == photos[entry["image_id"]].SOPInstanceUID
            assert ds.StudyInstanceUID == photos[entry["image_id"]].StudyInstanceUID
