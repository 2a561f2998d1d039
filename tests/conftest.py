"""Fixtures shared by every test: the real data in ../shared/data and a scratch workspace."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LOUPE_SHARED_DATA", ROOT.parent / "shared" / "data"))


def shared_path(*parts: str) -> Path:
    """Path under ../shared/data; skips the calling test with a reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real test data not available: {path} is absent (../shared is not beside this clone)")
    return path


@pytest.fixture
def shared_dicom_dir() -> Path:
    """The folder of real DICOM files in ../shared/data/dicom."""
    return shared_path("dicom")


@pytest.fixture
def workspace(tmp_path):
    """A fresh, empty workspace in a temporary folder."""
    from core.workspace import Workspace

    ws = Workspace.open(tmp_path / "ws.sqlite")
    yield ws
    ws.close()


@pytest.fixture
def single_thread(monkeypatch):
    """One intra-op thread here and in child processes.

    On a loaded 2-core machine OpenMP's spinning threads make a 32-px ResNet forward
    pass ~30x slower; a single thread keeps the model tests fast and repeatable.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(before)
