"""``loupe export`` and ``loupe audit verify`` against CLI.md, and a whole CLI session with the network cut off."""

from __future__ import annotations

import json
import socket
import sqlite3
from pathlib import Path

import pydicom
import pytest

from tests.app.cli_helpers import run
from tests.core.test_export import phi_found, write_phi_study


@pytest.fixture
def ws_path(tmp_path, capsys):
    """A workspace with the PHI study imported and one image labelled by a person."""
    study = write_phi_study(tmp_path / "in")
    ws = str(tmp_path / "ws.sqlite")
    code, _, err = run(capsys, "--workspace", ws, "import", str(tmp_path / "in"), "--json")
    assert code == 0, err
    code, _, err = run(capsys, "--workspace", ws, "label", str(study["files"][0]), "--class", "pneumonia",
                       "--annotator", "Dr^Strange")
    assert code == 0, err
    return ws, study


def test_audit_verify_intact_then_tampered(ws_path, capsys):
    ws, _ = ws_path
    code, out, _ = run(capsys, "--workspace", ws, "audit", "verify")
    assert code == 0 and "intact" in out
    code, out, _ = run(capsys, "--workspace", ws, "audit", "verify", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["intact"] is True and doc["entries"] >= 2 and doc["first_broken"] is None
    assert f"intact, {doc['entries']} entries" in run(capsys, "--workspace", ws, "audit", "verify")[1]

    # An attacker with the file: the append-only trigger is dropped, then an entry rewritten.
    db = sqlite3.connect(ws)
    db.execute("DROP TRIGGER audit_no_update")
    db.execute("UPDATE audit_log SET actor = 'mallory' WHERE id = 2")
    db.commit()
    db.close()
    code, out, err = run(capsys, "--workspace", ws, "audit", "verify")
    assert code == 1
    assert "entry 2" in out and "entry 2" in err
    code, out, _ = run(capsys, "--workspace", ws, "audit", "verify", "--json")
    assert code == 1 and json.loads(out) == {"intact": False, "entries": doc["entries"] + 0, "first_broken": 2}


def test_audit_verify_detects_a_removed_entry(ws_path, capsys):
    ws, _ = ws_path
    db = sqlite3.connect(ws)
    db.execute("DROP TRIGGER audit_no_delete")
    db.execute("DELETE FROM audit_log WHERE id = 1")
    db.commit()
    db.close()
    code, out, _ = run(capsys, "--workspace", ws, "audit", "verify", "--json")
    assert code == 1 and json.loads(out)["first_broken"] == 2


def test_export_commands(ws_path, tmp_path, capsys):
    ws, study = ws_path
    code, out, err = run(capsys, "--workspace", ws, "export", "--format", "csv", str(tmp_path / "o.csv"), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["format"] == "csv" and doc["counts"]["images"] == 3 and doc["counts"]["labelled"] == 1
    code, out, err = run(capsys, "--workspace", ws, "export", "--format", "dicom-sr", str(tmp_path / "sr"),
                         "--deidentify", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["deidentified"] and doc["counts"]["sr"] == 1 and len(doc["files"]) == 1
    sr = pydicom.dcmread(doc["files"][0])
    assert sr.PatientIdentityRemoved == "YES"
    assert not phi_found([doc["files"][0], tmp_path / "sr" / "manifest.json"], study["needles"] + ["Dr^Strange"])
    # A second export into the same folder is refused with one plain line, no traceback.
    code, _, err = run(capsys, "--workspace", ws, "export", "--format", "dicom-sr", str(tmp_path / "sr"))
    assert code == 1 and "not an empty folder" in err and "Traceback" not in err
    code, _, _ = run(capsys, "--workspace", ws, "audit", "verify")
    assert code == 0


def test_export_labelled_photographs_as_dicom(tmp_path, capsys):
    from tests.core.conftest import write_dataset

    labels = write_dataset(tmp_path / "Doe_Jane_photos", n=3)
    ws = str(tmp_path / "ws.sqlite")
    code, _, err = run(capsys, "--workspace", ws, "import", str(tmp_path / "Doe_Jane_photos"), "--labels", str(labels),
                       "--json")
    assert code == 0, err
    code, out, err = run(capsys, "--workspace", ws, "export", "--format", "dicom-sr", str(tmp_path / "held"),
                         "--deidentify", "--json")
    assert code == 0, err
    held = json.loads(out)  # photographs may carry burned-in text: held back unless included explicitly
    assert held["counts"] == {"photo": 0, "sr": 0, "sc": 0, "skipped": 0} and len(held["held_back"]) == 3
    assert all("burned-in" in h["reason"] for h in held["held_back"])
    code, out, err = run(capsys, "--workspace", ws, "export", "--format", "dicom-sr", str(tmp_path / "sr"),
                         "--deidentify", "--include-burned-in", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["counts"] == {"photo": 3, "sr": 3, "sc": 0, "skipped": 0} and not doc["skipped"]
    assert doc["held_back"] == []
    assert sorted(Path(f).name for f in doc["files"]) == [f"{k}-0000{i}.dcm" for k in ("PH", "SR") for i in (1, 2, 3)]
    for path in doc["files"]:
        assert pydicom.dcmread(path).PatientIdentityRemoved == "YES"
    files = sorted((tmp_path / "sr").iterdir())
    assert not phi_found(files, ["Doe_Jane", "img000", "img001", "img002", str(tmp_path)])


@pytest.fixture
def no_network(monkeypatch):
    """Every way out to the network raises; the calls that were attempted are recorded."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[1:] if args else kwargs)
        raise OSError("network access is not allowed in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def test_whole_session_runs_without_network(tmp_path, capsys, no_network):
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        study = write_phi_study(tmp_path / "in")
        ws = str(tmp_path / "ws.sqlite")

        def ok(*argv):
            code, out, err = run(capsys, "--workspace", ws, *argv)
            assert code == 0, (argv, err)
            return json.loads(out) if "--json" in argv else out

        ok("import", str(tmp_path / "in"), "--json")
        ok("label", str(study["files"][0]), "--class", "pneumonia", "--annotator", "Dr^Strange")
        ok("label", str(study["files"][2]), "--class", "normal", "--annotator", "Dr^Strange")
        created = ok("model", "create", "--arch", "efficientnet_lite0", "--classes", "normal,pneumonia",
                     "--pretrained", "default", "--input-size", "32", "--json")
        assert created["arch"] == "efficientnet_lite0"
        predictions = ok("predict", "--all", "--json")
        assert len(predictions) == 3
        ok("explain", str(study["files"][0]), "--method", "gradcam", "--json")
        ok("export", "--format", "csv", str(tmp_path / "out" / "t.csv"), "--deidentify", "--json")
        ok("export", "--format", "json", str(tmp_path / "out" / "t.json"), "--deidentify", "--json")
        report = ok("export", "--format", "dicom-sr", str(tmp_path / "out" / "sr"), "--deidentify", "--json")
        assert report["counts"]["sr"] == 2 and report["counts"]["sc"] == 1
        assert "intact" in ok("audit", "verify")
    finally:
        torch.set_num_threads(threads)
    assert not no_network, f"network use attempted: {no_network}"
    files = sorted(p for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert not phi_found(files, study["needles"] + ["Dr^Strange"])
    for path in files:
        if path.suffix == ".dcm":
            ds = pydicom.dcmread(path)
            assert ds.PatientIdentityRemoved == "YES" and str(ds.PatientName).startswith("ANONYMOUS^")
    rows = json.loads((tmp_path / "out" / "t.json").read_text())["images"]
    assert {r["predicted"] for r in rows} <= {"normal", "pneumonia"} and all(r["model_version"] for r in rows)
    assert all(Path(p).name.startswith(("SR-", "SC-")) for p in report["files"])
