"""The bundled demo workspace: real radiographs and a PneumoniaMNIST pool, a pretrained model, a queue.

``prepare_demo`` is idempotent: it imports what is missing, creates an
EfficientNet-Lite0 model with its offline ImageNet weights if the workspace
has none, fine-tunes its head on the labelled seed in a separate training
process, predicts the pool and fills the labelling queue. Nothing is downloaded.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from core.progress import CancelToken, ProgressCallback, report

logger = logging.getLogger(__name__)

DEMO_CLASSES = ("normal", "pneumonia")
DEMO_ARCH = "efficientnet_lite0"
DEMO_INPUT_SIZE = 128


def prepare_demo(workspace, demo_dir: str | Path, train: bool = True, progress: Optional[ProgressCallback] = None,
                 cancel: Optional[CancelToken] = None) -> dict:
    """Make ``workspace`` a ready demo; returns a summary dict (import report, versions, queue size).

    Raises ModelError when the offline weights package is missing.
    """
    from core.importer import import_paths

    demo_dir = Path(demo_dir)
    report(progress, 0, 4, "importing the demo studies")
    # the demo PNGs are chest radiographs (PneumoniaMNIST): windowed, augmented and shown as radiographs
    imported = import_paths(workspace, [demo_dir], labels_csv=demo_dir / "labels.csv", actor="demo", cancel=cancel,
                            as_modality="CR")
    summary = {"import": imported.to_json(), "images": workspace.image_count()}
    if workspace.active_model() is None:
        from core.models.versions import create_version

        report(progress, 1, 4, "creating the model (EfficientNet-Lite0, offline ImageNet weights)")
        created = create_version(workspace, DEMO_ARCH, list(DEMO_CLASSES), pretrained="default",
                                 input_size=DEMO_INPUT_SIZE, actor="demo")
        summary["created"] = created.version
    if train and all(v.parent is None for v in workspace.models()):
        from core.models.jobs import TrainingJob
        from core.models.config import TrainConfig

        report(progress, 2, 4, "fine-tuning the head on the labelled seed (separate process)")
        job = TrainingJob(workspace.path, TrainConfig(mode="frozen", epochs=40, lr=3e-3, actor="demo"))
        for event in job.events():
            if cancel is not None and cancel.cancelled:
                job.cancel(grace=5)
            if event.get("event") == "done":
                summary["trained"] = event["version"]
                summary["reason"] = event["reason"]
            elif event.get("event") == "error":
                summary["training_error"] = event["message"]
    if workspace.active_model() is not None:
        from core.active.loop import model_outputs, refresh_queue

        report(progress, 3, 4, "predicting the pool")
        model_outputs(workspace, cancel=cancel)
        if not workspace.queue():
            summary["queued"] = len(refresh_queue(workspace, "default", 30, cancel=cancel))
    report(progress, 4, 4, "demo ready")
    summary["active"] = workspace.active_model().version if workspace.active_model() else None
    return summary
