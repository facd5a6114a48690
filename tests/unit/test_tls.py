"""TLS in front of the engine, the parts that run in this process: the controller's CA and the host certificates
(glm_deploy.tls), the plan options that choose TLS (validated where every option is), the plan they render, and
the environment `client-env` prints for the clients (https, the CA)."""

from __future__ import annotations

import datetime
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from glm_deploy.catalog import load_catalog
from glm_deploy.client_env import client_environment
from glm_deploy.errors import InputError
from glm_deploy.render import PlanOptions, render_plan
from glm_deploy.tls import ca_bundle, ca_cert_file, ensure_ca, server_certificate, tls_dir

CATALOG = load_catalog()
TINY = {"model": "glm-tiny", "engine": "vllm-cpu", "hardware": "cpu"}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _sans(pem: str) -> set[str]:
    cert = x509.load_pem_x509_certificate(pem.encode())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(name.value) for name in names}


# -- the CA and the host certificates ------------------------------------------------------------------------------


def test_the_ca_lives_beside_the_api_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLM_API_KEY_FILE", str(tmp_path / "keys" / "api_key"))
    assert tls_dir() == tmp_path / "keys" / "tls"
    assert tls_dir(secrets_dir=tmp_path / "vault") == tmp_path / "vault" / "tls"


def test_the_ca_is_made_once_with_private_files(tmp_path: Path) -> None:
    folder = tmp_path / "tls"
    first, _ = ensure_ca(folder)
    again, _ = ensure_ca(folder)

    assert first.fingerprint(first.signature_hash_algorithm) == again.fingerprint(again.signature_hash_algorithm)  # type: ignore[arg-type]
    assert first.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert _mode(folder) == 0o700
    assert _mode(folder / "ca.key") == 0o600
    assert _mode(ca_cert_file(folder)) == 0o600


def test_a_host_certificate_names_the_host_and_is_signed_by_the_ca(tmp_path: Path) -> None:
    folder = tmp_path / "tls"
    issued = server_certificate(folder, "gpu-node-1", ["gpu-node-1", "192.0.2.10", "10.19.0.10", "localhost"])

    cert = x509.load_pem_x509_certificate(issued.cert_pem.encode())
    ca = x509.load_pem_x509_certificate(issued.ca_pem.encode())
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"gpu-node-1", "localhost"}
    assert set(names.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("192.0.2.10"),
        ipaddress.ip_address("10.19.0.10"),
    }
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > datetime.timedelta(days=390)
    key = serialization.load_pem_private_key(issued.key_pem.encode(), password=None)
    assert key.public_key() == cert.public_key()
    for path in (folder / "hosts" / "gpu-node-1.crt", folder / "hosts" / "gpu-node-1.key"):
        assert _mode(path) == 0o600
    assert _mode(folder / "hosts") == 0o700


def test_the_same_names_give_the_same_certificate_and_new_names_a_new_one(tmp_path: Path) -> None:
    folder = tmp_path / "tls"
    first = server_certificate(folder, "h1", ["h1", "192.0.2.10"])
    # A re-run copies the same bytes to the host: 0 changed.
    again = server_certificate(folder, "h1", ["192.0.2.10", "h1"])
    assert (again.cert_pem, again.key_pem) == (first.cert_pem, first.key_pem)
    moved = server_certificate(folder, "h1", ["h1", "192.0.2.99"])
    assert moved.cert_pem != first.cert_pem
    assert _sans(moved.cert_pem) == {"h1", "192.0.2.99"}


def test_a_certificate_of_another_ca_is_reissued(tmp_path: Path) -> None:
    folder = tmp_path / "tls"
    first = server_certificate(folder, "h1", ["h1"])
    (folder / "ca.key").unlink()  # a new CA on the next run
    second = server_certificate(folder, "h1", ["h1"])
    assert second.ca_pem != first.ca_pem and second.cert_pem != first.cert_pem
    x509.load_pem_x509_certificate(second.cert_pem.encode()).verify_directly_issued_by(
        x509.load_pem_x509_certificate(second.ca_pem.encode())
    )


