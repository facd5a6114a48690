"""Controller-side filter: the project folder a run keeps its files in (the API key's .cache/secrets, the CA,
benchmark results), from the folder of the playbook that runs.

A project's own playbooks (`ansible-playbook site.yml` in the glm-deploy repository, whose `playbooks/` is the
collection's) keep them in the folder above `playbooks/`, as before. The installed collection's playbooks
(`ansible-playbook glm.deploy.site`) live under `ansible_collections/`, where a secret must never be written: they
use the folder ansible-playbook runs in. `glm_project_dir` set in the inventory or with -e wins over both.
"""

from __future__ import annotations

import os
from pathlib import PurePath
from typing import Any

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: project_dir
short_description: The project folder of a run, from the folder of its playbook
description:
  - The folder above the playbook's folder, except for a playbook inside an C(ansible_collections) tree (the
    collection's own, run as C(glm.deploy.site)), whose project folder is the one ansible-playbook runs in.
options:
  _input:
    description: The play's C(playbook_dir).
    type: str
    required: true
"""


def project_dir(playbook_dir: Any) -> str:
    if not isinstance(playbook_dir, str) or not playbook_dir:
        raise AnsibleFilterError(f"glm.deploy.project_dir takes the play's playbook_dir, got {playbook_dir!r}")
    path = PurePath(playbook_dir)
    if "ansible_collections" in path.parts:
        return os.getcwd()
    return str(path.parent)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"project_dir": project_dir}
