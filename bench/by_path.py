"""Load a benchmark module by its file, under another name.

``bench/dicomweb.py`` and ``bench/dimse.py`` share their names with the portal's own
``dicomweb`` and ``dimse`` packages; imported by name, one would hide the other.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parent


def load(stem: str) -> ModuleType:
    """``bench/<stem>.py`` as the module ``bench_<stem>`` (loaded once)."""
    name = f"bench_{stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{stem}.py")
    assert spec is not None and spec.loader is not None
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
