"""Every value that reaches a unit, a timer, an env file or a command line is checked where it comes in, and the
refusal is one short line that names the input."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from glm_deploy.catalog import load_catalog
from glm_deploy.client_env import client_environment
from glm_deploy.errors import InputError
from glm_deploy.render import PlanOptions, render_plan
from glm_deploy.run_arguments import SERIAL_PATTERN
from glm_deploy.schedule import load_policy
from glm_deploy.validation import clip, revision_problem, secret_flag

CATALOG = load_catalog()
PAIR = {"model": "glm-5.1-fp8", "engine": "sglang", "hardware": "b200"}
MAX_LINE = 300

# Characters systemd or a shell reads as the end of a line, or that no unit should hold.
CONTROL = {
    "CR": "\r",
    "LF": "\n",
    "CRLF": "\r\n",
    "NUL": "\0",
    "VT": "\v",
    "FF": "\f",
    "ESC": "\x1b",
    "DEL": "\x7f",
    "NEL U+0085": "\u0085",
    "LS U+2028": "\u2028",
    "PS U+2029": "\u2029",
    "TAB": "\t",
}
# A good value for every text option: each test spoils one of them.
GOOD_TEXT = {
    "host": "0.0.0.0",
    "served_name": "glm5",
    "kv_cache_dtype": "fp8_e4m3",
    "engine_version": "0.5.10",
    "image": "lmsysorg/sglang:v0.5.10-cu130",
    "revision": "main",
    "head_address": "10.0.0.2",
    "network_interface": "eth1",
    "hf_home": "/var/lib/glm-deploy/hf",
    "cache_root": "/var/lib/glm-deploy/cache",
    "runtime": "container",
    "cuda_version": "12.8",
    "tls": "off",
    "tls_domain": "glm.example.com",
}


def _text_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(PlanOptions) if "str" in str(f.type) and f.name != "extra_args"]


def test_every_text_option_has_a_good_value_here() -> None:
    # The parametrized tests below cover every option: one added to PlanOptions must be added here too.
    assert sorted(GOOD_TEXT) == sorted(_text_fields())


def _refusal(**options: Any) -> InputError:
    with pytest.raises(InputError) as caught:
        render_plan(CATALOG, **PAIR, options=PlanOptions.from_mapping(options))
    return caught.value


def _assert_short_and_named(error: InputError, field: str) -> None:
    text = str(error)
    assert field in error.message, text
    assert all(len(line) < MAX_LINE for line in text.splitlines()), text
    # The error is one line plus its hint: a control character in the value is shown escaped, never raw.
    assert len(text.splitlines()) <= 2, text


@pytest.mark.parametrize("character", list(CONTROL.values()), ids=list(CONTROL))
@pytest.mark.parametrize("field", sorted(GOOD_TEXT))
@pytest.mark.parametrize("where", ["inside", "trailing"])
def test_a_control_character_in_any_text_option_is_refused(field: str, character: str, where: str) -> None:
    good = GOOD_TEXT[field]
    value = good[:2] + character + good[2:] if where == "inside" else good + character
    error = _refusal(**{field: value})
    _assert_short_and_named(error, field)


@pytest.mark.parametrize("character", list(CONTROL.values()), ids=list(CONTROL))
def test_a_control_character_in_an_extra_argument_is_refused(character: str) -> None:
    error = _refusal(extra_args=["--enable-metrics", f"--log-level=info{character}ExecStartPre=/bin/evil"])
    _assert_short_and_named(error, "extra_args")


@pytest.mark.parametrize("field", [*sorted(GOOD_TEXT), "extra_args"])
def test_a_huge_value_gives_a_short_error(field: str) -> None:
    huge = "a" * 10_000 if field != "extra_args" else ["--" + "a" * 10_000]
    with pytest.raises(InputError) as caught:
        options = PlanOptions.from_mapping({field: huge})
        render_plan(CATALOG, **PAIR, options=options)
    text = str(caught.value)
    assert "10000 chars" in text or "10002 chars" in text, text
    assert all(len(line) < MAX_LINE for line in text.splitlines()), text


def test_a_huge_unknown_option_name_or_model_gives_a_short_error() -> None:
    with pytest.raises(InputError) as caught:
        PlanOptions.from_mapping({"x" * 10_000: 1})
    assert len(caught.value.message) < MAX_LINE
    with pytest.raises(InputError) as caught:
        render_plan(CATALOG, model="m" * 10_000, engine="sglang", hardware="b200")
    assert len(caught.value.message) < MAX_LINE


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("served_name", "glm5\n"),
        ("revision", "main\n"),
        ("cuda_version", "12.8\n"),
        ("kv_cache_dtype", "fp8\n"),
        ("network_interface", "eth1\n"),
        ("engine_version", "0.5.10\n"),
        ("engine_version", " 0.5.10"),
        ("host", "0.0.0.0\n"),
    ],
)
def test_a_trailing_newline_is_refused(field: str, value: str) -> None:
    _assert_short_and_named(_refusal(**{field: value}), field)


GOOD_REVISIONS = [
    *("main", "v1.0", "refs/pr/1", "refs/convert/parquet", "release/2025-01", "a" * 40, "0123abc", "v1.0-rc1"),
]
BAD_REVISIONS = [
    "main..dev",
    "v1~1",
    "main^",
    "HEAD@{1}",
    "a:b",
    "what?",
    "glob*",
    "[x]",
    "back\\slash",
    "--trust-remote-code",
    "-x",
    "main.lock",
    "refs/heads/x.lock",
    "dir/",
    "/dir",
    "a//b",
    "ends.",
    ".hidden",
    "a/.b",
    "@",
    "two words",
    "",
    "x" * 256,
]


@pytest.mark.parametrize("revision", GOOD_REVISIONS)
def test_hub_revisions_are_accepted(revision: str) -> None:
    plan = render_plan(CATALOG, **PAIR, options=PlanOptions(revision=revision))
    assert plan.model_revision == revision


@pytest.mark.parametrize("revision", [r for r in BAD_REVISIONS if r])
def test_what_git_and_the_hub_refuse_as_a_revision_is_refused(revision: str) -> None:
    _assert_short_and_named(_refusal(revision=revision), "revision")


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
@pytest.mark.parametrize("revision", [*GOOD_REVISIONS, *BAD_REVISIONS])
@pytest.mark.playbook
def test_revision_check_agrees_with_git_check_ref_format(revision: str) -> None:
    """git decides what a branch or tag name is; glm-deploy refuses at least what git refuses (and, beyond it, a
    leading '-' and names over 255 characters)."""
    git = subprocess.run(
        ["git", "check-ref-format", "--allow-onelevel", revision], capture_output=True, timeout=30, check=False
    )
    ours_accepts = revision_problem(revision) is None
    if git.returncode != 0:
        assert not ours_accepts, f"git refuses {revision!r}, glm-deploy accepts it"
    elif ours_accepts is False:
        assert revision.startswith("-") or len(revision) > 255, revision


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "127.0.0.1", "fe80::1", "node-1.example.internal", "localhost"])
def test_listen_addresses_are_accepted(host: str) -> None:
    assert render_plan(CATALOG, **PAIR, options=PlanOptions(host=host)).host == host


@pytest.mark.parametrize(
    "host", ["0.0.0.0 --trust-remote-code", "-h", "a_b.example", "exa mple", "999.1.1.1.1", "x" * 300, "a..b", ""]
)
def test_host_must_be_an_address_or_host_name(host: str) -> None:
    _assert_short_and_named(_refusal(host=host), "host")


@pytest.mark.parametrize("address", ["10.0.0.1 ; rm -rf /", "--x", "a b"])
def test_head_address_must_be_an_address_or_host_name(address: str) -> None:
    _assert_short_and_named(_refusal(head_address=address), "head_address")


@pytest.mark.parametrize(
    "argument",
    [
        "--api-key",
        "--api_key",
        "--api-key=sk-123",
        "--api_key=sk-123",
        "--API-KEY=sk-123",
        "--api-k=sk-123",
        "--admin-api-key=x",
        "--admin_api_key",
        "--hf-token=hf_x",
        "--hf_token",
        "--config",
        "--config=/tmp/secrets.yaml",
    ],
)
def test_a_secret_flag_in_any_spelling_is_refused(argument: str) -> None:
    error = _refusal(extra_args=[argument, "value"])
    assert "secrets never go on a command line" in error.message


@pytest.mark.parametrize("argument", ["--api-server-count", "--enable-metrics", "--hf-overrides={}", "--log-level"])
def test_flags_that_only_look_alike_are_not_secret(argument: str) -> None:
    assert secret_flag(argument) is None


def test_clip_keeps_short_values_and_cuts_long_ones() -> None:
    assert clip("glm5") == "'glm5'"
    assert clip("x\ny") == "'x\\ny'"
    long = clip("z" * 10_000)
    assert long.endswith("…(10000 chars)") and len(long) < 80


@pytest.mark.parametrize("serial", ["1\n", "25%\n", "0", "101%", "1 2"])
def test_serial_pattern_refuses_what_is_not_a_count_or_share(serial: str) -> None:
    assert SERIAL_PATTERN.fullmatch(serial) is None


@pytest.mark.parametrize("address", ["10.0.0.1\nexport EVIL=1", "a b", "$(reboot)"])
def test_client_env_refuses_an_address_that_is_not_one(address: str) -> None:
    with pytest.raises(InputError) as caught:
        client_environment("openai", address=address, port=8000, served_model_name="glm5", key_file=None)
    _assert_short_and_named(caught.value, "--host")


# -- schedule policies: every field that reaches the service or the timer

BASE_POLICY = {"name": "nightly", "inventory": "inventory", "on_calendar": "daily"}


def _policy_refusal(tmp_path: Path, **fields: Any) -> InputError:
    (tmp_path / "inventory").mkdir(exist_ok=True)
    policy = tmp_path / "policy.yml"
    policy.write_text(yaml.safe_dump({**BASE_POLICY, **fields}), encoding="utf-8")
    with pytest.raises(InputError) as caught:
        load_policy(policy, project_dir=tmp_path)
    return caught.value


POLICY_FIELDS = {
    "name": "nightly",
    "on_calendar": "Mon..Fri 03:00",
    "randomized_delay": "5m",
    "environment_file": "/etc/glm-deploy/schedule.env",
    "state_dir": "/var/lib/glm-deploy-controller",
    "user": "deploy",
    "serial": "1",
    "inventory": "inventory",
}


@pytest.mark.parametrize("character", ["\r", "\n", "\0", "\x1b", "\u2028"], ids=["CR", "LF", "NUL", "ESC", "LS"])
@pytest.mark.parametrize("field", sorted(POLICY_FIELDS))
def test_a_control_character_in_any_policy_field_is_refused(tmp_path: Path, field: str, character: str) -> None:
    value = POLICY_FIELDS[field] + character + "ExecStartPre=/bin/evil"
    error = _policy_refusal(tmp_path, **{field: value})
    text = str(error)
    assert field in error.message and all(len(line) < MAX_LINE + len(str(tmp_path)) for line in text.splitlines())


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("revision", "main\rExecStartPre=/bin/evil"),
        ("revision", "--trust-remote-code"),
        ("revision", "main..dev"),
        ("engine_version", "0.19.1\n"),
        ("image", "vllm/vllm-openai:latest --privileged"),
    ],
)
def test_what_a_policy_follows_is_checked_like_a_redeploy_option(tmp_path: Path, key: str, value: str) -> None:
    error = _policy_refusal(tmp_path, follow={key: value})
    assert f"follow.{key}" in error.message


def test_a_huge_policy_name_gives_a_short_error(tmp_path: Path) -> None:
    error = _policy_refusal(tmp_path, name="n" * 10_000)
    assert "10000 chars" in error.message and len(error.message) < MAX_LINE + len(str(tmp_path))
