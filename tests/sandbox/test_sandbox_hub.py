"""The tiny model on the Hub stand-in, fetched with huggingface_hub as the weights role fetches it."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import snapshot_download
from sandbox_helpers import digests, free_port

from glm_deploy.sandbox import hub_service
from glm_deploy.sandbox.environment import STATE_DIR_ENV, SandboxError
from glm_deploy.sandbox.hub import HubStore
from glm_deploy.sandbox.hub_service import Published

pytestmark = pytest.mark.sandbox

REPO_ID = "glm-deploy/glm-tiny"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Published]]:
    """A sandbox state folder of its own, the model published into it, and the hub serving it on localhost."""
    patch = pytest.MonkeyPatch()
    patch.setenv(STATE_DIR_ENV, str(tmp_path_factory.mktemp("sandbox-state")))
    published = hub_service.publish_tiny_model(REPO_ID)
    port = free_port()
    hub_service.start_hub("127.0.0.1", port, REPO_ID)
    try:
        yield f"http://127.0.0.1:{port}", published
    finally:
        hub_service.stop_hub()
        patch.undo()


def test_snapshot_download_of_main_gets_revision_1_byte_for_byte(hub: tuple[str, Published], tmp_path: Path) -> None:
    url, published = hub
    snapshot = Path(snapshot_download(REPO_ID, revision="main", endpoint=url, cache_dir=tmp_path))
    assert snapshot.name == published.revisions["1"]
    assert digests(snapshot) == digests(hub_service.models_dir() / "glm-tiny-r1")


def test_revision_2_is_a_second_commit_with_other_weights(hub: tuple[str, Published], tmp_path: Path) -> None:
    url, published = hub
    assert published.branches == {"1": "main", "2": "revision-2", "3": "revision-3"}
    assert published.revisions["1"] != published.revisions["2"]
    pinned = Path(snapshot_download(REPO_ID, revision=published.revisions["2"], endpoint=url, cache_dir=tmp_path))
    fetched = digests(pinned)
    assert fetched == digests(hub_service.models_dir() / "glm-tiny-r2")
    assert fetched["model.safetensors"] != digests(hub_service.models_dir() / "glm-tiny-r1")["model.safetensors"]


def test_publishing_again_keeps_the_same_commits(hub: tuple[str, Published]) -> None:
    _, published = hub
    assert hub_service.publish_tiny_model(REPO_ID) == published


def test_starting_again_reuses_the_running_hub(hub: tuple[str, Published]) -> None:
    url, _ = hub
    running = hub_service.running_hub_pid()
    assert running is not None
    port = int(url.rsplit(":", 1)[1])
    assert hub_service.start_hub("127.0.0.1", port, REPO_ID) == running


def test_a_busy_port_is_reported_with_the_fix(hub: tuple[str, Published]) -> None:
    running = hub_service.running_hub_pid()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(SandboxError) as raised:
            hub_service.start_hub("127.0.0.1", port, REPO_ID)
    message = str(raised.value)
    assert f"port {port}" in message and "already in use" in message
    assert "--hub-port" in message
    # The running hub was left alone: a failed move does not take the sandbox's Hub away.
    assert hub_service.running_hub_pid() == running
    assert hub_service.hub_answers(hub[0], REPO_ID)


def test_stop_hub_stops_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A hub of its own (another state folder), so the module's hub keeps serving the other tests.
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path))
    hub_service.hub_root().mkdir(parents=True)
    store_dir = hub_service.hub_root()
    HubStore(store_dir).publish("example/tiny", {"README.md": b"hello\n"})
    port = free_port()
    pid = hub_service.start_hub("127.0.0.1", port, "example/tiny")
    assert hub_service.hub_answers(f"http://127.0.0.1:{port}", "example/tiny")
    assert hub_service.stop_hub() is True
    assert hub_service.running_hub_pid() is None
    assert not Path(f"/proc/{pid}/cmdline").exists() or not Path(f"/proc/{pid}/cmdline").read_bytes()
    assert not hub_service.hub_answers(f"http://127.0.0.1:{port}", "example/tiny")
    assert hub_service.stop_hub() is False
