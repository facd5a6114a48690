"""The generation watchdog run as systemd runs it, against an engine that hangs while /health says 200.

The real script (collection/roles/server/files/generation_watchdog.py) runs as a process with a stand-in `systemctl`
first on PATH; the engine is tests/equipment/hanging_engine.py. The timer and service templates are rendered from
real plans and read back with systemd's quoting rules.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from ansible.plugins.filter.core import FilterModule as AnsibleCoreFilters
from ansible.plugins.test.core import TestModule as AnsibleCoreTests
from tests.deploy.test_systemd_quoting import _systemd_split
from tests.equipment.hanging_engine import HangingEngine
from tests.equipment.load import load_file, load_plugin

from glm_deploy.catalog import load_catalog
from glm_deploy.render import render_plan

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "collection" / "roles" / "server"
SCRIPT = ROLE / "files" / "generation_watchdog.py"
EQUIPMENT = REPO / "tests" / "equipment" / "hanging_engine.py"
UNIT = "glm-glm-tiny.service"
API_KEY = "watchdog-test-key-3f9a1c7e5b"  # distinctive, so any leak is found by a plain search
# Probes of a hanging engine wait --timeout 0.5 s (the Host default); probes expected to be answered get room for a
# busy test machine, so that a slow answer never reads as a hang.
ANSWER_TIMEOUT = 10
# Seconds one probe may spend starting its Python processes on a busy test machine, beyond its configured waits.
PROCESS_SLACK = 5


watchdog = load_file("generation_watchdog", SCRIPT)
systemd_filters = load_plugin(
    "glm_systemd_filters_for_watchdog", REPO / "collection" / "plugins" / "filter" / "systemd.py"
)


class Host:
    """A host as the watchdog sees it: its state folder, the engine's key file, `systemctl` on PATH."""

    def __init__(self, tmp_path: Path, engine: HangingEngine) -> None:
        self.tmp = tmp_path
        self.engine = engine
        self.state = tmp_path / "engine"
        self.run_dir = tmp_path / "run"
        self.pause = tmp_path / "redeploy.lock"
        self.key_file = tmp_path / "glm-tiny.env"
        self.key_file.write_text(f"# Written by glm-deploy\nVLLM_API_KEY={API_KEY}\n")
        self.key_file.chmod(0o600)
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        systemctl = bin_dir / "systemctl"
        systemctl.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{EQUIPMENT}" systemctl "$@"\n')
        systemctl.chmod(systemctl.stat().st_mode | stat.S_IXUSR)
        self.env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HANGING_ENGINE_STATE": str(self.state)}
        self.outputs: list[str] = []
        self.argvs: list[list[str]] = []

    def argv(self, **overrides: Any) -> list[str]:
        options = {
            "unit": UNIT,
            "url": self.engine.url,
            "model": "glm-tiny",
            "api-key-file": str(self.key_file),
            "api-key-name": "VLLM_API_KEY",
            "timeout": "0.5",
            "health-timeout": "0.5",
            "failures": "3",
            "cooldown": "60",
            "start-grace": "0",
            "state-dir": str(self.run_dir),
            "pause-file": str(self.pause),
        }
        options.update({key.replace("_", "-"): str(value) for key, value in overrides.items()})
        argv = [sys.executable, str(SCRIPT)]
        for key, value in options.items():
            if value != "None":
                argv += [f"--{key}", value]
        return argv

    def probe(self, **overrides: Any) -> tuple[int, str]:
        argv = self.argv(**overrides)
        self.argvs.append(argv)
        result = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=30, check=False)
        output = result.stdout + result.stderr
        self.outputs.append(output)
        return result.returncode, output

    def calls(self) -> list[dict[str, Any]]:
        return self.engine.behaviour.calls()

    def restarts(self) -> list[dict[str, Any]]:
        return [call for call in self.calls() if call.get("argv", [None, None])[1] == "restart"]

    def generations(self) -> list[dict[str, Any]]:
        return [call for call in self.calls() if call.get("path") == "/v1/chat/completions"]


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    with HangingEngine(tmp_path / "engine", API_KEY) as engine:
        yield Host(tmp_path, engine)


@pytest.mark.playbook


def test_a_healthy_engine_answers_and_is_never_restarted(host: Host) -> None:
    for _ in range(4):
        rc, output = host.probe(timeout=ANSWER_TIMEOUT)
        assert rc == 0, output
        assert "one-token generation answered" in output

    assert host.restarts() == []
    request = host.generations()[0]
    assert request["authorized"] is True
    assert request["request"]["max_tokens"] == 1
    assert request["request"]["temperature"] == 0
    assert request["request"]["model"] == "glm-tiny"


