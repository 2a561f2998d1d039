"""``loupe model quantize`` and ``loupe model distill``: fast reading versions behind a quality gate."""

from __future__ import annotations

import sys

from app.cli.common import emit, info, open_workspace


def add_model_actions(msub, common) -> None:
    """Register ``quantize`` and ``distill`` under ``loupe model``."""
    q = msub.add_parser("quantize", parents=[common],
                        help="register an INT8 version of the active model if it passes the quality checks")
    q.add_argument("--keep-float", help="comma-separated backbone modules to keep in float (default: the recipe's, "
                                        "the stem convolution; 'none': quantize every layer)")
    q.set_defaults(func=cmd_quantize)
    d = msub.add_parser("distill", parents=[common],
                        help="register a distilled student of the active model if it passes the quality checks")
    d.add_argument("--student", default="mobilenet_v3_large", help="student architecture")
    d.add_argument("--epochs", type=int, default=5)
    d.add_argument("--pretrained", default="default", help="the student's starting weights: default | none | PATH")
    d.set_defaults(func=cmd_distill)


def _report(args, version, checks) -> int:
    lines = [f"registered {version.version} ({version.weights}), a candidate linked to {version.parent}:"]
    lines += [f"  ✓ {c['check']}: {c['candidate']:.4f} (teacher {c['teacher']:.4f}; {c['rule']})" for c in checks]
    emit(args, {"version": version.version, "teacher": version.parent, "kind": version.params["compression"]["kind"],
                "registered": True, "checks": checks}, "\n".join(lines))
    return 0


def _failed(args, exc) -> int:
    if args.json:
        emit(args, {"registered": False, "checks": exc.checks, "failed": [c["check"] for c in exc.checks
                                                                          if not c["passed"]]}, "")
    print(f"loupe: {exc}", file=sys.stderr)
    return 1


def _progress(p) -> None:
    info(f"{p.message}: {p.done}/{p.total}")


def cmd_quantize(args) -> int:
    from core.models.fast_reading import GateFailed, quantize_version

    if args.keep_float and args.keep_float.strip().lower() == "none":
        keep = []
    else:
        keep = [k.strip() for k in args.keep_float.split(",") if k.strip()] if args.keep_float else None
    with open_workspace(args) as ws:
        try:
            version, checks = quantize_version(ws, keep_float=keep, actor="cli", progress=_progress)
        except GateFailed as exc:
            return _failed(args, exc)
    return _report(args, version, checks)


def cmd_distill(args) -> int:
    from core.models.fast_reading import GateFailed, distill_version
    from core.models.weights import default_torch_cache_dir

    with open_workspace(args) as ws:
        try:
            version, checks = distill_version(ws, args.student, epochs=args.epochs, actor="cli",
                                              pretrained=args.pretrained, torch_cache_dir=default_torch_cache_dir(),
                                              progress=_progress)
        except GateFailed as exc:
            return _failed(args, exc)
    return _report(args, version, checks)
