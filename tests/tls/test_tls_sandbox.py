"""TLS in front of the engine, end to end on the fleet's first host (tests/equipment/fleet.py): an inventory that
asks for `tls: internal` (the sandbox inventory plus that option), deployed to that host through the Python API like
`glm-deploy deploy --limit`, then checked the way a user and an attacker on the network would:

- the real OpenAI and Anthropic Python clients stream a chat through TLS, trusting the CA only because of the
  environment `glm-deploy client-env` prints, and chunks arrive as they are generated (nginx does not buffer);
- a client without that CA is refused by TLS verification; plain HTTP to the public port never reaches the
  engine; the engine's own port answers nobody off the host (it listens on loopback);
- without the key the answer is 401 through the proxy;
- the key is in no unit file, command line, nginx file, log or runner artifact; the certificate and its key are
  0600 root on the host.

One module-scoped deploy serves every test: a converged host switched to `tls: internal` (the engine restarted on
loopback, nginx installed and given its certificate). It runs after the deploy tests and before Molecule's container
scenario, which uses the second host (FLEET_ORDER in tests/conftest.py); the first host keeps TLS after it.
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.equipment.fleet import REPO_ROOT, Deployment, host_url, in_host

from glm_deploy.deployment import Deployment as DeploymentApi
from glm_deploy.errors import GlmDeployError

pytestmark = pytest.mark.sandbox

PORT = 8000
ENGINE_PORT = 18000
MODEL = "glm-tiny"


@dataclass
class TlsDeployment:
    container: str
    address: str
    api_key: str
    key_file: Path
    inventory: Path
    artifacts: Path
    output: str
    environment: dict[str, str]
    deploy_s: float

    @property
    def base_url(self) -> str:
        return f"https://{self.address}:{PORT}"


def _tls_inventory(folder: Path) -> Path:
    """The sandbox inventory with `tls: internal` added, as a user would write it: its settings copied, its host
    script linked (the script finds the sandbox's state from where it really lives)."""
    source = REPO_ROOT / "inventories" / "sandbox"
    inventory = folder / "inventory"
    (inventory / "group_vars").mkdir(parents=True)
    (inventory / "sandbox_inventory.py").symlink_to(source / "sandbox_inventory.py")
    settings = (source / "group_vars" / "glm_servers.yml").read_text()
    (inventory / "group_vars" / "glm_servers.yml").write_text(settings + "\nglm_options:\n  tls: internal\n")
    return inventory


@pytest.fixture(scope="module")
def tls_deployment(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsDeployment]:
    # The fleet's key, in a key file of this test's own (the CA goes in tls/ beside it, never the developer's).
    api_key = deployment.api_key
    state = tmp_path_factory.mktemp("tls-controller")
    key_file = state / "secrets" / "api_key"
    key_file.parent.mkdir(mode=0o700)
    key_file.write_text(api_key + "\n")
    key_file.chmod(0o600)
    host = deployment.hosts[0]
    environment = {**deployment.environment, "GLM_API_KEY_FILE": str(key_file)}
    saved = os.environ.get("GLM_API_KEY_FILE")
    try:
        # The tls_cert lookup (inside ansible-playbook) and client-env read it.
        os.environ["GLM_API_KEY_FILE"] = str(key_file)
        inventory = _tls_inventory(state)
        started = time.monotonic()
        handle = DeploymentApi(inventory, state_dir=state, secrets={"glm_api_key": api_key}).start(
            "deploy", limit=host
        )
        artifacts = state / "runner" / "artifacts"
        failure = None
        try:
            handle.wait()
        except GlmDeployError as error:
            failure = error
        deploy_s = time.monotonic() - started
        output = "\n".join(p.read_text(errors="replace") for p in artifacts.rglob("stdout") if p.is_file())
        if failure is not None:
            pytest.fail(f"site.yml with tls internal failed: {failure}\n{output[-6000:]}")
        proxy_s = role_seconds(artifacts, "tls_proxy")
        print(f"deploy with tls internal: {deploy_s:.0f} s, of which tls_proxy {proxy_s:.1f} s")
        address = host_url(host, PORT).removeprefix("http://").rsplit(":", 1)[0]
        yield TlsDeployment(host, address, api_key, key_file, inventory, artifacts, output, environment, deploy_s)
    finally:
        if saved is None:
            os.environ.pop("GLM_API_KEY_FILE", None)
        else:
            os.environ["GLM_API_KEY_FILE"] = saved


def role_seconds(artifacts: Path, role: str) -> float:
    """Seconds the deploy spent in `role`'s tasks, from ansible-runner's events (printed for the record)."""
    started: dict[str, datetime.datetime] = {}
    total = 0.0
    for path in sorted(artifacts.rglob("job_events/*.json")):
        event = json.loads(path.read_text())
        data = event.get("event_data", {})
        if not str(data.get("role", "")).endswith(role):
            continue
        at = datetime.datetime.fromisoformat(event["created"])
        if event["event"] == "runner_on_start":
            started[data["task_uuid"]] = at
        elif (
            event["event"] in ("runner_on_ok", "runner_on_failed", "runner_on_skipped") and data["task_uuid"] in started
        ):
            total += (at - started.pop(data["task_uuid"])).total_seconds()
    return total


def client_env(deployment: TlsDeployment, client: str) -> dict[str, str]:
    """`glm-deploy client-env --for CLIENT --json`, run as a user runs it, with `$(cat FILE)` expanded as their
    shell would."""
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "glm_deploy.cli",
            "client-env",
            "--for",
            client,
            "-i",
            str(deployment.inventory),
            "--json",
        ],
        cwd=REPO_ROOT,
        env=deployment.environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    env: dict[str, str] = json.loads(completed.stdout)["env"]
    return {
        name: Path(value[len("$(cat ") : -1]).read_text().strip() if value.startswith("$(cat ") else value
        for name, value in env.items()
    }