@pytest.mark.playbook


def test_a_hung_engine_is_restarted_after_the_configured_number_of_hung_probes(host: Host) -> None:
    host.engine.behaviour.write(generate="hang")

    started = time.monotonic()
    assert host.probe()[0] == 1
    rc, output = host.probe()
    assert rc == 1
    assert "generation hung (no answer within 0.5 s) while /health answers 200: 2 of 3 in a row" in output
    assert host.restarts() == []
    rc, output = host.probe()
    elapsed = time.monotonic() - started

    assert rc == 2, output
    assert f"3 times in a row while /health answers 200: restarting {UNIT}" in output
    assert [call["argv"] for call in host.restarts()] == [["systemctl", "restart", UNIT]]
    # Three probes of at most --timeout (0.5 s) and --health-timeout (0.5 s) each; the slack is process start-up
    # (the script and the stand-in systemctl are Python processes) on a loaded test machine.
    assert elapsed < 3 * (0.5 + 0.5 + PROCESS_SLACK)
    # The restart cured the stand-in: the next probe answers, and the count starts again.
    rc, output = host.probe(timeout=ANSWER_TIMEOUT)
    assert rc == 0, output


@pytest.mark.playbook


def test_a_hang_is_restarted_within_the_configured_time_when_probed_like_the_timer(host: Host) -> None:
    interval, timeout, failures = 0.3, 0.5, 3
    host.engine.behaviour.write(generate="hang")
    hang_began = time.monotonic()
    for _ in range(failures + 2):
        rc, _ = host.probe(timeout=timeout, failures=failures)
        if rc == 2:
            break
        time.sleep(interval)  # the timer's OnUnitInactiveSec: the next probe starts `interval` after this one ended

    restarts = host.restarts()
    assert len(restarts) == 1
    # What the timer template promises: about failures x (interval + timeout); the slack is this machine's
    # process starts (two Python interpreters per probe) and the /health checks.
    assert restarts[0]["t"] - hang_began < failures * (interval + timeout + PROCESS_SLACK)


@pytest.mark.playbook


def test_hung_probes_are_not_counted_while_health_fails(host: Host) -> None:
    host.engine.behaviour.write(generate="hang", health=503)

    for _ in range(3):
        rc, output = host.probe(failures=2)
        assert rc == 0, output
        assert "/health answers 503: the engine is not serving" in output
        assert "not counted" in output

    assert host.restarts() == []


@pytest.mark.playbook


def test_an_engine_within_its_start_grace_is_not_judged_nor_probed(host: Host) -> None:
    host.engine.behaviour.write(generate="hang")

    for _ in range(4):
        rc, output = host.probe(start_grace=600, failures=1)
        assert rc == 0
        assert "within the start grace of 600 s: not judged yet" in output

    assert host.generations() == []
    assert host.restarts() == []


@pytest.mark.playbook


def test_a_unit_that_is_not_active_is_not_probed(host: Host) -> None:
    host.engine.behaviour.write(generate="hang", active="activating")

    rc, output = host.probe(failures=1)

    assert rc == 0
    assert "the unit is activating: nothing to probe" in output
    assert host.generations() == []


@pytest.mark.playbook


def test_a_new_start_of_the_unit_forgets_the_hung_probes_before_it(host: Host) -> None:
    host.engine.behaviour.write(generate="hang")
    assert host.probe()[0] == 1
    assert host.probe()[0] == 1
    # Someone (a deploy, systemd's Restart=) started the unit again; it still hangs.
    host.engine.behaviour.write(entered_us=int(time.monotonic() * 1e6))

    rc, output = host.probe()

    assert rc == 1
    assert "1 of 3 in a row" in output


@pytest.mark.playbook


def test_an_answer_resets_the_count_of_hung_probes(host: Host) -> None:
    host.engine.behaviour.write(generate="hang")
    assert host.probe()[0] == 1
    assert host.probe()[0] == 1
    host.engine.behaviour.write(generate="answer")
    assert host.probe(timeout=ANSWER_TIMEOUT)[0] == 0
    host.engine.behaviour.write(generate="hang")

    rc, output = host.probe()

    assert rc == 1
    assert "1 of 3 in a row" in output


@pytest.mark.playbook


def test_server_errors_while_health_says_200_count_as_hung(host: Host) -> None:
    host.engine.behaviour.write(generate="error")

    rc, output = host.probe(failures=1)

    assert rc == 2
    assert "generation hung (HTTP 500)" in output


