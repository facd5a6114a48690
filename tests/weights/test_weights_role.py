"""The weights role with ansible-playbook: venv, async download with progress, facts, re-run, check mode."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tests.equipment.hub_faults import Fault, FaultyHub, make_test_pki
from tests.equipment.playbook import run_playbook
from tests.weights.helpers import REPO_ROOT, expected_digests, make_model_files, snapshot_digests

pytestmark = pytest.mark.playbook

TOKEN = "hf_roleTestTokenMustNeverBePrinted0987654321"
PLAYBOOK = """
- name: Weights
  hosts: all
  gather_facts: false
  roles:
    - role: glm.deploy.weights
  post_tasks:
    - name: Show the commit
      ansible.builtin.debug:
        msg: "weights_commit={{ weights_commit | default('unset') }}"
"""


@pytest.fixture(scope="module")
def venv_dir() -> Path:
    """The role creates this venv on its first run ever (pip from the package index); later runs find it
    ready, which is the role's idempotent path. It lives under the checkout's .cache/ (ignored by git)."""
    return REPO_ROOT / ".cache" / "test-venvs" / "weights-hub"


def play(tmp_path: Path, extra_vars: dict[str, object], *, check: bool = False) -> subprocess.CompletedProcess[str]:
    playbook = tmp_path / "weights.yml"
    playbook.write_text(PLAYBOOK)
    vars_file = tmp_path / "vars.json"
    vars_file.write_text(json.dumps(extra_vars))
    # The role's variables (the token among them) go in a file, never on the command line.
    return run_playbook(
        playbook,
        home=tmp_path,
        inventory="localhost,",
        variables={"ansible_python_interpreter": sys.executable},
        args=["-c", "local", "-v", "-e", f"@{vars_file}", *(["--check"] if check else [])],
        env={"ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"), "ANSIBLE_FORCE_COLOR": "0"},
        drop_env=("HF_", "ANSIBLE_"),
        cwd=REPO_ROOT,
        timeout=240,
    )


def role_vars(hub: FaultyHub, venv_dir: Path, tmp_path: Path, repo: str) -> dict[str, object]:
    return {
        "glm_plan": {"model_repo": repo, "model_revision": "main"},
        "glm_hf_endpoint": hub.url,
        "weights_cache_dir": str(tmp_path / "hf" / "hub"),
        "weights_progress_file": str(tmp_path / "progress.json"),
        "weights_venv_dir": str(venv_dir),
        "weights_venv_python": getattr(sys, "_base_executable", sys.executable),
        "weights_system_packages": [],
        "weights_free_space_reserve_bytes": 0,
        "weights_poll_interval_s": 1,
        "weights_stall_timeout_s": 2,
    }


def recap_changed(output: str) -> int:
    match = re.search(r"localhost\s+: ok=\d+\s+changed=(\d+)", output)
    assert match, output
    return int(match.group(1))


def test_role_downloads_with_progress_then_changes_nothing(hub: FaultyHub, venv_dir: Path, tmp_path: Path):
    files = make_model_files(7, [3_000_000, 1_000_000])
    commit = hub.store.publish("zai-org/GLM-role", files, gated=True)
    # A stalled response keeps the download running across a few polls, so progress lines must appear.
    hub.faults.add(Fault("stall", filename="model-00001-of-00002.safetensors", at_byte=1_500_000, seconds=4))
    variables = role_vars(hub, venv_dir, tmp_path, "zai-org/GLM-role")
    variables["glm_hf_token"] = TOKEN

    first = play(tmp_path, variables)

    assert first.returncode == 0, first.stdout + first.stderr
    assert f"weights_commit={commit}" in first.stdout
    progress_lines = re.findall(r"weights zai-org/GLM-role @ localhost: .* \[downloading\]", first.stdout)
    assert progress_lines, first.stdout
    assert re.search(r"/s, ETA \S+, \d/4 files", progress_lines[-1])
    cache_dir = Path(str(variables["weights_cache_dir"]))
    assert snapshot_digests(cache_dir, "zai-org/GLM-role", commit) == expected_digests(files)

    hub.stats.reset()
    second = play(tmp_path, variables)

    assert second.returncode == 0, second.stdout + second.stderr
    assert recap_changed(second.stdout) == 0, second.stdout
    assert hub.stats.file_bytes_sent == 0

    checked = play(tmp_path, variables, check=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert recap_changed(checked.stdout) == 0, checked.stdout
    assert f"weights_commit={commit}" in checked.stdout

    # The token reached the Hub (the repository is gated) but no output, progress file or cache file shows it.
    for run in (first, second, checked):
        assert TOKEN not in run.stdout + run.stderr
    assert TOKEN not in (tmp_path / "progress.json").read_text()
    for path in cache_dir.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes()


def test_role_prints_the_wait_the_hub_asked_for(hub: FaultyHub, venv_dir: Path, tmp_path: Path):
    """A rate limit of minutes is a silent stretch of the play: the wait line says why, and the retry budget
    (weights_retry_budget_s) outlasts it."""
    files = make_model_files(8, [400_000])
    commit = hub.store.publish("zai-org/GLM-limited", files)
    shard = "model-00001-of-00001.safetensors"
    hub.faults.add(Fault("status", filename=shard, status=429, rate_limit='"resolvers";r=0;t=6'))
    variables = role_vars(hub, venv_dir, tmp_path, "zai-org/GLM-limited")
    variables["weights_retry_budget_s"] = 60

    run = play(tmp_path, variables)

    assert run.returncode == 0, run.stdout + run.stderr
    assert f"weights_commit={commit}" in run.stdout
    assert (
        f"weights zai-org/GLM-limited @ localhost: downloading {shard}: rate limited by the Hub: waiting 6 s "
        "(RateLimit t=6)"
    ) in run.stdout, run.stdout


def test_role_refuses_a_gated_repository_without_a_token(hub: FaultyHub, venv_dir: Path, tmp_path: Path):
    hub.store.publish("zai-org/GLM-gated", {"config.json": b"{}", "model.safetensors": b"\x07" * 50_000}, gated=True)

    refused = play(tmp_path, role_vars(hub, venv_dir, tmp_path, "zai-org/GLM-gated"))

    assert refused.returncode != 0
    assert "zai-org/GLM-gated is a gated repository and no token was given" in refused.stdout
    assert "set HF_TOKEN" in refused.stdout
    assert not (tmp_path / "hf" / "hub").exists()
    assert hub.stats.file_bytes_sent == 0


def test_role_installs_the_hub_client_offline_from_a_wheelhouse(hub: FaultyHub, tmp_path: Path):
    """Hosts that reach only the Hub install huggingface_hub from wheels the controller carries over."""
    wheelhouse = REPO_ROOT / ".cache" / "test-wheelhouses" / "hub"
    if not list(wheelhouse.glob("huggingface_hub-*.whl")):
        downloaded = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(wheelhouse), "huggingface_hub>=1.0,<3"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert downloaded.returncode == 0, downloaded.stderr
    commit = hub.store.publish("zai-org/GLM-offline", {"config.json": b"{}"})
    variables = role_vars(hub, tmp_path / "venvs" / "hub", tmp_path, "zai-org/GLM-offline")
    variables["weights_wheelhouse"] = str(wheelhouse)
    # An index that cannot be reached: the install must not need one.
    variables["weights_pip_extra_args"] = ["--index-url", "http://127.0.0.1:9/simple"]

    run = play(tmp_path, variables)

    assert run.returncode == 0, run.stdout + run.stderr
    assert f"weights_commit={commit}" in run.stdout
    assert (tmp_path / "venvs" / "wheelhouse-hub").is_dir()


def test_role_downloads_over_https_trusting_weights_ca_bundle(tmp_path: Path, venv_dir: Path, monkeypatch):
    """A mirror whose certificate an internal CA signed: the role copies weights_ca_bundle to the host and the
    download trusts it (and only it: the system's CAs do not know this one)."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    pki = make_test_pki(tmp_path / "pki")
    with FaultyHub(tmp_path / "hub-store", tls=pki) as hub:
        files = make_model_files(5, [700_000])
        commit = hub.store.publish("zai-org/GLM-tls", files)
        variables = role_vars(hub, venv_dir, tmp_path, "zai-org/GLM-tls")
        # Where the host keeps its copy; in the test, under this test's own folder.
        variables["_weights_ca_bundle_remote"] = str(tmp_path / "host-ca-bundle.pem")

        refused = play(tmp_path, variables)

        assert refused.returncode != 0
        assert f"TLS with the Hub at {hub.url} failed: certificate verify failed" in refused.stdout, refused.stdout

        variables["weights_ca_bundle"] = str(pki.ca_file)
        run = play(tmp_path, variables)

        assert run.returncode == 0, run.stdout + run.stderr
        assert f"weights_commit={commit}" in run.stdout
        assert (tmp_path / "host-ca-bundle.pem").read_bytes() == pki.ca_file.read_bytes()
        assert snapshot_digests(tmp_path / "hf" / "hub", "zai-org/GLM-tls", commit) == expected_digests(files)
