"""PACS against real servers: pynetdicom's qrscp (C-FIND, C-GET, C-STORE) and Orthanc's DICOMweb."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.pacs import PacsError, PacsNode, query, retrieve, retrieve_and_import, send
from tests.core.pacs_servers import orthanc_available, start_orthanc, start_qrscp, stop, storescu

REPO = Path(__file__).resolve().parents[2]
DICOM = REPO.parent / "shared" / "data" / "dicom"
NIH = next(iter(sorted(DICOM.glob("NIH_DX_chest_*.dcm"))), None) if DICOM.exists() else None
RG2 = DICOM / "RG2_JPLL.dcm"
pytestmark = pytest.mark.skipif(NIH is None, reason="../shared/data/dicom is absent")


@pytest.fixture
def qrscp(tmp_path):
    proc, port = start_qrscp(tmp_path / "qrscp")
    storescu(port, [NIH, RG2])
    yield PacsNode(host="127.0.0.1", port=port, aet="LOUPE", called_aet="QRSCP", timeout=30)
    stop(proc)


def _loupe(ws, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "app.cli", "--workspace", str(ws), *args], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=300)


def test_query_retrieve_send_back_with_loupe_pacs(qrscp, tmp_path):
    """The acceptance: query by patient id, retrieve and import, store the SR back; the SCP then holds it."""
    ws = tmp_path / "ws.sqlite"
    node = ["--host", "127.0.0.1", "--port", str(qrscp.port), "--aet", "LOUPE", "--called-aet", "QRSCP"]
    found = _loupe(ws, "pacs", "query", *node, "--patient-id", "Covid0000", "--json")
    assert found.returncode == 0, found.stderr
    studies = json.loads(found.stdout)
    assert len(studies) == 1
    study = studies[0]
    assert study["patient_id"] == "Covid0000" and study["modalities"] == ["DX"] and study["n_instances"] == 1
    got = _loupe(ws, "pacs", "retrieve", *node, "--study-uid", study["study_uid"], "--json")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["imported"] == 1
    listed = json.loads(_loupe(ws, "list", "--json").stdout)
    assert [row["study_uid"] for row in listed] == [study["study_uid"]]
    assert Path(listed[0]["path"]).is_relative_to(tmp_path / "pacs" / study["study_uid"])
    assert _loupe(ws, "label", listed[0]["id"], "--class", "normal", "--annotator", "ann").returncode == 0
    out = tmp_path / "export"
    assert _loupe(ws, "export", "--format", "dicom-sr", str(out)).returncode == 0
    sent = _loupe(ws, "pacs", "send", *node, str(out), "--json")
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout) == {"sent": 1, "failed": []}
    after = query(qrscp, patient_id="Covid0000")
    assert after[0].modalities == ("DX", "SR") and after[0].n_instances == 2
    # a retrieve again brings the SR too, and the import only adds what is new (the SR is not an image)
    again = _loupe(ws, "pacs", "retrieve", *node, "--study-uid", study["study_uid"], "--json")
    assert json.loads(again.stdout)["imported"] == 0


def test_compressed_study_and_errors(qrscp, tmp_path, workspace):
    (match,) = query(qrscp, patient_id="10RG2")
    files, failures = retrieve(qrscp, match.study_uid, tmp_path / "got")
    assert len(files) == 1 and not failures
    import pydicom

    original, copy = pydicom.dcmread(RG2), pydicom.dcmread(files[0])
    assert copy.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert (copy.pixel_array == original.pixel_array).all()
    report = retrieve_and_import(workspace, qrscp, match.study_uid, tmp_path / "store")
    assert report.imported == 1 and not report.errors
    assert workspace.audit_log(action="pacs.retrieve")[0]["subject"] == match.study_uid
    assert query(qrscp, patient_id="nobody") == []
    with pytest.raises(PacsError, match="--patient-id or --study-uid"):
        query(qrscp)
    with pytest.raises(PacsError, match="not a DICOM UID"):
        retrieve(qrscp, "1.2; DROP", tmp_path / "x")
    with pytest.raises(PacsError, match="could not be reached|rejected"):
        query(PacsNode(host="127.0.0.1", port=1, called_aet="QRSCP", timeout=3), patient_id="x")
    bad = tmp_path / "not.dcm"
    bad.write_text("hello")
    result = send_files(qrscp, [bad, NIH])
    assert result["sent"] == 1 and [f["path"] for f in result["failed"]] == [str(bad)]


def test_c_move_retrieve_into_a_listening_workstation(tmp_path, workspace):
    """Archives that offer only C-MOVE: Loupe listens as a storage SCP while the node moves the study to it; an
    unknown move destination is refused in words; the command line takes --move-port."""
    from tests.core.pacs_servers import free_port

    move_port = free_port()
    proc, port = start_qrscp(tmp_path / "qrscp", move_destinations={"LOUPE": move_port})
    try:
        storescu(port, [NIH, RG2])
        node = PacsNode(host="127.0.0.1", port=port, aet="LOUPE", called_aet="QRSCP", timeout=30, move_port=move_port)
        (match,) = query(node, patient_id="10RG2")
        files, failures = retrieve(node, match.study_uid, tmp_path / "moved")
        assert len(files) == 1 and not failures
        import pydicom

        assert (pydicom.dcmread(files[0]).pixel_array == pydicom.dcmread(RG2).pixel_array).all()
        stranger = PacsNode(host="127.0.0.1", port=port, aet="STRANGER", called_aet="QRSCP", timeout=30,
                            move_port=free_port())
        with pytest.raises(PacsError, match="move destination"):
            retrieve(stranger, match.study_uid, tmp_path / "nothing")
        ws = tmp_path / "ws.sqlite"
        (nih,) = query(node, patient_id="Covid0000")
        got = _loupe(ws, "pacs", "retrieve", "--host", "127.0.0.1", "--port", str(port), "--aet", "LOUPE",
                     "--called-aet", "QRSCP", "--move-port", str(move_port), "--study-uid", nih.study_uid, "--json")
        assert got.returncode == 0, got.stderr
        assert json.loads(got.stdout)["imported"] == 1
    finally:
        stop(proc)


def send_files(node, paths):
    return send(node, paths)


def test_cli_usage_errors(tmp_path):
    ws = tmp_path / "ws.sqlite"
    r = _loupe(ws, "pacs", "query", "--host", "127.0.0.1", "--port", "1", "--called-aet", "X")
    assert r.returncode == 2 and "--patient-id" in r.stderr
    r = _loupe(ws, "pacs", "query", "--host", "127.0.0.1", "--port", "1", "--aet", "A" * 17, "--patient-id", "x")
    assert r.returncode == 1 and "16" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.skipif(bool(orthanc_available()), reason=orthanc_available() or "n/a")
def test_dicomweb_against_orthanc(tmp_path, workspace):
    proc, url = start_orthanc(tmp_path / "orthanc")
    try:
        node = PacsNode(dicomweb=url)
        assert send(node, [NIH, RG2]) == {"sent": 2, "failed": []}  # STOW-RS
        (match,) = query(node, patient_id="Covid0000")              # QIDO-RS
        assert match.n_instances == 1 and match.modalities == ("DX",)
        report = retrieve_and_import(workspace, node, match.study_uid, tmp_path / "store")  # WADO-RS
        assert report.imported == 1 and not report.errors
        ref = workspace.images()[0]
        assert ref.record.patient_id == "Covid0000"
        with pytest.raises(PacsError, match="could not be reached"):
            query(PacsNode(dicomweb="http://127.0.0.1:1/dicom-web"), patient_id="x")
    finally:
        stop(proc)
