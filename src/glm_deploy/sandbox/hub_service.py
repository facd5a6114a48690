"""Running the Hub stand-in (`python -m glm_deploy.sandbox.hub`) for the sandbox, and publishing the tiny
model.

The server listens on the sandbox network's gateway address: the hosts reach it as they would reach the Hub,
through `HF_ENDPOINT`, and its traffic never leaves this machine. It runs detached with a pidfile and a log in
the state folder; `glm-deploy sandbox down` stops it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from glm_deploy.sandbox.environment import SandboxError, progress, state_dir
from glm_deploy.sandbox.hub import HubStore, HubStoreError
from glm_deploy.sandbox.tiny_model import REVISIONS, is_current_build, model_files

HUB_MODULE = "glm_deploy.sandbox.hub"
DEFAULT_HUB_PORT = 8765
PUBLISHED_FILE = "published.json"


def hub_root() -> Path:
    return state_dir() / "hub"


def models_dir() -> Path:
    return state_dir() / "models"


def pidfile() -> Path:
    return state_dir() / "hub.pid"


def logfile() -> Path:
    return state_dir() / "hub.log"


def branch_for(revision: int) -> str:
    """Revision 1 is `main` (what an unpinned plan deploys); later ones get their own branch."""
    return "main" if revision == 1 else f"revision-{revision}"


@dataclass(frozen=True)
class Published:
    repo_id: str
    revisions: dict[str, str]  # revision -> commit
    branches: dict[str, str]  # revision -> branch


def _built_model(revision: int) -> Path:
    """The tiny model's folder for `revision`, built when missing (builds are deterministic)."""
    directory = models_dir() / f"glm-tiny-r{revision}"
    if not is_current_build(directory, revision):
        started = time.monotonic()
        progress(f"building the tiny model, revision {revision}, into {directory}")
        # In a child process: torch and transformers are heavy, and a process that has imported Ansible's module
        # code (it patches sys.intern) can no longer import torch._dynamo, which transformers' model classes need.
        built = subprocess.run(
            [
                sys.executable,
                "-m",
                "glm_deploy.cli",
                "sandbox",
                "build-model",
                "--out",
                str(directory),
                "--revision",
                str(revision),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if built.returncode != 0:
            raise SandboxError(
                f"building the tiny model (revision {revision}) failed: {built.stderr.strip()[-2000:]}",
                hint=f"run it by hand to see everything: glm-deploy sandbox build-model --out {directory}",
            )
        progress(f"tiny model revision {revision} built in {time.monotonic() - started:.1f} s")
    return directory


def _digest_of(directory: Path) -> dict[str, str]:
    return {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in model_files(directory).items()}


def publish_tiny_model(repo_id: str) -> Published:
    """Publish revision 1 on `main`, 2 on `revision-2` and 3 on `revision-3`, once: republishing makes new commits."""
    store = HubStore(hub_root())
    record_path = state_dir() / PUBLISHED_FILE
    directories = {revision: _built_model(revision) for revision in REVISIONS}
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        record = {}
    if record.get("repo_id") == repo_id:
        try:
            unchanged = all(
                record["files"][str(revision)] == _digest_of(directory)
                and store.resolve(repo_id, record["revisions"][str(revision)]).sha == record["revisions"][str(revision)]
                and store.branches(repo_id).get(branch_for(revision)) == record["revisions"][str(revision)]
                for revision, directory in directories.items()
            )
        except (KeyError, HubStoreError, ValueError):
            unchanged = False
        if unchanged:
            return Published(repo_id, dict(record["revisions"]), dict(record["branches"]))
    revisions: dict[str, str] = {}
    branches: dict[str, str] = {}
    for revision, directory in directories.items():
        branch = branch_for(revision)
        files: dict[str, Path | bytes] = dict(model_files(directory))
        revisions[str(revision)] = store.publish(repo_id, files, branch=branch)
        branches[str(revision)] = branch
        progress(f"published {repo_id} revision {revision} on branch {branch}: commit {revisions[str(revision)]}")
    record = {
        "repo_id": repo_id,
        "revisions": revisions,
        "branches": branches,
        "files": {str(revision): _digest_of(directory) for revision, directory in directories.items()},
    }
    record_path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return Published(repo_id, revisions, branches)


def _process_is_hub(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return HUB_MODULE.encode() in cmdline


def _read_pidfile() -> tuple[int, str, int] | None:
    """(pid, host, port) of the hub this sandbox started, from its pidfile (`PID HOST PORT`)."""
    try:
        pid, host, port = pidfile().read_text().split()
        return int(pid), host, int(port)
    except (OSError, ValueError):
        return None


def running_hub() -> tuple[int, str, int] | None:
    """(pid, host, port) of the hub this sandbox started, if it still runs (a pid reused by another program
    is not it)."""
    recorded = _read_pidfile()
    if recorded is None or not _process_is_hub(recorded[0]):
        return None
    return recorded


def running_hub_pid() -> int | None:
    running = running_hub()
    return running[0] if running else None


def hub_answers(url: str, repo_id: str, timeout: float = 2.0) -> bool:
    """Whether the hub at `url` resolves `main` of `repo_id` (what huggingface_hub asks first)."""
    try:
        with urllib.request.urlopen(f"{url}/api/models/{repo_id}/revision/main", timeout=timeout) as response:  # noqa: S310 - http URL built here
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return True
            raise SandboxError(f"cannot bind the Hub stand-in to {host}:{port}: {error}") from error
    return False


def start_hub(host: str, port: int, repo_id: str, *, timeout: float = 30.0) -> int:
    """Start the hub on host:port (reusing one this sandbox already runs there) and return its pid."""
    url = f"http://{host}:{port}"
    running = running_hub()
    if running is not None and running[1:] == (host, port):
        if hub_answers(url, repo_id):
            return running[0]
        # Ours, on this address, but hung: replace it.
        stop_hub()
        running = None
    if _port_in_use(host, port):
        raise SandboxError(
            f"port {port} on {host} (the sandbox network's gateway) is already in use, so the Hub stand-in "
            "cannot listen there",
            hint=f"pick another port with `glm-deploy sandbox up --hub-port PORT`, or stop what holds it "
            f"(`ss -ltnp 'sport = :{port}'` shows the process)",
        )
    if running is not None:
        # The sandbox's hub moves to the new address only once that address is known to be free.
        stop_hub()
    state_dir().mkdir(parents=True, exist_ok=True)
    with logfile().open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                HUB_MODULE,
                "--root",
                str(hub_root()),
                "--host",
                host,
                "--port",
                str(port),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives the CLI; `down` stops it through the pidfile
        )
    pidfile().write_text(f"{process.pid} {host} {port}\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pidfile().unlink(missing_ok=True)
            tail = logfile().read_text(errors="replace")[-1500:]
            raise SandboxError(f"the Hub stand-in exited at start (exit {process.returncode}); its log:\n{tail}")
        if hub_answers(url, repo_id):
            return process.pid
        time.sleep(0.3)
    stop_hub()
    raise SandboxError(f"the Hub stand-in did not answer on {url} within {timeout:.0f} s (log: {logfile()})")


def stop_hub(timeout: float = 10.0) -> bool:
    """Stop the hub this sandbox started; True when one was running."""
    pid = running_hub_pid()
    if pid is None:
        pidfile().unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _process_is_hub(pid):
        # Reap it when it is our child (tests start and stop it in one process).
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    if _process_is_hub(pid):
        os.kill(pid, signal.SIGKILL)
    pidfile().unlink(missing_ok=True)
    return True
