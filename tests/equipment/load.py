"""Load a file of the collection (a module_utils file, a role's script) as a Python module by its path.

Files under `collection/` are not importable by package name from the tests (the `collections/` folder would
shadow the standard library's `collections`), so tests load them from where they live.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any


def load_file(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
