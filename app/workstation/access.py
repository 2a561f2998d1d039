"""How the workstation dialogs reach the window's workspace and runner (before and after the ReviewSession)."""

from __future__ import annotations


def workspace_of(window):
    """The window's open workspace (through its session when it has one)."""
    session = getattr(window, "session", None)
    return getattr(session, "workspace", None) or window.workspace


def runner_of(window, background: bool = True):
    """The runner for disk and model work: the session's background runner when present, else the window's."""
    session = getattr(window, "session", None)
    if session is not None:
        for name in (("background", "runner") if background else ("interactive", "runner")):
            runner = getattr(session, name, None)
            if runner is not None and hasattr(runner, "submit"):
                return runner
    return window.runner
