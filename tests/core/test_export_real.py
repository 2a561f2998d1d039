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
