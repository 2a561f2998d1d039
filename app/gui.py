"""Starting the desktop app (``loupe gui``): theme, logging, window, optional offscreen screenshot."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

logger = logging.getLogger(__name__)

DEMO_DIR = Path(__file__).resolve().parents[1] / "resources" / "demo"


def run_gui(workspace_path: Optional[Path], demo: bool = False, screenshot: Optional[Path] = None,
            timeout_s: float = 240.0, default_path: Optional[Path] = None, reader: Optional[str] = None) -> int:
    """Open the main window on ``workspace_path``; returns the exit code.

    ``workspace_path`` None: the last workspace opened, else a start dialog offers to create one, open one or
    use ``default_path``. ``reader`` (``--reader`` / ``LOUPE_READER``) settles who labels without asking.

    With ``demo`` the bundled demo is prepared in the background after the
    window appears. With ``screenshot`` the window is rendered to that PNG once
    the worklist, the first image and any pending background work are done
    (or after ``timeout_s``), and the app exits.
    """
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from app.logging_setup import setup_logging
    from app.settings import Settings
    from app.theme import apply_dark_theme
    from app.workstation import workspaces

    log_file = setup_logging()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Loupe")
    app.setOrganizationName("Loupe")
    apply_dark_theme(app)
    settings = Settings()
    if workspace_path is None:
        workspace_path = workspaces.last_workspace(settings)
    if workspace_path is None:
        start = workspaces.StartDialog(settings, default_path or Path("workspace.sqlite").absolute())
        if not start.exec() or start.chosen is None:
            return 0
        workspace_path = start.chosen
    window = workspaces.open_window(workspace_path, settings, first_run=not demo and screenshot is None,
                                    reader=reader, ask_reader=screenshot is None)
    window.session.install_excepthooks()
    logger.info("Loupe window open on %s; log file %s", workspace_path, log_file)
    if demo:
        QTimer.singleShot(100, lambda: start_demo(window))
    if screenshot is not None:
        schedule_screenshot(window, Path(screenshot), timeout_s)
    code = app.exec()
    workspaces.close_all()
    return code


def start_demo(window) -> None:
    """Prepare the demo in the background; reload the window when it is ready."""
    from core.demo import prepare_demo

    window.notify("preparing the demo workspace…")
    window.session.background.submit("demo", prepare_demo, window.workspace, DEMO_DIR,
                         on_done=lambda summary: (window.notify(f"demo ready: model {summary.get('active')}"),
                                                  window.reload()),
                         on_error=window.notify_error,
                         on_progress=lambda p: window.notify(p.message))


def schedule_screenshot(window, path: Path, timeout_s: float) -> None:
    """Grab the window to ``path`` once it is idle (or at the timeout), then quit."""
    from PySide6.QtCore import QElapsedTimer, QTimer
    from PySide6.QtWidgets import QApplication

    clock = QElapsedTimer()
    clock.start()
    timer = QTimer(window)

    def poll() -> None:
        idle = not window.session.busy() and window.rows and window.viewer.current_path is not None
        if idle or clock.elapsed() > timeout_s * 1000:
            timer.stop()
            QTimer.singleShot(500, shoot)

    def shoot() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        window.grab().save(str(path))
        logger.info("screenshot written to %s", path)
        QApplication.instance().quit()

    timer.timeout.connect(poll)
    timer.start(250)
