"""The environment a coding agent needs to use a deployed endpoint, without ever printing the key.

Claude Code (code.claude.com/docs/en/env-vars, "Environment variables"): `ANTHROPIC_BASE_URL` overrides the
API endpoint and Claude Code appends `/v1/messages` to it (opencode.ai's Claude Code guide says so), so the
base URL carries no `/v1`; `ANTHROPIC_AUTH_TOKEN` is sent as `Authorization: Bearer <value>` (what vLLM's
`--api-key` / `VLLM_API_KEY` checks); `ANTHROPIC_MODEL` picks the model, and `ANTHROPIC_DEFAULT_OPUS_MODEL`,
`ANTHROPIC_DEFAULT_SONNET_MODEL`, `ANTHROPIC_DEFAULT_HAIKU_MODEL` map the aliases Claude Code uses for its own
background work (gateway guides such as help.router-for.me's set all three to the served model).

OpenAI-compatible clients (the OpenAI SDKs and most agents built on them) read `OPENAI_BASE_URL` (with `/v1`)
and `OPENAI_API_KEY`; the model name has no standard variable, `OPENAI_MODEL` is what several agents read.

The key stays in its file: the printed value is `$(cat <file>)`, which the user's shell expands.

Behind TLS (plan option `tls`) the base URLs are https. With `tls: internal` the clients must trust the
controller's CA (glm_deploy.tls): `SSL_CERT_FILE` (read by Python's ssl defaults and by httpx, under the OpenAI
and Anthropic Python SDKs), `REQUESTS_CA_BUNDLE` (requests) and `NODE_EXTRA_CA_CERTS` (Node, so Claude Code).
The first two replace the trusted set rather than add to it, so they name a bundle of the system's CAs plus this
CA (`ca_bundle`); Node's variable adds, so it names the CA alone.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glm_deploy.errors import InputError
from glm_deploy.validation import check_host, check_one_line, clip

CLIENTS = ("claude-code", "openai")


@dataclass(frozen=True)
class ClientEnvironment:
    """Variables for one client. `env` values may contain `$(cat FILE)`: print them unquoted for a shell to
    expand, never with the key filled in."""

    client: str
    base_url: str
    model: str
    key_file: str | None
    env: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "base_url": self.base_url,
            "model": self.model,
            "key_file": self.key_file,
            "env": dict(self.env),
            "notes": list(self.notes),
        }

    def shell(self) -> str:
        """`export NAME=value` lines a POSIX shell can `eval`."""
        lines = [f"# {note}" for note in self.notes]
        for name, value in self.env.items():
            if value.startswith("$(cat "):
                # Double quotes: the shell runs the substitution, and a path with spaces stays one word.
                path = value[len("$(cat ") : -1]
                lines.append(f'export {name}="$(cat {shlex.quote(path)})"')
            else:
                lines.append(f"export {name}={shlex.quote(value)}")
        return "\n".join(lines)


def _key_value(key_file: Path | None) -> str:
    return f"$(cat {key_file})" if key_file is not None else "no-key"


def client_environment(
    client: str,
    *,
    address: str,
    port: int,
    served_model_name: str,
    key_file: Path | None,
    scheme: str = "http",
    ca_file: Path | None = None,
    ca_bundle: Path | None = None,
) -> ClientEnvironment:
    """The environment for `client` to reach the endpoint at `address:port` serving `served_model_name`.
    `key_file` is where the API key is on this machine (None when the endpoint takes no key)."""
    if client not in CLIENTS:
        raise InputError(f"unknown client {clip(client)}", hint=f"one of: {', '.join(CLIENTS)}")
    # The address goes into a URL and the key file into `export` and comment lines a shell evals: a newline in
    # either would start a command of its own.
    check_host("--host", address[1:-1] if address.startswith("[") and address.endswith("]") else address)
    if key_file is not None:
        check_one_line("the API key file", str(key_file))
    if scheme not in ("http", "https"):
        raise InputError(f"scheme {clip(scheme)} is not http or https")
    for label, path in (("the CA file", ca_file), ("the CA bundle", ca_bundle)):
        if path is not None:
            check_one_line(label, str(path))
    host = f"[{address}]" if ":" in address and not address.startswith("[") else address
    root = f"{scheme}://{host}:{port}"
    notes: list[str] = []
    if key_file is not None:
        notes.append(f"the API key is read from {key_file} (mode 0600); it is not printed here")
        if not key_file.is_file():
            notes.append(
                f"{key_file} does not exist on this machine yet: `glm-deploy deploy` creates it, or write "
                "the endpoint's key there (chmod 600)"
            )
    else:
        notes.append("this endpoint takes no API key (api_key_required: false)")
    trust: dict[str, str] = {}
    if ca_file is not None:
        notes.append(f"TLS: the endpoint's certificate is signed by the CA in {ca_file} (the controller's own)")
        bundle = ca_bundle or ca_file
        trust = {"SSL_CERT_FILE": str(bundle), "REQUESTS_CA_BUNDLE": str(bundle), "NODE_EXTRA_CA_CERTS": str(ca_file)}
    key = _key_value(key_file)
    if client == "claude-code":
        env = {
            "ANTHROPIC_BASE_URL": root,
            "ANTHROPIC_AUTH_TOKEN": key,
            "ANTHROPIC_MODEL": served_model_name,
            "ANTHROPIC_DEFAULT_OPUS_MODEL": served_model_name,
            "ANTHROPIC_DEFAULT_SONNET_MODEL": served_model_name,
            "ANTHROPIC_DEFAULT_HAIKU_MODEL": served_model_name,
            **trust,
        }
        notes.append("Claude Code calls POST /v1/messages on ANTHROPIC_BASE_URL (the engine must serve it)")
        return ClientEnvironment(
            client, root, served_model_name, str(key_file) if key_file else None, env, notes
        )
    env = {
        "OPENAI_BASE_URL": f"{root}/v1",
        "OPENAI_API_KEY": key,
        "OPENAI_MODEL": served_model_name,
        **trust,
    }
    return ClientEnvironment(
        client, f"{root}/v1", served_model_name, str(key_file) if key_file else None, env, notes
    )
