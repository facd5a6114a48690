"""The `docker run` argv of a plan's container on one node: the one place it is built.

Three things run or show it and must agree word for word: the server unit's ExecStart
(`glm-server-container.service.j2`, through the `glm.deploy.container_run_argv` filter), the JIT warm-up before the
cut-over (`server/tasks/warmup.yml`, the same filter with another name and command), and `glm-deploy plan`
(`Plan.command`). The unit's form is the one that runs, so it is the form: `docker run` in the foreground under
systemd (`--rm`, no `--detach`), with the image the engine_image role already pulled or built (`--pull never`).

It reads the plan as a mapping (`Plan.to_dict()`), the form the playbooks hold in `glm_plan`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from glm_deploy.errors import InputError

# The docker CLI the server role runs (its default `server_container_cli`); the sandbox swaps in podman.
DOCKER = "/usr/bin/docker"


def container_name(plan: Mapping[str, Any]) -> str:
    """The serving container's name: one per served model, so a leftover one can be removed by name."""
    return f"glm-{plan['served_model_name']}"


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
    """`docker run --rm --name NAME --pull never --env-file ENV_FILE`, the plan's GPU, device, group, ipc, shm
    (only without `--ipc host`) and network options, one `--volume` per mount, one `--env` per variable of the
    container and the node (never a secret's name: those travel in the env file), `extra_args`, then
    `--entrypoint ARGV0 IMAGE ARGV...`.

    `argv` replaces the node's command (its first word is then the entrypoint), `image` the plan's image (the
    engine_image role's, by digest), `docker` the CLI.
    """
    container = plan.get("container") if isinstance(plan, Mapping) else None
    if not isinstance(container, Mapping):
        raise InputError("the container argv needs a plan with a container section (runtime container)")
    if not isinstance(node, Mapping) or not node.get("argv"):
        raise InputError("the container argv needs node=, an entry of the plan's nodes with an argv")
    command = [str(word) for word in (argv if argv else node["argv"])]
    entrypoint = command[0] if argv else str(container.get("entrypoint") or command[0])
    secret_names = set(plan.get("secret_env") or [])
    env = {**dict(container.get("env") or {}), **dict(node.get("env") or {})}
    words = [docker or DOCKER, "run", "--rm", "--name", name or container_name(plan)]
    words += ["--pull", "never", "--env-file", env_file]
    if container.get("gpus"):
        words += ["--gpus", str(container["gpus"])]
    for device in container.get("devices") or []:
        words += ["--device", str(device)]
    for group in container.get("group_add") or []:
        words += ["--group-add", str(group)]
    if container.get("ipc"):
        words += ["--ipc", str(container["ipc"])]
    # Under --ipc host the container uses the host's /dev/shm: a size has no effect there (podman refuses the
    # pair), so it is given only to a container with an IPC namespace of its own.
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
