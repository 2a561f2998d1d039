"""Labels CSV parsing: columns, multi-label, severity, split, and bad rows."""

import pytest

from core.errors import LabelsFileError
from core.labels_csv import read_labels_csv


def write(tmp_path, text, name="labels.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_path_rows_resolve_relative_to_csv_folder(tmp_path):
    csv = write(tmp_path, "path,label,severity,split\nimgs/a.png,normal,,train\n/abs/b.png,tb;effusion,2,test\n")
    rows, issues = read_labels_csv(csv)
    assert issues == []
    assert rows[0].path == (tmp_path / "imgs" / "a.png").resolve()
    assert rows[0].classes == ("normal",) and rows[0].split == "train" and rows[0].severity is None
    assert rows[1].classes == ("tb", "effusion") and rows[1].severity == 2 and str(rows[1].path) == "/abs/b.png"


def test_file_column_and_bom_and_case(tmp_path):
    csv = write(tmp_path, "\ufeffFile,Label\nx.dcm,Pneumonia\n")
    rows, issues = read_labels_csv(csv)
    assert issues == [] and rows[0].file == "x.dcm" and rows[0].path is None and rows[0].classes == ("Pneumonia",)


def test_bad_rows_are_reported_and_others_kept(tmp_path):
    csv = write(tmp_path, "path,label,severity,split\na.png,,,\nb.png,x,high,\nc.png,x,,holdout\n,x,,\nd.png,y,1,val\n")
    rows, issues = read_labels_csv(csv)
    assert [r.line for r in rows] == [6]
    reasons = [i.reason for i in issues]
    assert [i.path for i in issues] == ["labels.csv:2", "labels.csv:3", "labels.csv:4", "labels.csv:5"]
    assert "empty label" in reasons[0] and "integer" in reasons[1] and "split" in reasons[2] and "neither" in reasons[3]


def test_missing_columns_raise_a_clear_error(tmp_path):
    with pytest.raises(LabelsFileError, match="needs a 'path' or 'file' column and a 'label' column"):
        read_labels_csv(write(tmp_path, "filename,diagnosis\na,b\n"))
    with pytest.raises(LabelsFileError, match="not found"):
        read_labels_csv(tmp_path / "nope.csv")
    bad = tmp_path / "binary.csv"
    bad.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(LabelsFileError):
        read_labels_csv(bad)
