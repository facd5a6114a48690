"""The nginx site glm.deploy.tls_proxy writes, rendered here from the role's own template, defaults and vars with
Ansible's filters: TLS on the plan's port, the engine on loopback, streaming unbuffered, request limits, the
Authorization header untouched; and, for ACME, the port-80 challenge server and the certbot command. (nginx -t on
it runs on the fleet's first host, tests/tls/test_tls_sandbox.py; no public ACME CA is reachable from here.)"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from ansible.plugins.filter.core import FilterModule as AnsibleCoreFilters
from ansible.plugins.test.core import TestModule as AnsibleCoreTests
from jinja2.nativetypes import NativeEnvironment

from glm_deploy.catalog import load_catalog
from glm_deploy.render import PlanOptions, render_plan

ROLE = Path(__file__).resolve().parents[2] / "collection" / "roles" / "tls_proxy"
CATALOG = load_catalog()
DEFAULTS: dict[str, Any] = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
VARS: dict[str, Any] = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())


def _environment(kind: type[jinja2.Environment]) -> jinja2.Environment:
    env = kind(
        loader=jinja2.FileSystemLoader(ROLE / "templates"),
        trim_blocks=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters.update({k: f for k, f in AnsibleCoreFilters().filters().items() if k not in env.filters})
    env.tests.update({k: t for k, t in AnsibleCoreTests().tests().items() if k not in env.tests})
    return env


def _variables(plan: dict[str, Any], **host: Any) -> dict[str, Any]:
    """The role's defaults and vars, resolved in order the way Ansible would for this host."""
    context: dict[str, Any] = {
        "inventory_hostname": "gpu-node-1",
        "ansible_host": "192.0.2.10",
        "ansible_managed": "Ansible managed: do not edit",
        "_tls_proxy_ipv6": True,
        **host,
    }
    native = _environment(NativeEnvironment)
    for name, value in {**DEFAULTS, **VARS}.items():
        if name == "tls_proxy_plan":
            context[name] = plan
        elif name in host:
            continue
        elif isinstance(value, str) and "{{" in value:
            context[name] = native.from_string(value).render(**context)
        else:
            context[name] = value
    return context


def _plan(**options: Any) -> dict[str, Any]:
    plan = render_plan(CATALOG, model="glm-tiny", engine="vllm-cpu", hardware="cpu", options=PlanOptions(**options))
    return dataclasses.asdict(plan)


def render_site(plan: dict[str, Any], **host: Any) -> str:
    return _environment(jinja2.Environment).get_template("glm-deploy-nginx.conf.j2").render(**_variables(plan, **host))


