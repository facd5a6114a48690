"""Where the sandbox keeps its state on the controller, and how it runs the tools it drives.

Everything the sandbox creates on the controller lives under one state folder (`<project>/.cache/sandbox` in a
checkout, which .gitignore excludes) so that `git status` stays clean after `glm-deploy sandbox up` and a user
can see, or delete, all of it in one place. `GLM_DEPLOY_SANDBOX_DIR` moves it (tests use that to stay
isolated).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from glm_deploy.errors import GlmDeployError
from glm_deploy.paths import project_root

STATE_DIR_ENV = "GLM_DEPLOY_SANDBOX_DIR"
NAME_ENV = "GLM_DEPLOY_SANDBOX_NAME"
DEFAULT_NAME = "glm-sandbox"
_NAME_PATTERN = re.compile(r"[a-z][a-z0-9-]{0,30}")
# The sandbox's podman network takes its name, and podman refuses a network named like one of its network modes
# (podman-run(1) --network: bridge, none, container, host, ns, private, slirp4netns, pasta).
_PODMAN_NETWORK_MODES = frozenset({"bridge", "none", "container", "host", "ns", "private", "slirp4netns", "pasta"})
WHEELHOUSE_DIR_ENV = "GLM_DEPLOY_WHEELHOUSE_DIR"


class SandboxError(GlmDeployError):
    """The sandbox could not be built, started, reached or stopped."""


def state_dir() -> Path:
    """The folder holding the sandbox's key, image build area, models, hub store and state file."""
    override = os.environ.get(STATE_DIR_ENV)
    if override:
        return Path(override).resolve()
    name = sandbox_name()
    # Another sandbox name gets its own folder: two sandboxes must never share a state file.
    return project_root() / ".cache" / ("sandbox" if name == DEFAULT_NAME else f"sandbox-{name}")


def sandbox_name() -> str:
    """Names the network, the hosts (`<name>-1..N`) and the image repository (`localhost/<name>`).

    Container and network names are global to podman: a second sandbox (the test suite's) takes another
    name so that it never touches the user's.
    """
    name = os.environ.get(NAME_ENV, DEFAULT_NAME)
    if not _NAME_PATTERN.fullmatch(name):
        raise SandboxError(
            f"{NAME_ENV}={name!r} is not a valid sandbox name",
            hint="use lower-case letters, digits and '-', starting with a letter, at most 31 characters",
        )
    if name in _PODMAN_NETWORK_MODES:
        raise SandboxError(
            f"{NAME_ENV}={name!r} is one of podman's network modes, which podman refuses as a network name",
            hint="pick another name (the sandbox's network takes it); taken: "
            + ", ".join(sorted(_PODMAN_NETWORK_MODES)),
        )
    return name


def wheelhouse_dir() -> Path:
    """The controller-side wheelhouse the engine is installed from inside sandbox hosts (no index there).

    It lives in the user's cache, not the checkout: 900 MB of wheels that do not change with the code are
    downloaded once per machine, not once per clone.
    """
    override = os.environ.get(WHEELHOUSE_DIR_ENV)
    if override:
        return Path(override).resolve()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "glm-deploy" / "wheelhouse"


def progress(message: str) -> None:
    """Long steps announce themselves on stderr so that stdout stays machine-readable (`--json`)."""
    print(f"[sandbox] {message}", file=sys.stderr, flush=True)


@contextmanager
def exclusive(lock_path: Path, waiting: str) -> Iterator[None]:
    """Hold the machine-wide flock at `lock_path` for the body; say `waiting` on stderr when someone else has it.

    Every controller cache two sandboxes can fill at once (the SSH key, the image, the wheelhouse, the trained
    tiny model) is checked again and written only inside this, so a second sandbox waits and reuses the first's
    result instead of writing beside it. The kernel drops the lock when its holder dies.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(waiting)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def timed(step: str, timings: dict[str, float] | None = None, key: str | None = None) -> Iterator[None]:
    """Announce a step, and report (and optionally record, under `key`) how long it took."""
    started = time.monotonic()
    progress(f"{step} ...")
    yield
    elapsed = time.monotonic() - started
    if timings is not None:
        timings[key or step] = round(elapsed, 1)
    progress(f"{step}: done in {elapsed:.1f} s")


def run(
    argv: Sequence[str],
    *,
    what: str,
    check: bool = True,
    input_bytes: bytes | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a tool, capturing its output; on failure raise an error naming the step, with the tool's words."""
    try:
        completed = subprocess.run(
            list(argv),
            input=input_bytes.decode() if input_bytes is not None else None,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
    except FileNotFoundError as error:
        raise SandboxError(f"{what}: {argv[0]!r} is not installed", hint=install_hint()) from error
    except subprocess.TimeoutExpired as error:
        raise SandboxError(f"{what}: `{' '.join(argv)}` did not finish within {timeout:.0f} s") from error
    if check and completed.returncode != 0:
        detail = (completed.stderr or completed.stdout).strip()[-2000:]
        raise SandboxError(f"{what} failed (exit {completed.returncode}): `{' '.join(argv)}`\n{detail}")
    return completed


REQUIRED_TOOLS: tuple[tuple[str, str], ...] = (
    ("podman", "podman"),
    ("runc", "runc"),
    ("debootstrap", "debootstrap"),
    ("ssh", "openssh-client"),
    ("ssh-keygen", "openssh-client"),
)


def missing_packages() -> list[str]:
    """Debian packages whose tools the sandbox needs and that are not on PATH."""
    missing: list[str] = []
    for tool, package in REQUIRED_TOOLS:
        if shutil.which(tool) is None and package not in missing:
            missing.append(package)
    return missing


def install_hint() -> str:
    packages = " ".join(package for _, package in REQUIRED_TOOLS if package != "openssh-client")
    return f"as root: apt-get install -y {packages} openssh-client"


def is_root() -> bool:
    return os.geteuid() == 0


def require_root(action: str) -> None:
    """Sandbox hosts are rootful podman containers on a bridge the controller routes to directly."""
    if not is_root():
        raise SandboxError(
            f"{action} needs root: the sandbox runs privileged systemd containers with rootful podman and "
            "reaches them over a podman bridge network, which rootless podman cannot provide",
            hint=f"run it as root (sudo -E glm-deploy sandbox ...); it needs the Debian packages "
            f"podman, runc, debootstrap and openssh-client ({install_hint()})",
        )


def ensure_tools() -> None:
    """Install podman, runc, debootstrap (and ssh) with apt when one is missing."""
    missing = missing_packages()
    if not missing:
        return
    require_root(f"installing {', '.join(missing)}")
    if shutil.which("apt-get") is None:
        raise SandboxError(
            f"the sandbox needs the packages {', '.join(missing)} and this machine has no apt-get",
            hint="install podman, runc, debootstrap and an OpenSSH client with your package manager",
        )
    with timed(f"installing {' '.join(missing)} with apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for argv in (["apt-get", "update"], ["apt-get", "install", "-y", *missing]):
            completed = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
            if completed.returncode != 0:
                raise SandboxError(
                    f"`{' '.join(argv)}` failed (exit {completed.returncode}):\n{completed.stderr.strip()[-2000:]}",
                    hint=install_hint(),
                )
    still_missing = missing_packages()
    if still_missing:
        raise SandboxError(f"after apt-get install, still missing: {', '.join(still_missing)}", hint=install_hint())