@pytest.mark.parametrize("name", ["bad name", "a\nb", "under_score.example", "-leading.example", ""])
def test_a_name_no_certificate_can_hold_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(InputError):
        server_certificate(tmp_path / "tls", "h1", [name])


def test_a_host_name_that_cannot_name_a_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot name a certificate file"):
        server_certificate(tmp_path / "tls", "../h1", ["h1"])


def test_the_bundle_holds_the_system_cas_and_the_endpoint_ca(tmp_path: Path) -> None:
    folder = tmp_path / "tls"
    ensure_ca(folder)
    bundle = ca_bundle(folder)
    text = bundle.read_text()
    assert text.endswith(ca_cert_file(folder).read_text())
    assert text.count("BEGIN CERTIFICATE") >= 1
    assert _mode(bundle) == 0o600
    assert ca_bundle(folder) == bundle and bundle.read_text() == text


# -- the options and the plan --------------------------------------------------------------------------------------


def _plan(**options: object):  # type: ignore[no-untyped-def]
    return render_plan(CATALOG, **TINY, options=PlanOptions.from_mapping(options))  # type: ignore[arg-type]


def test_without_tls_the_engine_serves_the_api_port_on_every_address() -> None:
    plan = _plan()
    assert plan.tls == {"mode": "off", "domain": None}
    assert (plan.host, plan.port, plan.engine_port) == ("0.0.0.0", 8000, 8000)
    argv = plan.nodes[0].argv
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    assert argv[argv.index("--port") + 1] == "8000"


def test_behind_tls_the_engine_listens_on_loopback_on_a_port_of_its_own() -> None:
    plan = _plan(tls="internal")
    argv = plan.nodes[0].argv
    assert plan.tls["mode"] == "internal"
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--port") + 1] == "18000"
    assert (plan.port, plan.engine_port) == (8000, 18000)
    assert _plan(tls="internal", port=443, engine_port=9000).engine_port == 9000
    assert _plan(tls="internal", port=60000).engine_port == 50000


def test_a_multi_node_plan_behind_tls_still_meets_its_peers_on_the_private_address() -> None:
    plan = render_plan(
        CATALOG,
        model="glm-5-fp8",
        engine="sglang",
        hardware="h100",
        options=PlanOptions.from_mapping({"tls": "internal", "head_address": "10.19.0.10"}),
    )
    assert plan.node_count == 2
    for node in plan.nodes:
        assert node.argv[node.argv.index("--host") + 1] == "127.0.0.1"
        assert node.argv[node.argv.index("--dist-init-addr") + 1] == "10.19.0.10:5000"


def test_the_warm_up_server_avoids_both_ports() -> None:
    plan = render_plan(
        CATALOG, model="glm-5.1-fp8", engine="sglang", hardware="b200", options=PlanOptions(tls="internal")
    )
    assert plan.warmup is not None and plan.warmup.nodes is not None
    argv = plan.warmup.nodes[0]
    assert argv[argv.index("--port") + 1] not in ("8000", "18000")


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"tls": "on"}, "is not a TLS mode"),
        ({"tls": "acme"}, "tls acme needs tls_domain"),
        ({"tls": "acme", "tls_domain": "192.0.2.10"}, "tls_domain"),
        ({"tls": "acme", "tls_domain": "glm.example.com\n"}, "tls_domain"),
        ({"tls": "internal", "host": "0.0.0.0"}, "would serve the engine without TLS"),
        ({"tls": "internal", "engine_port": 8000}, "must be a TCP port other than port 8000"),
        ({"tls": "internal", "engine_port": 70000}, "must be a TCP port"),
        ({"engine_port": 9000}, "engine_port applies only behind TLS"),
    ],
)
def test_tls_settings_that_cannot_work_are_refused(options: dict[str, object], expected: str) -> None:
    with pytest.raises(InputError, match=expected):
        _plan(**options)


