"""Load a script under examples/ or benchmarks/ as a module, so tests can call its functions."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_script(path: str) -> ModuleType:
    """The script at ``path`` (relative to the repository root, e.g. ``"examples/early_exit.py"``),
    executed as a module named after its file, without running its ``__main__`` block. It is
    registered in ``sys.modules`` while it executes, as an import would, so that its dataclasses
    can resolve their annotations."""
    script = ROOT / path
    spec = importlib.util.spec_from_file_location(script.stem, script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
