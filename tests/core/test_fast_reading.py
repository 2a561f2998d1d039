"""Fast reading versions: the three checks, registration linked to the teacher, INT8 file round trip."""

from __future__ import annotations

import numpy as np
import pytest

from core.models.fast_reading import GateFailed, gate_checks, quantize_version
from tests.core.conftest import all_convs, flipped_copy

pytestmark = pytest.mark.usefixtures("single_thread")


def test_gate_checks_by_hand():
    y = np.array([0] * 50 + [1] * 50)
    p1 = np.where(y == 1, 0.8, 0.2)
    teacher = np.stack([1 - p1, p1], axis=1)
    same = gate_checks(y, teacher, teacher.copy(), ["neg", "pos"], "pos", 0.5)
    assert [c["check"] for c in same] == ["macro AUC", "pos sensitivity", "top-class agreement"]
    assert all(c["passed"] for c in same)
    worse = teacher.copy()
    worse[50:53] = [0.7, 0.3]  # three rare cases fall under the threshold: sensitivity 0.94, agreement 0.97
    checks = {c["check"]: c for c in gate_checks(y, teacher, worse, ["neg", "pos"], "pos", 0.5)}
    assert not checks["pos sensitivity"]["passed"] and checks["pos sensitivity"]["candidate"] == pytest.approx(0.94)
    assert not checks["top-class agreement"]["passed"] and checks["top-class agreement"]["candidate"] == 0.97
    assert checks["macro AUC"]["passed"] and checks["macro AUC"]["candidate"] == 1.0  # 0.3 still above every 0.2


def test_agreement_counts_the_unlabelled_pool_so_a_few_validation_images_cannot_pass_a_copy_alone():
    """8 validation images all agree, but the copy disagrees on 10 of 92 pool images: 90 / 100 = 90 % < 98 %."""
    y = np.array([0] * 4 + [1] * 4)
    p1 = np.where(y == 1, 0.9, 0.1)
    teacher = np.stack([1 - p1, p1], axis=1)
    alone = {c["check"]: c for c in gate_checks(y, teacher, teacher.copy(), ["neg", "pos"], "pos", 0.5)}
    assert alone["top-class agreement"]["passed"] and alone["top-class agreement"]["n"] == 8
    pool_t = np.tile([[0.8, 0.2]], (92, 1))
    pool_c = pool_t.copy()
    pool_c[:10] = [0.3, 0.7]
    checks = {c["check"]: c for c in gate_checks(y, teacher, teacher.copy(), ["neg", "pos"], "pos", 0.5,
                                                 pool_probs=(pool_t, pool_c))}
    agree = checks["top-class agreement"]
    assert not agree["passed"] and agree["candidate"] == pytest.approx(0.90) and agree["n"] == 100
    assert "8 validation images and 92 unlabelled pool images" in agree["rule"]
    assert checks["macro AUC"]["passed"] and checks["pos sensitivity"]["passed"]  # labels: validation only
    # 8 labelled images and 4 rare cases pass, but the checks say how thin that evidence is
    assert checks["macro AUC"]["rule"].endswith("on 8 labelled validation images — few images, weak evidence")
    assert checks["pos sensitivity"]["rule"].endswith("on 4 pos validation cases — few cases, weak evidence")


def test_agreement_pool_is_the_unlabelled_undamaged_images(small):
    from core.models.fast_reading import agreement_pool

    ws = small
    assert agreement_pool(ws) == []  # every image of the fixture is labelled
    free = [r.id for r in ws.images()][:3]
    for image_id in free:
        ws.undo_label(image_id, "test")
    ws.mark_damaged(free[0], "cut off", actor="test")
    assert sorted(i for i, _ in agreement_pool(ws)) == sorted(free[1:])
    assert len(agreement_pool(ws, n=1)) == 1


def test_int8_version_is_registered_linked_to_its_teacher_and_reloads(small):
    from core.models.inference import run_inference
    from core.models.versions import load_version

    ws = small
    # every convolution kept in float: the INT8 copy reads exactly as the teacher, so the gate must pass
    version, checks = quantize_version(ws, keep_float=all_convs(ws), actor="test")
    assert all(c["passed"] for c in checks)
    assert version.parent == "v1" and version.status == "candidate"
    assert version.params["compression"]["kind"] == "int8" and version.params["compression"]["teacher"] == "v1"
    assert ws.active_model().version == "v1"  # a fast reading version does not replace the teacher
    items = [(r.id, r.path) for r in ws.images()][:8]
    teacher = run_inference(load_version(ws, "v1"), items, with_embeddings=False)
    fast = run_inference(load_version(ws, version.version), items, with_embeddings=False)  # rebuilt from the file
    assert np.allclose(teacher.probs, fast.probs, atol=0.02)


def test_a_failing_int8_version_is_not_registered_and_the_check_is_named(small, monkeypatch):
    from core.models import fast_reading

    ws = small

    monkeypatch.setattr(fast_reading, "quantize_int8", flipped_copy)
    with pytest.raises(GateFailed, match="top-class agreement"):
        quantize_version(ws)
    assert [m.version for m in ws.models()] == ["v1"]


def test_cli_quantize_exits_1_naming_the_failed_check(small, capsys, monkeypatch):
    from core.models import fast_reading
    from tests.app.cli_helpers import run

    monkeypatch.setattr(fast_reading, "quantize_int8", flipped_copy)
    code, out, err = run(capsys, "--workspace", str(small.path), "model", "quantize")
    assert code == 1 and "not registered" in err and "agreement" in err