@pytest.mark.playbook


def test_the_cool_down_allows_one_restart_per_period(host: Host) -> None:
    host.engine.behaviour.write(generate="hang", restart_fixes=False)

    assert host.probe(failures=1, cooldown=600)[0] == 2
    rc, output = host.probe(failures=1, cooldown=600)
    assert rc == 3, output
    assert "restarted the unit" in output and "(cool-down 600 s): not restarted" in output
    assert len(host.restarts()) == 1

    # The same host with a short cool-down, once it has passed: the next hang is restarted again.
    time.sleep(1.1)
    rc, output = host.probe(failures=1, cooldown=1)
    assert rc == 2, output
    assert len(host.restarts()) == 2


@pytest.mark.playbook


def test_a_redeploy_lock_pauses_the_watchdog(host: Host) -> None:
    host.engine.behaviour.write(generate="hang")
    host.pause.write_text('{"run": "redeploy"}')

    rc, output = host.probe(failures=1)

    assert rc == 0
    assert f"paused: {host.pause} exists" in output
    assert host.calls() == []


@pytest.mark.playbook


def test_a_refused_key_is_reported_not_restarted(host: Host) -> None:
    host.key_file.write_text("VLLM_API_KEY=not-the-endpoint-key\n")

    rc, output = host.probe(failures=1, timeout=ANSWER_TIMEOUT)

    assert rc == 4
    assert "HTTP 401" in output and "key refused" in output
    assert "not-the-endpoint-key" not in output
    assert host.restarts() == []


@pytest.mark.playbook


def test_the_key_is_read_from_sglangs_yaml_config_too(host: Host) -> None:
    config = host.tmp / "glm-tiny.sglang.yaml"
    config.write_text(f'model-path: /models/glm\napi-key: "{API_KEY}"\nport: 30000\n')

    rc, output = host.probe(api_key_file=config, api_key_name="api-key", timeout=ANSWER_TIMEOUT)

    assert rc == 0, output
    assert host.generations()[0]["authorized"] is True


@pytest.mark.parametrize(
    ("content", "expected"),
    [(None, "cannot read the API key file"), ("HF_TOKEN=hf_x\n", "has no VLLM_API_KEY=... (or VLLM_API_KEY: ...)")],
)
@pytest.mark.playbook
def test_an_unusable_key_file_is_named_and_nothing_is_probed(host: Host, content: str | None, expected: str) -> None:
    if content is None:
        host.key_file.unlink()
    else:
        host.key_file.write_text(content)

    rc, output = host.probe(failures=1)

    assert rc == 4
    assert expected in output and str(host.key_file) in output
    assert host.generations() == []


@pytest.mark.playbook


def test_the_api_key_never_reaches_a_command_line_the_output_or_the_state(host: Host) -> None:
    host.engine.behaviour.write(generate="hang")
    for _ in range(3):
        host.probe(failures=2, cooldown=0)
    host.engine.behaviour.write(generate="answer")
    host.probe(timeout=ANSWER_TIMEOUT)

    assert len(host.restarts()) >= 1
    assert all(API_KEY not in " ".join(argv) for argv in host.argvs)
    assert all(API_KEY not in output for output in host.outputs)
    assert all(API_KEY not in " ".join(call.get("argv", [])) for call in host.calls())
    for path in host.run_dir.iterdir():
        assert API_KEY not in path.read_text()


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [("failures", "0", "--failures 0 must be at least 1"), ("timeout", "0", "--timeout 0.0 must be a positive")],
)
@pytest.mark.playbook
def test_settings_that_cannot_work_are_refused(host: Host, option: str, value: str, expected: str) -> None:
    rc, output = host.probe(**{option: value})

    assert rc == 2  # argparse's usage error
    assert expected in output
    assert host.calls() == []


# -- the timer and service templates -------------------------------------------------------------------------------

CATALOG = load_catalog()
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())


