"""Load a file of the collection (a module_utils file, a role's script, a controller plugin) as a Python module by
its path.

Files under `collection/` are not importable by package name from the tests (the `collections/` folder would
shadow the standard library's `collections`), so tests load them from where they live.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

PLUGIN_UTILS = Path(__file__).resolve().parents[2] / "collection" / "plugins" / "plugin_utils"


def load_file(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_plugin(name: str, path: Path) -> Any:
    """Load a controller plugin (filter, lookup, action) that imports the collection's plugin_utils by their
    Ansible names (`ansible_collections.glm.deploy.plugins.plugin_utils.*`): those are loaded from their files
    under those names first, as Ansible's collection loader would."""
    for util in sorted(PLUGIN_UTILS.glob("*.py")):
        full_name = f"ansible_collections.glm.deploy.plugins.plugin_utils.{util.stem}"
        if full_name not in sys.modules:
            sys.modules[full_name] = load_file(full_name, util)
    return load_file(name, path)
