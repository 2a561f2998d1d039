"""``loupe model create``, ``train``, ``evaluate``, ``models`` and ``predict``."""

from __future__ import annotations

import sys

from app.cli.common import emit, info, open_workspace, resolve_workspace_path
from core.errors import LoupeError, ModelError


def add_parsers(sub, common) -> None:
    """Register the model commands on the subparsers object ``sub``."""
    p = sub.add_parser("model", help="create a model version")
    msub = p.add_subparsers(dest="model_command", metavar="ACTION")
    msub.required = True
    c = msub.add_parser("create", parents=[common], help="build a new model and make it active")
    c.add_argument("--arch", default=None,
                   help="backbone (default: the strongest whose pretrained weights are on this machine)")
    c.add_argument("--classes", help="comma-separated class names (default: the workspace's classes)")
    c.add_argument("--pretrained", default="default", help="default | none | PATH to a .pth state dict")
    c.add_argument("--input-size", type=int, default=None, help="pixels (default: the backbone's native size)")
    c.add_argument("--head", choices=["multiclass", "multilabel"], default="multiclass")
    c.add_argument("--severity-levels", type=int, default=0)
    c.set_defaults(func=cmd_model_create)
    from app.cli.fast_reading import add_model_actions

    add_model_actions(msub, common)  # quantize, distill

    t = sub.add_parser("train", parents=[common], help="fine-tune the active model on confirmed labels")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--mode", choices=["frozen", "finetune", "gradual"], default="frozen")
    t.add_argument("--loss", choices=["ce", "weighted", "focal"], default="weighted")
    t.add_argument("--sampler", choices=["none", "balanced"], default="none")
    t.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=None,
                   help="head learning rate (default per mode: frozen 3e-3, finetune and gradual 1e-3)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--schedule", choices=["cosine", "plateau"], default="cosine")
    t.add_argument("--target-sensitivity", type=float, default=0.9)
    t.add_argument("--threshold-confidence", type=float, default=0.95,
                   help="the rare-class threshold keeps the target sensitivity as this one-sided lower confidence "
                        "bound on the validation images (0: the point estimate)")
    t.add_argument("--rare-class")
    t.add_argument("--nproc", type=int, default=1,
                   help="data-parallel ranks launched by this command (GPUs with NCCL, or CPU processes with gloo)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", parents=[common], help="metrics of a version on the test or val split")
    e.add_argument("--version")
    e.add_argument("--split", choices=["test", "val"], default="test")
    e.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    e.set_defaults(func=cmd_evaluate)

    m = sub.add_parser("models", parents=[common], help="list, activate or roll back model versions")
    m.set_defaults(func=cmd_models)
    msub = m.add_subparsers(dest="models_command", metavar="ACTION")
    a = msub.add_parser("activate", parents=[common])
    a.add_argument("version")
    a.add_argument("--reason", default="activated by hand")
    a.set_defaults(func=cmd_models_activate)
    r = msub.add_parser("rollback", parents=[common])
    r.add_argument("--reason", default="rolled back by hand")
    r.set_defaults(func=cmd_models_rollback)

    pr = sub.add_parser("predict", parents=[common], help="predict images with the active model")
    pr.add_argument("images", nargs="*", metavar="IMAGE")
    pr.add_argument("--all", action="store_true")
    pr.add_argument("--version")
    pr.add_argument("--batch-size", type=int, default=16)
    pr.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    pr.add_argument("--fast", action="store_true",
                    help="predict with the active model's gated fast reading version (INT8 or distilled)")
    pr.set_defaults(func=cmd_predict)


