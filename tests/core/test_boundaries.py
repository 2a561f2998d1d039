"""core must import without Qt: every core module is imported with PySide6 made unimportable."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import importlib, pkgutil, sys

class BlockQt:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('PySide6', 'PyQt5', 'PyQt6', 'shiboken6'):
            raise ImportError(f'Qt is blocked in core: {name}')
        return None

sys.meta_path.insert(0, BlockQt())
import core
names = ['core'] + [m.name for m in pkgutil.walk_packages(core.__path__, 'core.')]
for name in names:
    importlib.import_module(name)
assert not any(k.startswith('PySide6') for k in sys.modules)
print(len(names))
"""


def test_every_core_module_imports_without_qt():
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) >= 8  # core, types, errors, progress, imaging, workspace, ... all imported


def test_cli_module_does_not_import_qt():
    script = "import sys, app.cli; assert not any(k.startswith('PySide6') for k in sys.modules)"
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