def _status(url: str, *, context: ssl.SSLContext | None, key: str | None = None) -> int:
    request = urllib.request.Request(url)
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_client_env_points_the_clients_at_https_and_the_ca(tls_deployment: TlsDeployment) -> None:
    openai_env = client_env(tls_deployment, "openai")
    claude_env = client_env(tls_deployment, "claude-code")
    assert openai_env["OPENAI_BASE_URL"] == f"{tls_deployment.base_url}/v1"
    assert claude_env["ANTHROPIC_BASE_URL"] == tls_deployment.base_url
    ca = tls_deployment.key_file.parent / "tls" / "ca.crt"
    assert claude_env["NODE_EXTRA_CA_CERTS"] == str(ca)
    assert Path(openai_env["SSL_CERT_FILE"]).read_text().endswith(ca.read_text())
    assert openai_env["OPENAI_API_KEY"] == tls_deployment.api_key  # through $(cat FILE), never printed


def test_the_openai_client_streams_a_chat_through_tls(
    tls_deployment: TlsDeployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    openai = pytest.importorskip("openai")
    for name, value in client_env(tls_deployment, "openai").items():
        monkeypatch.setenv(name, value)
    client = openai.OpenAI(timeout=120)

    def stream_once() -> tuple[list[float], str]:
        arrivals: list[float] = []
        text = ""
        stream = client.chat.completions.create(
            model=os.environ["OPENAI_MODEL"],
            messages=[{"role": "user", "content": "Count to twenty."}],
            max_tokens=48,
            stream=True,
            extra_body={"min_tokens": 32, "chat_template_kwargs": {"enable_thinking": False}},
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append(time.monotonic())
                text += chunk.choices[0].delta.content
        return arrivals, text

    # Unbuffered: the tokens come as they are generated, not in one burst at the end. On a loaded 2-core machine
    # vLLM's API process can be starved while its engine generates, and then sends a whole answer at once (seen in
    # CI: 32 chunks within 4 ms; it may also put several tokens in one chunk), so up to five answers are asked for,
    # a few seconds apart so that a busy spell on the other test worker can pass, and one must arrive in several
    # chunks spread out; a proxy that buffers the stream makes every answer a burst. (One CI run saw three bursts in
    # a row, about 9 ms each, while the other worker was busy.)
    answers: list[tuple[int, float]] = []
    for attempt in range(5):
        if attempt:
            time.sleep(3)
        arrivals, text = stream_once()
        assert arrivals and text, text
        answers.append((len(arrivals), arrivals[-1] - arrivals[0]))
        print(f"openai: {answers[-1][0]} chunks over {answers[-1][1]:.3f} s through TLS")
        if answers[-1][0] >= 8 and answers[-1][1] > 0.05:
            break
    assert any(count >= 8 and spread > 0.05 for count, spread in answers), answers


def test_the_anthropic_client_streams_a_message_through_tls(
    tls_deployment: TlsDeployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    anthropic = pytest.importorskip("anthropic")
    env = client_env(tls_deployment, "claude-code")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    client = anthropic.Anthropic(
        base_url=env["ANTHROPIC_BASE_URL"], auth_token=env["ANTHROPIC_AUTH_TOKEN"], timeout=120
    )
    events: list[str] = []
    with client.messages.stream(
        model=env["ANTHROPIC_MODEL"], max_tokens=32, messages=[{"role": "user", "content": "Say hello."}]
    ) as stream:
        for event in stream:
            events.append(event.type)
        message = stream.get_final_message()
    print(f"anthropic: {len(events)} events, stop {message.stop_reason}")
    # The tiny model ends a /v1/messages answer after a few tokens (vLLM's Anthropic endpoint takes no min_tokens):
    # the event sequence is the stream; the OpenAI test above times the chunks.
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert "content_block_delta" in events
    assert message.content and message.content[0].type == "text" and message.content[0].text


def test_without_the_ca_tls_verification_refuses_the_endpoint(tls_deployment: TlsDeployment) -> None:
    with pytest.raises(urllib.error.URLError) as refused:
        _status(f"{tls_deployment.base_url}/health", context=ssl.create_default_context())
    assert isinstance(refused.value.reason, ssl.SSLCertVerificationError)


def test_without_the_key_the_proxy_passes_the_engines_401(tls_deployment: TlsDeployment) -> None:
    context = ssl.create_default_context(cafile=str(tls_deployment.key_file.parent / "tls" / "ca.crt"))
    models = f"{tls_deployment.base_url}/v1/models"
    assert _status(f"{tls_deployment.base_url}/health", context=context) == 200
    assert _status(models, context=context) == 401
    assert _status(models, context=context, key="wrong-key-0123456789") == 401
    assert _status(models, context=context, key=tls_deployment.api_key) == 200


def test_plain_http_never_reaches_the_engine(tls_deployment: TlsDeployment) -> None:
    # nginx answers plain HTTP on its TLS port with 400 itself: no request reaches the engine.
    try:
        with urllib.request.urlopen(f"http://{tls_deployment.address}:{PORT}/v1/models", timeout=10) as answer:
            pytest.fail(f"plain HTTP answered {answer.status}")
    except urllib.error.HTTPError as error:
        assert error.code == 400
        assert "plain HTTP request was sent to HTTPS port" in error.read().decode(errors="replace")
    # The engine itself listens on loopback only: its port is closed to the network.
    with pytest.raises(OSError), socket.create_connection((tls_deployment.address, ENGINE_PORT), timeout=5):
        pass
    listening = in_host(tls_deployment.container, "ss -Hltn")
    assert f"127.0.0.1:{ENGINE_PORT}" in listening.stdout
    assert f"0.0.0.0:{ENGINE_PORT}" not in listening.stdout and f"*:{ENGINE_PORT}" not in listening.stdout


def test_the_certificate_and_its_key_are_private_to_root(tls_deployment: TlsDeployment) -> None:
    modes = in_host(tls_deployment.container, "stat -c '%n %a %U' /etc/glm-deploy/tls /etc/glm-deploy/tls/*")
    assert modes.returncode == 0, modes.stderr
    assert sorted(modes.stdout.splitlines()) == [
        "/etc/glm-deploy/tls 700 root",
        "/etc/glm-deploy/tls/ca.crt 600 root",
        "/etc/glm-deploy/tls/server.crt 600 root",
        "/etc/glm-deploy/tls/server.key 600 root",
    ]
    controller = tls_deployment.key_file.parent / "tls"
    assert {oct(path.stat().st_mode & 0o777) for path in controller.rglob("*")} == {"0o600", "0o700"}


def test_the_key_is_in_no_unit_command_line_nginx_file_log_or_artifact(tls_deployment: TlsDeployment) -> None:
    key = tls_deployment.api_key
    holders = in_host(
        tls_deployment.container,
        f"grep -rlaF -- {shlex.quote(key)} /etc /run/systemd /var/lib/glm-deploy /var/log /tmp /home /root "
        "2>/dev/null || true",
        timeout=300,
    )
    assert holders.stdout.split() == [f"/etc/glm-deploy/{MODEL}.env"]
    nginx = in_host(tls_deployment.container, "nginx -T 2>&1")
    assert "proxy_buffering off" in nginx.stdout and key not in nginx.stdout
    command_lines = in_host(tls_deployment.container, "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '")
    assert "vllm" in command_lines.stdout and "nginx" in command_lines.stdout
    assert key not in command_lines.stdout
    journal = in_host(tls_deployment.container, "journalctl --no-pager --output=verbose", timeout=300)
    assert journal.returncode == 0 and key not in journal.stdout
    assert "PLAY RECAP" in tls_deployment.output and key not in tls_deployment.output
    leaking = [
        str(path)
        for path in tls_deployment.artifacts.rglob("*")
        if path.is_file() and key in path.read_text(errors="replace")
    ]
    assert leaking == []
    print(f"deploy with tls internal took {tls_deployment.deploy_s:.0f} s")
