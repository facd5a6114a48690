"""Where glm-deploy's collection, playbooks and inventories are.

In a repository checkout (an editable install) they sit at the repository root; an installed wheel carries the
collection and playbooks under `glm_deploy/_share`. `GLM_DEPLOY_HOME` overrides both.
"""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def project_root() -> Path:
    """The directory holding `collection/` and `playbooks/`."""
    override = os.environ.get("GLM_DEPLOY_HOME")
    if override:
        return Path(override).resolve()
    checkout = _PACKAGE_DIR.parent.parent
    if (checkout / "collection" / "galaxy.yml").is_file():
        return checkout
    return _PACKAGE_DIR / "_share"


def collection_dir() -> Path:
    return project_root() / "collection"


def playbooks_dir() -> Path:
    return project_root() / "playbooks"


def collections_path() -> Path:
    """A directory to put on ANSIBLE_COLLECTIONS_PATH so that `glm.deploy` resolves."""
    root = project_root()
    linked = root / "collections"
    if (linked / "ansible_collections" / "glm" / "deploy").exists():
        return linked
    return root / "collections"
