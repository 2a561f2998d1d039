"""Before Qt starts on Linux/X11: are the system libraries its xcb platform plugin needs installed?

Without them Qt aborts with "could not load the Qt platform plugin xcb" and says nothing useful. This check runs
``ldd`` on PySide6's xcb plugin, names the missing libraries and prints the one command that installs them on
Debian/Ubuntu and on Fedora.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

logger = logging.getLogger(__name__)

#: shared library → (Debian/Ubuntu package, Fedora package)
PACKAGES = {
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil"),
    "libxcb-xkb.so.1": ("libxcb-xkb1", "libxcb"),
    "libxcb-shape.so.0": ("libxcb-shape0", "libxcb"),
    "libxcb-randr.so.0": ("libxcb-randr0", "libxcb"),
    "libxcb-xinerama.so.0": ("libxcb-xinerama0", "libxcb"),
    "libxcb-xinput.so.0": ("libxcb-xinput0", "libxcb"),
    "libxcb-sync.so.1": ("libxcb-sync1", "libxcb"),
    "libxcb-xfixes.so.0": ("libxcb-xfixes0", "libxcb"),
    "libxcb-shm.so.0": ("libxcb-shm0", "libxcb"),
    "libxcb-render.so.0": ("libxcb-render0", "libxcb"),
    "libxcb-glx.so.0": ("libxcb-glx0", "libxcb"),
    "libxcb.so.1": ("libxcb1", "libxcb"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libX11-xcb"),
    "libX11.so.6": ("libx11-6", "libX11"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon"),
    "libEGL.so.1": ("libegl1", "libglvnd-egl"),
    "libGL.so.1": ("libgl1", "libglvnd-glx"),
    "libOpenGL.so.0": ("libopengl0", "libglvnd-opengl"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig"),
    "libfreetype.so.6": ("libfreetype6", "freetype"),
    "libdbus-1.so.3": ("libdbus-1-3", "dbus-libs"),
    "libglib-2.0.so.0": ("libglib2.0-0", "glib2"),
}


def xcb_plugin() -> Optional[Path]:
    """PySide6's xcb platform plugin (``libqxcb.so``), or None when PySide6 has none."""
    try:
        import PySide6
    except ImportError:
        return None
    root = Path(PySide6.__file__).parent
    for candidate in (root / "Qt" / "plugins" / "platforms" / "libqxcb.so", root / "plugins" / "platforms" / "libqxcb.so"):
        if candidate.is_file():
            return candidate
    return None


def missing_libraries(ldd_output: str) -> list[str]:
    """Library names ``ldd`` reported as ``not found``, in order, without repeats."""
    out = []
    for line in ldd_output.splitlines():
        if "not found" in line:
            name = line.split("=>")[0].strip()
            if name and name not in out:
                out.append(name)
    return out


def install_commands(missing: list[str]) -> tuple[str, str]:
    """The Debian/Ubuntu and the Fedora command that install ``missing``."""
    deb = sorted({PACKAGES.get(m, (m.split(".so")[0],))[0] for m in missing})
    fed = sorted({PACKAGES[m][1] for m in missing if m in PACKAGES})
    return f"sudo apt-get install {' '.join(deb)}", (f"sudo dnf install {' '.join(fed)}" if fed else "")


def problem_text(missing: list[str]) -> str:
    """The message printed instead of Qt's abort."""
    deb, fed = install_commands(missing)
    lines = [f"loupe: the window cannot open: Qt's X11 (xcb) platform needs system libraries that are not installed: "
             f"{', '.join(missing)}.",
             f"  Debian/Ubuntu: {deb}"]
    if fed:
        lines.append(f"  Fedora:        {fed}")
    lines.append("  (or run without a window: `loupe --help` lists the commands; "
                 "`loupe gui --screenshot PNG` renders offscreen)")
    return "\n".join(lines)


def qt_platform_problem(ldd_output: Optional[str] = None) -> Optional[str]:
    """A plain message when Qt's xcb plugin would fail to load for missing libraries, else None.

    Only checked on Linux when Qt would use xcb (``QT_QPA_PLATFORM`` unset or ``xcb``, no Wayland session);
    ``ldd_output`` replaces running ``ldd`` (tests).
    """
    if ldd_output is None:
        if not sys.platform.startswith("linux"):
            return None
        platform = os.environ.get("QT_QPA_PLATFORM", "")
        if platform and not platform.startswith("xcb"):
            return None
        if not platform and os.environ.get("WAYLAND_DISPLAY"):
            return None
        plugin = xcb_plugin()
        ldd = shutil.which("ldd")
        if plugin is None or ldd is None:
            return None
        try:
            ldd_output = subprocess.run([ldd, str(plugin)], capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            logger.debug("ldd failed: %s", exc)
            return None
    missing = missing_libraries(ldd_output)
    return problem_text(missing) if missing else None