def render(template: str, plan: dict[str, Any], **extra: Any) -> str:
    env = jinja2.Environment(  # noqa: S701 - a unit file, not HTML, as Ansible's template module renders it
        loader=jinja2.FileSystemLoader(ROLE / "templates"),
        trim_blocks=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters.update({k: f for k, f in AnsibleCoreFilters().filters().items() if k not in env.filters})
    env.tests.update({k: t for k, t in AnsibleCoreTests().tests().items() if k not in env.tests})
    env.filters.update({f"glm.deploy.{k}": f for k, f in systemd_filters.FilterModule().filters().items()})
    variables = {
        **{k: v for k, v in DEFAULTS.items() if k.startswith("server_watchdog_")},
        "ansible_managed": "Ansible managed: do not edit",
        "server_plan": plan,
        "server_unit_name": plan["unit_name"],
        "server_health_host": DEFAULTS["server_health_host"],
        "server_state_root": DEFAULTS["server_state_root"],
        "_server_env_file": f"/etc/glm-deploy/{plan['served_model_name']}.env",
        **extra,
    }
    return env.get_template(template).render(**variables)


def plan_of(model: str, engine: str, hardware: str) -> dict[str, Any]:
    return dataclasses.asdict(render_plan(CATALOG, model=model, engine=engine, hardware=hardware))


def unit_lines(text: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            values.setdefault(key, []).append(value)
    return values


def test_the_service_runs_the_script_with_the_key_file_never_the_key() -> None:
    plan = plan_of("glm-tiny", "vllm-cpu", "cpu")
    text = render("glm-watchdog.service.j2", plan, server_api_key=API_KEY)

    assert text.startswith("#\n# Ansible managed: do not edit\n#\n")
    assert API_KEY not in text
    values = unit_lines(text)
    assert values["Type"] == ["oneshot"]
    argv = _systemd_split(values["ExecStart"][0])
    assert argv[:2] == ["/usr/bin/python3", DEFAULTS["server_watchdog_script"]]
    options = watchdog.arguments(argv[2:])  # the script accepts exactly what the unit passes
    assert options.unit == plan["unit_name"]
    assert options.url == f"http://127.0.0.1:{plan['port']}"
    assert options.model == "glm-tiny"
    assert (options.api_key_file, options.api_key_name) == ("/etc/glm-deploy/glm-tiny.env", "VLLM_API_KEY")
    assert options.timeout == DEFAULTS["server_watchdog_timeout_s"]
    assert options.failures == DEFAULTS["server_watchdog_failures"]
    assert options.cooldown == DEFAULTS["server_watchdog_cooldown_s"]
    assert options.start_grace == DEFAULTS["server_watchdog_start_grace_s"]
    assert options.pause_file == ["/var/lib/glm-deploy/redeploy.lock"]
    assert values["RuntimeDirectory"] == ["glm-deploy"] and values["RuntimeDirectoryPreserve"] == ["yes"]
    assert int(values["TimeoutStartSec"][0]) > options.timeout


def test_the_service_reads_sglangs_key_from_its_config_file() -> None:
    plan = plan_of("glm-5.1-fp8", "sglang", "b200")
    argv = _systemd_split(unit_lines(render("glm-watchdog.service.j2", plan))["ExecStart"][0])
    options = watchdog.arguments(argv[2:])

    assert (options.api_key_file, options.api_key_name) == ("/etc/glm-deploy/glm-5.1-fp8.sglang.yaml", "api-key")


def test_the_service_quotes_odd_words_for_systemd() -> None:
    plan = plan_of("glm-tiny", "vllm-cpu", "cpu")
    odd = "/opt/glm deploy/100%/$watchdog.py"
    argv = _systemd_split(
        unit_lines(render("glm-watchdog.service.j2", plan, server_watchdog_script=odd))["ExecStart"][0]
    )

    assert argv[1] == odd


def test_the_timer_probes_every_interval_after_the_last_probe_ended() -> None:
    plan = plan_of("glm-tiny", "vllm-cpu", "cpu")
    text = render("glm-watchdog.timer.j2", plan, server_watchdog_interval_s=45)

    assert text.startswith("#\n# Ansible managed: do not edit\n#\n")
    values = unit_lines(text)
    assert values["OnActiveSec"] == ["45"]
    assert values["OnUnitInactiveSec"] == ["45"]
    assert values["WantedBy"] == ["timers.target"]


def test_every_watchdog_default_has_an_argument_spec_with_a_description() -> None:
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    names = [name for name in DEFAULTS if name.startswith("server_watchdog_")]

    assert len(names) == 7
    for name in names:
        assert specs[name]["type"] and specs[name]["description"], name
    assert {name for name in specs if name.startswith("server_watchdog_")} == set(names)


@pytest.mark.playbook


def test_the_installed_script_is_plain_stdlib_python() -> None:
    # It runs on the host with the system python3: nothing from the controller's venv.
    result = subprocess.run(
        [sys.executable, "-I", "-S", str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "--api-key-file" in result.stdout