def cmd_model_create(args) -> int:
    from core.models.architectures import arch_spec, strongest_available_arch
    from core.models.versions import create_version
    from core.models.weights import default_torch_cache_dir

    cache = default_torch_cache_dir()
    arch = args.arch
    if arch is None:
        arch, choice = strongest_available_arch(cache)
        info(f"backbone: {arch} (the strongest with pretrained weights on this machine: {choice['text']})"
             if choice["available"] else f"backbone: {arch} (no pretrained weights on this machine)")
        if not choice["available"] and args.pretrained == "default":
            args.pretrained = "none"
    input_size = args.input_size or arch_spec(arch).native_size
    with open_workspace(args) as ws:
        findings = _workspace_findings(ws)
        head, severity_levels = args.head, args.severity_levels
        if args.classes:
            classes = [c.strip() for c in args.classes.split(",") if c.strip()]
        elif findings is not None and findings.classes:
            classes = list(findings.classes)
            if findings.multilabel and head == "multiclass":
                head = "multilabel"
            if findings.severity and not severity_levels:
                severity_levels = len(findings.severity)
        else:
            classes = [c for c in ws.classes() if c.strip()]
        if not classes:
            raise ModelError("no classes given and the workspace has none yet: pass --classes A,B "
                             "or set the findings with `loupe findings set --classes A,B`")
        version = create_version(ws, arch, classes, pretrained=args.pretrained, input_size=input_size,
                                 torch_cache_dir=cache, head=head,
                                 severity_levels=severity_levels, actor="cli")
    emit(args, {"version": version.version, "arch": version.arch, "weights": version.weights,
                "classes": list(version.classes)},
         f"created {version.version}: {version.arch} for {', '.join(version.classes)}; weights: {version.weights}")
    return 0


def _workspace_findings(ws):
    """The workspace's findings when they have been set (None on a workspace without findings support)."""
    getter = getattr(ws, "findings", None)
    return getter() if getter is not None else None


def cmd_train(args) -> int:
    from core.models.jobs import TrainingJob
    from core.models.config import TrainConfig

    if args.threshold_confidence and not 0.5 <= args.threshold_confidence < 1:
        raise LoupeError(f"--threshold-confidence must be 0 (off) or between 0.5 and 1, got {args.threshold_confidence}")
    config = TrainConfig(epochs=args.epochs, mode=args.mode, loss=args.loss, sampler=args.sampler,
                         device=args.device, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         schedule=args.schedule, target_sensitivity=args.target_sensitivity,
                         threshold_confidence=(args.threshold_confidence or None),
                         rare_class=args.rare_class, actor="cli")
    if args.nproc < 1:
        raise LoupeError(f"--nproc must be at least 1, got {args.nproc}")
    path = resolve_workspace_path(args.workspace)
    with open_workspace(args):  # creates/migrates before the child opens it
        pass
    job = TrainingJob(path, config, nproc=args.nproc)
    done = None
    try:
        for event in job.events():
            kind = event.get("event")
            if kind == "start":
                info(f"training from {event['parent']} on {event['n_train']} images (val {event['n_val']}), "
                     f"{event['device']}: {event['device_reason']}; labels {event['counts']}")
            elif kind == "epoch":
                auc = event.get("val_auc")
                info(f"epoch {event['epoch']}/{event['epochs']}: train loss {event['train_loss']:.4f}, "
                     f"val loss {event['val_loss']:.4f}" + (f", val AUC {auc:.3f}" if auc is not None else ""))
            elif kind in ("oom", "early_stop", "evaluate", "embed"):
                info(event.get("message") or f"early stop at epoch {event.get('epoch')}")
            elif kind == "done":
                done = event
            elif kind in ("error", "cancelled"):
                raise LoupeError(event["message"])
    except KeyboardInterrupt:
        job.cancel(grace=10)
        job.wait()
        raise
    if done is None:
        raise LoupeError(f"training process ended without a result (exit code {job.wait()})")
    emit(args, {k: done[k] for k in ("version", "promoted", "reason", "metrics", "seconds", "device")},
         f"trained {done['version']} in {done['seconds']} s: {done['reason']}")
    return 0


