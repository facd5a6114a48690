"""Controller-side filter: the `docker run` argv that runs a plan's container on one node.

The server unit (`glm-server-container.service.j2`) and the JIT warm-up (`server/tasks/warmup.yml`) run the same
image with the same GPUs, mounts, environment and env file; only the name and the command differ. This filter
builds that argv once, in the order the unit template writes it, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: container_run_argv
short_description: The docker run argv of a glm-deploy plan's container on one node
description:
  - Returns C(docker run --rm --name NAME --pull never --env-file ENV_FILE), the plan's GPU, device, group,
    ipc, shm (only without C(--ipc host)) and network options, one C(--volume) per mount, one C(--env) per
    variable of the container and the node (never a secret name, those travel in the env file), O(extra_args),
    then C(--entrypoint ARGV0 IMAGE ARGV...).
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
    if not isinstance(plan, Mapping) or not isinstance(plan.get("container"), Mapping):
        raise AnsibleFilterError(
            "glm.deploy.container_run_argv takes a plan with a container section (runtime container)"
        )
    if not isinstance(node, Mapping) or not node.get("argv"):
        raise AnsibleFilterError(
            "glm.deploy.container_run_argv needs node=, an entry of the plan's nodes with an argv"
        )
    container: Mapping[str, Any] = plan["container"]
    command = [str(word) for word in (argv if argv else node["argv"])]
    if not command:
        raise AnsibleFilterError("glm.deploy.container_run_argv: argv= is empty")
    entrypoint = command[0] if argv else str(container.get("entrypoint") or command[0])
    secret_names = set(plan.get("secret_env") or [])
    env = {**dict(container.get("env") or {}), **dict(node.get("env") or {})}
    words = [docker or "/usr/bin/docker", "run", "--rm", "--name", name or f"glm-{plan['served_model_name']}"]
    words += ["--pull", "never", "--env-file", env_file]
    if container.get("gpus"):
        words += ["--gpus", str(container["gpus"])]
    for device in container.get("devices") or []:
        words += ["--device", str(device)]
    for group in container.get("group_add") or []:
        words += ["--group-add", str(group)]
    if container.get("ipc"):
        words += ["--ipc", str(container["ipc"])]
    # Under --ipc host the container uses the host's /dev/shm: a size has no effect (podman refuses the pair).
    if container.get("shm_size") and container.get("ipc") != "host":
        words += ["--shm-size", str(container["shm_size"])]
    if container.get("network"):
        words += ["--network", str(container["network"])]
    for mount in container.get("mounts") or []:
        words += ["--volume", f"{mount['source']}:{mount['target']}" + (":ro" if mount.get("read_only") else "")]
    for variable, value in sorted(env.items()):
        if variable not in secret_names:
            words += ["--env", f"{variable}={value}"]
    words += [str(word) for word in extra_args or []]
    words += ["--entrypoint", entrypoint, str(image or container["image"]), *command[1:]]
    return words


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"container_run_argv": container_run_argv}
