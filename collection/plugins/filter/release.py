"""Controller-side filter: the release a plan makes, with the id the controller's history uses.

The release id is computed by glm_deploy.release.Release, the same code that writes the controller's history,
so a host's `releases/ID/` folder and `glm-deploy history` name a release the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleFilterError
from ansible_collections.glm.deploy.plugins.plugin_utils.glm_deploy_package import glm_deploy_imports

DOCUMENTATION = r"""
name: release
short_description: The glm-deploy release (and its id) a plan makes with what a host installed
description:
  - Returns the release document (model repository and commit, engine and version, image and digest or venv
    requirement and lock, the plan's hash) with its C(release_id), for M(glm.deploy.release).
options:
  _input:
    description: The plan (Plan.to_dict()), as the glm.deploy.plan role sets it in C(glm_plan).
    type: dict
    required: true
  model_commit:
    description: The commit the weights were fetched at (the weights role's C(weights_commit)).
    type: str
  image_digest:
    description: The engine image the unit runs, by digest (container runtime).
    type: str
  venv_lock:
    description: The hash of the engine venv's installed packages (native runtime).
    type: str
"""


def release(
    plan: Mapping[str, Any],
    model_commit: str | None = None,
    image_digest: str | None = None,
    venv_lock: str | None = None,
) -> dict[str, Any]:
    with glm_deploy_imports("the glm.deploy.release filter"):
        from glm_deploy.release import Release
    if not isinstance(plan, Mapping):
        raise AnsibleFilterError(f"glm.deploy.release takes the plan (a mapping), got {type(plan).__name__}")
    try:
        made = Release.from_plan_document(
            plan,
            model_commit=model_commit or None,
            image_digest=image_digest or None,
            venv_lock=venv_lock or None,
        )
    except (KeyError, TypeError) as error:
        raise AnsibleFilterError(f"glm.deploy.release: the plan lacks {error}") from None
    return made.to_dict()


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"release": release}