def _directives(text: str) -> list[str]:
    return [line.strip().rstrip(";") for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_tls_on_the_public_port_proxies_to_the_engine_on_loopback() -> None:
    site = _directives(render_site(_plan(tls="internal")))
    assert "listen 8000 ssl" in site
    assert "listen [::]:8000 ssl" in site
    assert "server 127.0.0.1:18000" in site
    assert "proxy_pass http://glm_deploy_engine" in site
    assert "ssl_certificate /etc/glm-deploy/tls/server.crt" in site
    assert "ssl_certificate_key /etc/glm-deploy/tls/server.key" in site
    assert "ssl_protocols TLSv1.2 TLSv1.3" in site
    # Nothing listens in plain HTTP: no port-80 server without ACME.
    assert not any(re.fullmatch(r"listen (\[::\]:)?80", line) for line in site)


def test_streaming_passes_unbuffered() -> None:
    site = _directives(render_site(_plan(tls="internal")))
    for directive in (
        "proxy_buffering off",
        "proxy_cache off",
        "proxy_request_buffering off",
        "proxy_http_version 1.1",
        'proxy_set_header Connection ""',
        "chunked_transfer_encoding on",
        "proxy_read_timeout 3600s",
    ):
        assert directive in site, directive


def test_request_limits_are_set_and_follow_the_variables() -> None:
    site = _directives(render_site(_plan(tls="internal")))
    assert "client_max_body_size 64m" in site
    assert "large_client_header_buffers 4 16k" in site
    tuned = _directives(
        render_site(
            _plan(tls="internal"), tls_proxy_client_max_body_size="8m", tls_proxy_large_client_header_buffers="2 8k"
        )
    )
    assert "client_max_body_size 8m" in tuned
    assert "large_client_header_buffers 2 8k" in tuned


def test_the_authorization_header_is_neither_dropped_nor_replaced() -> None:
    # nginx passes request headers on unless told otherwise: the engine's --api-key check sees the client's.
    text = render_site(_plan(tls="internal"))
    assert not re.search(r"proxy_set_header\s+(Authorization|x-api-key)", text, re.IGNORECASE)
    assert "proxy_pass_request_headers off" not in text


def test_without_ipv6_nginx_listens_on_ipv4_only() -> None:
    site = _directives(render_site(_plan(tls="internal"), _tls_proxy_ipv6=False))
    assert "listen 8000 ssl" in site
    assert not any(line.startswith("listen [::]") for line in site)


def test_the_internal_certificate_names_the_host() -> None:
    names = _variables(_plan(tls="internal"), glm_private_ip="10.19.0.10")["_tls_proxy_names"]
    assert names == ["192.0.2.10", "10.19.0.10", "gpu-node-1", "localhost", "127.0.0.1"]
    # An inventory name that is no DNS name stays out; the addresses still name the host.
    odd = _variables(_plan(tls="internal"), inventory_hostname="gpu_node_1")["_tls_proxy_names"]
    assert "gpu_node_1" not in odd and "192.0.2.10" in odd


def test_acme_serves_the_challenge_on_port_80_and_the_letsencrypt_certificate() -> None:
    plan = _plan(tls="acme", tls_domain="glm.example.com")
    site = _directives(render_site(plan))
    assert "listen 80" in site
    assert "server_name glm.example.com" in site
    assert "root /var/www/glm-acme" in site
    assert "ssl_certificate /etc/letsencrypt/live/glm.example.com/fullchain.pem" in site
    assert "ssl_certificate_key /etc/letsencrypt/live/glm.example.com/privkey.pem" in site
    # Before the first certificate exists, only the challenge server (nginx refuses TLS without its files).
    challenge = _directives(render_site(plan, _tls_proxy_serve_tls=False))
    assert "listen 80" in challenge and not any("ssl" in line for line in challenge)


@pytest.mark.parametrize(
    ("email", "server", "expected"),
    [
        ("", "", ["--register-unsafely-without-email"]),
        (
            "ops@example.com",
            "https://acme-staging-v02.api.letsencrypt.org/directory",
            ["-m", "ops@example.com", "--server", "https://acme-staging-v02.api.letsencrypt.org/directory"],
        ),
    ],
)
def test_the_certbot_command(email: str, server: str, expected: list[str]) -> None:
    variables = _variables(
        _plan(tls="acme", tls_domain="glm.example.com"), tls_proxy_acme_email=email, tls_proxy_acme_server=server
    )
    argv = variables["_tls_proxy_certbot_argv"]
    assert argv[:5] == ["certbot", "certonly", "--non-interactive", "--agree-tos", "--webroot"]
    assert argv[argv.index("-w") + 1] == "/var/www/glm-acme"
    assert argv[argv.index("-d") + 1] == "glm.example.com"
    assert argv[argv.index("--deploy-hook") + 1] == "systemctl reload nginx"
    assert argv[-len(expected) :] == expected


def test_defaults_and_argument_specs_list_the_same_options() -> None:
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    options = specs["main"]["options"]
    assert set(DEFAULTS) == set(options)
    for name, option in options.items():
        assert option.get("type") and option.get("description"), name


def test_plays_run_the_terminator_after_the_engine_and_take_it_off_before_an_engine_without_tls() -> None:
    playbooks = Path(__file__).resolve().parents[2] / "playbooks"
    site = (playbooks / "site.yml").read_text()
    assert (
        site.index("tasks_from: unbind")
        < site.index("role: glm.deploy.server")
        < site.index("name: glm.deploy.tls_proxy\n      when:")
    )
    for name in ("redeploy.yml", "rollback.yml"):
        text = (playbooks / name).read_text()
        unbind = text.index("tasks_from: unbind")
        activate = text.index("tasks_from: activate", unbind)
        assert unbind < activate < text.index("name: glm.deploy.tls_proxy\n", activate), name