def cmd_evaluate(args) -> int:
    from core.models.service import evaluate_version

    with open_workspace(args) as ws:
        result = evaluate_version(ws, args.version, args.split, device=args.device)
    lines = [f"{result['version']} on {result['split']} (n={result['n']}): accuracy {result['accuracy']:.3f}, "
             f"macro AUC {_f(result['macro_auc'])}, kappa {_f(result['kappa'])}, ECE {_f(result['ece'])}"]
    for name, pc in result["per_class"].items():
        lines.append(f"  {name:<12} n={pc['n']:<5} sensitivity {_f(pc['sensitivity'])}  "
                     f"specificity {_f(pc['specificity'])}  AUC {_f(pc['auc'])}  AP {_f(pc['ap'])}")
    if "severity" in result:
        sev = result["severity"]
        ci = f" (95 % CI {sev['ci95'][0]:.3f}–{sev['ci95'][1]:.3f})" if sev.get("ci95") else ""
        lines.append(f"  severity: quadratic-weighted kappa {_f(sev['kappa'])}{ci} on {sev['n']} graded cases")
    if "audit" in result:
        a = result["audit"]
        lines.append(f"  audit slice: {a['missed']}/{a['n']} confident negatives labelled rare, miss rate "
                     f"{a['miss_rate']:.3f} (95 % CI {a['ci95'][0]:.3f}–{a['ci95'][1]:.3f})")
    emit(args, result, "\n".join(lines))
    return 0


def _f(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def cmd_models(args) -> int:
    with open_workspace(args) as ws:
        versions = ws.models()
    rows = [{"version": v.version, "arch": v.arch, "status": v.status, "parent": v.parent, "weights": v.weights,
             "created_at": v.created_at, "classes": list(v.classes), "reason": v.reason,
             "macro_auc": v.metrics.get("macro_auc") if v.metrics else None} for v in versions]
    human = "\n".join(f"{r['version']:<5} {r['status']:<9} {r['arch']:<18} AUC {_f(r['macro_auc'])}  {r['reason']}"
                      for r in rows) or "no model versions yet: `loupe model create`"
    emit(args, rows, human)
    return 0


def cmd_models_activate(args) -> int:
    with open_workspace(args) as ws:
        version = ws.activate_model(args.version, actor="cli", reason=args.reason)
    emit(args, {"version": version.version, "status": version.status}, f"{version.version} is now active")
    return 0


def cmd_models_rollback(args) -> int:
    with open_workspace(args) as ws:
        version = ws.rollback(actor="cli", reason=args.reason)
    emit(args, {"version": version.version, "status": version.status}, f"rolled back: {version.version} is active")
    return 0


def cmd_predict(args) -> int:
    from core.models.service import predict_images

    if not args.images and not args.all:
        print("loupe predict: give IMAGE arguments or --all", file=sys.stderr)
        return 2
    if args.fast and args.version:
        print("loupe predict: --fast predicts with the active model's fast reading version; drop --version",
              file=sys.stderr)
        return 2
    teacher = None
    with open_workspace(args) as ws:
        ids = None if args.all else [ws.find_image(i).id for i in args.images]
        if args.fast:
            from core.models.fast_mode import predict_pool

            reading, predictions, failed = predict_pool(ws, ids, fast=True, batch_size=args.batch_size,
                                                        device=args.device)
            teacher = reading.teacher
            info(reading.describe())
        else:
            predictions, failed = predict_images(ws, ids, args.version, batch_size=args.batch_size,
                                                 device=args.device)
        grade_names = _grade_names(ws, args.version)
    for image_id, reason in failed:
        info(f"could not predict {image_id}: {reason}")
    rows = []
    for p in predictions:
        row = {"id": p.image_id, "version": p.version, "probs": p.probs, "predicted": p.predicted,
               "fast": bool(args.fast)}
        if teacher is not None:
            row["teacher"] = teacher  # the full model the fast reading version was checked against
        if p.severity is not None:
            row.update(severity=grade_names[p.severity] if p.severity < len(grade_names) else str(p.severity),
                       severity_grade=p.severity, severity_probability=p.severity_probability)
        rows.append(row)
    human = "\n".join(f"{r['id']}  {r['predicted']:<12} " + "  ".join(f"{c} {v:.3f}" for c, v in r["probs"].items())
                      + (f"  severity {r['severity']} ({r['severity_probability']:.2f})" if "severity" in r else "")
                      for r in rows)
    emit(args, rows, human)
    return 0


def _grade_names(ws, version) -> list[str]:
    """Names of the severity grades of ``version`` (default: active); empty without a severity head."""
    from core.models.severity import severity_scale

    record = ws.model(version) if version else ws.active_model()
    levels = int((record.params.get("config") or {}).get("severity_levels") or 0) if record else 0
    return severity_scale(ws, levels)
