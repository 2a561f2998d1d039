"""Real DICOM servers for the PACS tests: pynetdicom's qrscp, and Orthanc with its DICOMweb plugin."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with code {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"server did not open port {port}")


def start_qrscp(folder: Path, aet: str = "QRSCP", move_destinations: dict | None = None):
    """Start ``python -m pynetdicom qrscp`` with its database and instances in ``folder``; returns (proc, port).

    ``move_destinations``: ``{AE title: port}`` on 127.0.0.1 that the SCP may C-MOVE to (its configuration file).
    """
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "qrscp.ini"
    lines = ["[DEFAULT]", f"ae_title: {aet}", f"port: {port}", "max_pdu: 16382", "acse_timeout: 30",
             "dimse_timeout: 30", "network_timeout: 30", "bind_address:",
             f"instance_location: {folder / 'instances'}", f"database_location: {folder / 'db.sqlite'}",
             "log_identifier: True"]
    for title, dest_port in (move_destinations or {}).items():
        lines += ["", f"[{title}]", "address: 127.0.0.1", f"port: {dest_port}"]
    config.write_text("\n".join(lines) + "\n")
    log = open(folder / "qrscp.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "pynetdicom", "qrscp", "-c", str(config), "--port", str(port),
                             "-aet", aet, "--database-location", str(folder / "db.sqlite"),
                             "--instance-location", str(folder / "instances")],
                            stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    wait_port(port, proc)
    return proc, port


def storescu(port: int, files, aec: str = "QRSCP") -> None:
    """Load files into the SCP with pynetdicom's own storescu (an independent C-STORE client)."""
    for f in files:
        subprocess.run([sys.executable, "-m", "pynetdicom", "storescu", "127.0.0.1", str(port), str(f),
                        "-aet", "LOADER", "-aec", aec, "-cx"], check=True, capture_output=True, timeout=120)


def orthanc_available() -> str:
    """'' when Orthanc and its DICOMweb plugin are installed, else the reason they cannot be used."""
    if not os.path.exists(ORTHANC):
        return "Orthanc is not installed (Debian package 'orthanc')"
    if not DICOMWEB_PLUGIN.exists():
        return f"the Orthanc DICOMweb plugin is not installed ({DICOMWEB_PLUGIN}; package 'orthanc-dicomweb')"
    return ""


def start_orthanc(folder: Path):
    """Start Orthanc with DICOMweb in ``folder``; returns (proc, base DICOMweb URL)."""
    http, dicom = free_port(), free_port()
    folder.mkdir(parents=True, exist_ok=True)
    config = {"Name": "LoupeTest", "StorageDirectory": str(folder / "storage"),
              "IndexDirectory": str(folder / "index"), "HttpPort": http, "DicomPort": dicom,
              "RemoteAccessAllowed": True, "AuthenticationEnabled": False, "Plugins": [str(DICOMWEB_PLUGIN)],
              "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = open(folder / "orthanc.log", "w")
    proc = subprocess.Popen([ORTHANC, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    wait_port(http, proc)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the HTTP port opens before the plugin is ready
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{http}/dicom-web/studies", timeout=5).read()
            break
        except Exception:
            time.sleep(0.3)
    return proc, f"http://127.0.0.1:{http}/dicom-web"


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
