"""Controller-side filter: the plan options with the Hugging Face cache on a shared filesystem the hosts mount.

The rule (and the folder under the mount, from the catalog's shared_filesystem_weights) is
glm_deploy.render.options.options_on_filesystem, the same code `Deployment.settings` uses, so the playbooks and the
glm-deploy CLI render the same plan (and the same release id) for a host with a Lambda filesystem attached.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleFilterError
from ansible_collections.glm.deploy.plugins.plugin_utils.glm_deploy_package import glm_deploy_imports

DOCUMENTATION = r"""
name: options_on_filesystem
short_description: Plan options with the HF cache (option hf_home) on a shared filesystem's mount
description:
  - Returns the options with C(hf_home) set to C(<mount>/<hf_home_folder>) (the catalog's
    C(shared_filesystem_weights.hf_home_folder), C(glm-deploy/hf)), so the weights outlive the instance.
  - Returns them unchanged when O(mount) is empty or the options already name C(hf_home).
  - Refuses a mount point that is not absolute or holds anything but letters, digits and C(._-) between single C(/).
options:
  _input:
    description: The plan options (inventory C(glm_options)).
    type: dict
    required: true
  mount:
    description: Where the shared filesystem is mounted on the hosts (the inventory's C(glm_filesystem_mount)).
    type: str
"""


def options_on_filesystem(options: Mapping[str, Any], mount: str | None = None) -> dict[str, Any]:
    if not isinstance(options, Mapping):
        raise AnsibleFilterError(
            f"glm.deploy.options_on_filesystem takes the plan options (a mapping), got {type(options).__name__}"
        )
    if not mount:
        # Nothing to place: the plan lookup right after it is what tells a controller without glm-deploy what to do.
        return dict(options)
    with glm_deploy_imports("the glm.deploy.options_on_filesystem filter"):
        from glm_deploy.catalog import load_catalog
        from glm_deploy.errors import GlmDeployError
        from glm_deploy.render.options import options_on_filesystem as on_filesystem
    try:
        return on_filesystem(options, mount, load_catalog().shared_filesystem_weights)
    except GlmDeployError as error:
        raise AnsibleFilterError(f"glm.deploy.options_on_filesystem: {error}") from None


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"options_on_filesystem": options_on_filesystem}
