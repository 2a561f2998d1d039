"""The command line carries severity and the audit slice: predict, evaluate and export."""

from __future__ import annotations

import csv
import json

import pytest

from tests.app.cli_helpers import run
from tests.core.conftest import write_dataset


@pytest.mark.slow
def test_predict_evaluate_export_carry_severity_and_audit(tmp_path, capsys, single_thread):
    folder = tmp_path / "photos"
    labels = write_dataset(folder, n=16, splits=["test"] * 12 + [""] * 4)
    lines = labels.read_text().splitlines()
    labels.write_text("\n".join([lines[0] + ",severity"] + [f"{l},{i % 4}" for i, l in enumerate(lines[1:])]) + "\n")
    ws = str(tmp_path / "ws.sqlite")
    assert run(capsys, "--workspace", ws, "import", str(folder), "--labels", str(labels))[0] == 0
    code, out, err = run(capsys, "--workspace", ws, "model", "create", "--arch", "resnet18", "--pretrained", "none",
                         "--input-size", "32", "--classes", "neg,pos", "--severity-levels", "4", "--json")
    assert code == 0, err
    code, out, err = run(capsys, "--workspace", ws, "predict", "--all", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 16
    assert all(r["severity"] in ("none", "mild", "moderate", "severe") and 0 < r["severity_probability"] <= 1
               for r in rows)
    from core.workspace import Workspace

    with Workspace.open(ws) as w:
        pool = [r.id for r in w.images() if r.split is None]
        w.record_audit_picks("v1", "pos", [(i, 0.01) for i in pool])
    code, out, err = run(capsys, "--workspace", ws, "evaluate", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert "severity_kappa" in result and result["severity"]["n"] == 12
    # the 4 pool images carry their CSV labels (2 'pos'): 2 of 4 audited confident negatives were rare
    assert result["audit"]["n"] == 4 and result["audit"]["missed"] == 2 and result["audit"]["miss_rate"] == 0.5
    lo, hi = result["audit"]["ci95"]
    assert lo < 0.5 < hi
    out_csv = tmp_path / "export.csv"
    assert run(capsys, "--workspace", ws, "export", "--format", "csv", str(out_csv))[0] == 0
    with open(out_csv) as handle:
        table = list(csv.DictReader(handle))
    assert {"severity", "predicted_severity", "predicted_severity_probability"} <= set(table[0])
    assert all(r["predicted_severity"] for r in table)
