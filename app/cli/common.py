"""Shared plumbing of the ``loupe`` commands: workspace resolution and output."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

WORKSPACE_ENV = "LOUPE_WORKSPACE"
READER_ENV = "LOUPE_READER"


def default_workspace_path() -> Path:
    """The platform user-data location of the default workspace."""
    from platformdirs import user_data_dir

    return Path(user_data_dir("loupe", appauthor=False)) / "workspace.sqlite"


def resolve_workspace_path(option: str | None) -> Path:
    """``--workspace`` wins, then ``LOUPE_WORKSPACE``, then the platform default.

    Resolved once, here at the edge: a relative path means relative to the current folder and is made
    absolute, so every later step (the training child runs in another folder) opens the same file.
    A ``postgresql://`` URL is opened once (created and migrated) and stands for
    the small local ``.pgref`` file that names the server: every process given
    that path (training, the window) opens the same shared workspace.
    """
    chosen = str(option or os.environ.get(WORKSPACE_ENV) or default_workspace_path())
    if chosen.startswith(("postgresql://", "postgres://")):
        from core.workspace import Workspace

        with Workspace.open(chosen) as ws:
            return ws.path
    return Path(chosen).expanduser().absolute()


def reader_name(args, default: str = "") -> str:
    """Who is working: the global ``--reader``, else ``LOUPE_READER``, else ``default``."""
    value = getattr(args, "reader", None) or os.environ.get(READER_ENV) or default
    return str(value).strip()


def open_workspace(args):
    """Open (creating on first use) the workspace the arguments select."""
    from core.workspace import Workspace

    return Workspace.open(resolve_workspace_path(args.workspace))


def emit(args, document: Any, human: str) -> None:
    """Print ``document`` as one JSON document with ``--json``, else the human text."""
    if getattr(args, "json", False):
        json.dump(document, sys.stdout, indent=None, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        print(human)


def info(message: str) -> None:
    """Progress and notes go to stderr so stdout stays one JSON document."""
    print(message, file=sys.stderr)
