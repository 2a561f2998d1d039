"""``loupe gui [--demo] [--screenshot PNG]``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from app.cli.common import info, reader_name, resolve_workspace_path


def add_parsers(sub, common) -> None:
    """Register ``gui`` on the subparsers object ``sub``."""
    p = sub.add_parser("gui", parents=[common], help="open the desktop app")
    p.add_argument("--demo", action="store_true", help="prepare and open the bundled demo workspace")
    p.add_argument("--screenshot", metavar="PNG", help="render the window offscreen to PNG and exit")
    p.set_defaults(func=cmd_gui)


def has_display() -> bool:
    """False on a Linux/BSD machine with no X11 or Wayland display and no explicit Qt platform."""
    if sys.platform.startswith(("win", "darwin")) or os.environ.get("QT_QPA_PLATFORM"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def cmd_gui(args) -> int:
    named = bool(args.workspace or os.environ.get("LOUPE_WORKSPACE"))
    path = resolve_workspace_path(args.workspace)
    if args.demo and not args.workspace:
        path = path.parent / "demo.sqlite"
    screenshot = Path(args.screenshot) if args.screenshot else None
    if screenshot is not None:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    elif not has_display():
        info("no display found (DISPLAY/WAYLAND_DISPLAY unset): preparing the workspace without a window; "
             "run this on a workstation, or pass --screenshot PNG to render the window offscreen")
        return _headless(args, path)
    from app.preflight import qt_platform_problem

    problem = qt_platform_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 1
    from app.gui import run_gui

    # no workspace named (and not the demo or a screenshot): the last one opened, else the start dialog offers one
    chosen = path if (named or args.demo or screenshot is not None) else None
    return run_gui(chosen, demo=args.demo, screenshot=screenshot, default_path=path, reader=reader_name(args) or None)


def _headless(args, path: Path) -> int:
    from app.cli.studies import DEMO_DIR, demo_text
    from core.demo import prepare_demo
    from core.workspace import Workspace

    with Workspace.open(path) as ws:
        if not args.demo:
            info(f"workspace {path}: {ws.image_count()} images")
            return 0
        summary = prepare_demo(ws, DEMO_DIR, progress=lambda p: info(p.message))
        print(demo_text(ws, summary))
    return 0
