"""PyInstaller runtime hook: let the frozen ``loupe`` binary stand in for ``python -m MODULE``.

Loupe starts training in a child process as ``sys.executable -m core.models.train_process …``
(core/models/jobs.py). In a frozen bundle ``sys.executable`` is the ``loupe`` binary, which
has no ``-m``; this hook runs before the entry script, and when the first argument is ``-m``
with one of the bundled modules below, it runs that module as ``__main__`` and exits.
Only an allow-list is honoured, so the bundle does not become a general Python launcher.
"""

import runpy
import sys

_RUNNABLE = ("core.models.train_process",)

if len(sys.argv) >= 3 and sys.argv[1] == "-m" and sys.argv[2] in _RUNNABLE:
    _module = sys.argv[2]
    sys.argv = [sys.argv[0]] + sys.argv[3:]
    runpy.run_module(_module, run_name="__main__", alter_sys=True)
    sys.exit(0)
