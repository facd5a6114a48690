"""Which sandbox names are taken: the name becomes a podman network, the hosts' names and a state folder."""

from __future__ import annotations

import pytest

from glm_deploy.sandbox.environment import NAME_ENV, SandboxError, sandbox_name

# podman-run(1) --network: the network modes podman refuses as network names ("conflicts with a valid network mode").
PODMAN_NETWORK_MODES = ["bridge", "none", "container", "host", "ns", "private", "slirp4netns", "pasta"]


@pytest.mark.parametrize("name", PODMAN_NETWORK_MODES)
def test_a_podman_network_mode_is_refused_as_a_name(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NAME_ENV, name)
    with pytest.raises(SandboxError, match="network modes") as refused:
        sandbox_name()
    assert refused.value.hint is not None and "pick another name" in refused.value.hint


@pytest.mark.parametrize("name", ["glm-sandbox", "glm-deploy-e2e", "molecule-container", "hosts", "nonet", "c"])
def test_names_that_only_resemble_them_are_accepted(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NAME_ENV, name)
    assert sandbox_name() == name


@pytest.mark.parametrize("name", ["Bad Name!", "container\n", "-lead", "a" * 32, "", "glm_sandbox"])
def test_names_outside_the_pattern_are_refused(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NAME_ENV, name)
    with pytest.raises(SandboxError, match="not a valid sandbox name"):
        sandbox_name()