def test_acme_with_a_domain_renders() -> None:
    plan = _plan(tls="acme", tls_domain="glm.example.com")
    assert plan.tls == {"mode": "acme", "domain": "glm.example.com"}


def test_the_cli_offers_the_tls_options() -> None:
    from glm_deploy.cli import build_parser

    args = build_parser().parse_args(
        ["plan", "--model", "glm-tiny", "--engine", "vllm-cpu", "--hardware", "cpu", "--tls", "internal"]
    )
    assert args.tls == "internal"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["plan", "--model", "m", "--engine", "e", "--hardware", "h", "--tls", "maybe"])


# -- client-env ----------------------------------------------------------------------------------------------------


def test_client_env_behind_tls_uses_https_and_trusts_the_ca(tmp_path: Path) -> None:
    ca, bundle, key_file = tmp_path / "ca.crt", tmp_path / "ca-bundle.crt", tmp_path / "api_key"
    openai = client_environment(
        "openai",
        address="192.0.2.10",
        port=8000,
        served_model_name="glm-tiny",
        key_file=key_file,
        scheme="https",
        ca_file=ca,
        ca_bundle=bundle,
    )
    assert openai.env["OPENAI_BASE_URL"] == "https://192.0.2.10:8000/v1"
    assert openai.env["SSL_CERT_FILE"] == str(bundle)
    assert openai.env["REQUESTS_CA_BUNDLE"] == str(bundle)
    claude = client_environment(
        "claude-code",
        address="192.0.2.10",
        port=8000,
        served_model_name="glm-tiny",
        key_file=key_file,
        scheme="https",
        ca_file=ca,
        ca_bundle=bundle,
    )
    assert claude.env["ANTHROPIC_BASE_URL"] == "https://192.0.2.10:8000"
    # Node adds NODE_EXTRA_CA_CERTS to its own CAs: the CA alone.
    assert claude.env["NODE_EXTRA_CA_CERTS"] == str(ca)
    assert f"export SSL_CERT_FILE={bundle}" in claude.shell()


def test_client_env_without_tls_sets_no_ca() -> None:
    plain = client_environment("openai", address="192.0.2.10", port=8000, served_model_name="m", key_file=None)
    assert plain.env["OPENAI_BASE_URL"] == "http://192.0.2.10:8000/v1"
    assert not {"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"} & set(plain.env)


def test_client_env_refuses_a_ca_path_that_would_add_a_shell_line(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        client_environment(
            "openai",
            address="192.0.2.10",
            port=8000,
            served_model_name="m",
            key_file=None,
            scheme="https",
            ca_file=Path(f"{tmp_path}/ca.crt\ntouch /tmp/x"),
        )


def test_the_playbooks_find_the_key_file_and_its_ca_where_the_controller_does(tmp_path: Path) -> None:
    # GLM_API_KEY_FILE names where the key is, so the runner passes it on (the lookups put the CA beside it), while
    # the key itself never reaches ansible-playbook's environment.
    from glm_deploy.runner import PlaybookRunner

    environment = PlaybookRunner(state_dir=tmp_path)._environment(
        {"GLM_API_KEY_FILE": str(tmp_path / "api_key"), "GLM_API_KEY": "secret-value", "HF_TOKEN": "hf_x"}
    )
    assert environment["GLM_API_KEY_FILE"] == str(tmp_path / "api_key")
    assert "GLM_API_KEY" not in environment and "HF_TOKEN" not in environment


def test_a_plan_without_tls_keeps_the_release_it_had_before_tls_existed() -> None:
    # Hosts already serving a plan are not restarted because the plan gained the tls fields.
    from glm_deploy.release import plan_hash

    plan = _plan().to_dict()
    before = {name: value for name, value in plan.items() if name not in ("tls", "engine_port")}
    assert plan_hash(plan) == plan_hash(before)
    assert plan_hash(_plan(tls="internal").to_dict()) != plan_hash(plan)
