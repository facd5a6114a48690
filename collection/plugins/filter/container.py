"""Controller-side filter: the `docker run` argv that runs a plan's container on one node.

The server unit (`glm-server-container.service.j2`) and the JIT warm-up (`server/tasks/warmup.yml`) run the same
image with the same GPUs, mounts, environment and env file; only the name and the command differ. The argv comes
from glm_deploy.container_run, the code `glm-deploy plan` prints it with, so what a user is shown is what runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ansible.errors import AnsibleFilterError
from ansible_collections.glm.deploy.plugins.plugin_utils.glm_deploy_package import glm_deploy_imports

DOCUMENTATION = r"""
name: container_run_argv
short_description: The docker run argv of a glm-deploy plan's container on one node
description:
  - Returns C(docker run --rm --name NAME --pull never --env-file ENV_FILE), the plan's GPU, device, group,
    ipc, shm (only without C(--ipc host)) and network options, one C(--volume) per mount, one C(--env) per
    variable of the container and the node (never a secret name, those travel in the env file), O(extra_args),
    then C(--entrypoint ARGV0 IMAGE ARGV...).
  - Built by glm_deploy.container_run, the code C(glm-deploy plan) prints the command with; needs the glm-deploy
    Python package in the interpreter that runs ansible-playbook.
options:
  _input:
    description: The plan (Plan.to_dict()) with a C(container) section.
    type: dict
    required: true
  node:
    description: The node of the plan this host runs (an entry of the plan's C(nodes)).
    type: dict
    required: true
  env_file:
    description: The EnvironmentFile with the secrets (mode 0600), handed to docker with C(--env-file).
    type: str
    required: true
  argv:
    description: The command to run instead of the node's argv (the warm-up's); its first word is the entrypoint.
    type: list
    elements: str
  name:
    description: The container's name; default C(glm-SERVED_MODEL_NAME).
    type: str
  image:
    description: The image to run instead of the plan's (e.g. the engine_image role's image by digest).
    type: str
  docker:
    description: The docker CLI.
    type: str
    default: /usr/bin/docker
  extra_args:
    description: More docker run options, placed before the entrypoint.
    type: list
    elements: str
"""


def container_run_argv(
    plan: Mapping[str, Any],
    *,
    node: Mapping[str, Any],
    env_file: str,
    argv: Sequence[str] | None = None,
    name: str | None = None,
    image: str | None = None,
    docker: str | None = None,
    extra_args: Sequence[str] | None = None,
) -> list[str]:
    with glm_deploy_imports("the glm.deploy.container_run_argv filter"):
        from glm_deploy.container_run import container_run_argv as build_argv
        from glm_deploy.errors import GlmDeployError
    try:
        return build_argv(
            plan,
            node=node,
            env_file=env_file,
            argv=argv,
            name=name,
            image=image,
            docker=docker,
            extra_args=extra_args,
        )
    except GlmDeployError as error:
        raise AnsibleFilterError(f"glm.deploy.container_run_argv: {error}") from None


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"container_run_argv": container_run_argv}
