"""hf_prefetch over HTTPS: trusts the CA it is given (ca_bundle, or the standard SSL_CERT_FILE), downloads and
verifies the snapshot; refuses at once, naming the TLS problem and writing nothing, when the certificate is
not trusted or not valid for the host."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.equipment.hub_faults import Fault, FaultyHub, HubPKI, make_test_pki
from tests.weights.helpers import REPO_ID, Published, expected_digests, make_model_files, run_module, snapshot_digests

pytestmark = pytest.mark.playbook

SHARD_1 = "model-00001-of-00003.safetensors"  # 2,500,000 bytes


@pytest.fixture(autouse=True)
def _no_ca_setting_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test says what the client trusts; nothing leaks in from the environment running the tests."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


@pytest.fixture
def pki(tmp_path: Path) -> HubPKI:
    return make_test_pki(tmp_path / "pki")


@pytest.fixture
def https_hub(tmp_path: Path, pki: HubPKI) -> Iterator[FaultyHub]:
    with FaultyHub(tmp_path / "hub-store", tls=pki, tree_page_size=3) as server:
        yield server


@pytest.fixture
def https_model(https_hub: FaultyHub) -> Published:
    files = make_model_files(7, [2_500_000, 1_600_000, 150_000])
    return Published(REPO_ID, https_hub.store.publish(REPO_ID, files), files)


def prefetch(hub: FaultyHub, cache_dir: Path, env: dict[str, str] | None = None, **extra: object):
    args: dict[str, object] = {"repo": REPO_ID, "revision": "main", "cache_dir": str(cache_dir), "endpoint": hub.url}
    args.update(extra)
    return run_module(args, env=env)


def repo_folder(cache_dir: Path) -> Path:
    return cache_dir / f"models--{REPO_ID.replace('/', '--')}"


def assert_nothing_written(cache_dir: Path, hub: FaultyHub) -> None:
    folder = repo_folder(cache_dir)
    assert not (folder / "snapshots").exists(), list(folder.rglob("*"))
    assert not (folder / "blobs").exists(), list(folder.rglob("*"))
    assert hub.gets() == [], "a file request got through a handshake that should have failed"


def test_the_stand_in_speaks_https_with_the_test_certificate(https_hub: FaultyHub, https_model: Published, pki):
    assert https_hub.url.startswith("https://127.0.0.1:")
    context = ssl.create_default_context(cafile=str(pki.ca_file))
    url = f"{https_hub.url}/api/models/{REPO_ID}/tree/main?recursive=true"
    with urllib.request.urlopen(url, context=context, timeout=10) as response:
        page = json.loads(response.read())
        link = response.headers["Link"]
    assert len(page) == 3
    # The next page of a paginated tree is on the same scheme, or a client would leave TLS for it.
    assert link.startswith(f"<{https_hub.url}/api/models/{REPO_ID}/tree/main?"), link
    untrusting = ssl.create_default_context(cafile=str(pki.other_ca_file))
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(url, context=untrusting, timeout=10)


def test_downloads_over_https_trusting_ca_bundle(https_hub: FaultyHub, https_model: Published, pki, tmp_path):
    cache_dir = tmp_path / "hf" / "hub"

    run = prefetch(https_hub, cache_dir, ca_bundle=str(pki.ca_file))

    assert not run.failed, run.output
    assert run.result["commit"] == https_model.commit
    assert run.result["files_verified"] == len(https_model.files)
    assert snapshot_digests(cache_dir, REPO_ID, https_model.commit) == expected_digests(https_model.files)
    assert https_hub.stats.file_bytes_sent == sum(len(data) for data in https_model.files.values())


def test_downloads_over_https_trusting_ssl_cert_file(https_hub: FaultyHub, https_model: Published, pki, tmp_path):
    """The standard variable works without the option: huggingface_hub's client and the module's downloads
    both honour it."""
    cache_dir = tmp_path / "hf" / "hub"

    run = prefetch(https_hub, cache_dir, env={"SSL_CERT_FILE": str(pki.ca_file)})

    assert not run.failed, run.output
    assert snapshot_digests(cache_dir, REPO_ID, https_model.commit) == expected_digests(https_model.files)


@pytest.mark.parametrize("hash_aside", ["never", "always"])
def test_dropped_https_transfer_resumes(https_hub: FaultyHub, https_model: Published, pki, tmp_path, hash_aside):
    cache_dir = tmp_path / "hf" / "hub"
    https_hub.faults.add(Fault("drop", filename=SHARD_1, at_byte=1_800_000))

    run = prefetch(https_hub, cache_dir, ca_bundle=str(pki.ca_file), hash_aside=hash_aside)
    assert run.result.get("hash_aside") is (hash_aside == "always")

    assert not run.failed, run.output
    assert snapshot_digests(cache_dir, REPO_ID, https_model.commit) == expected_digests(https_model.files)
    gets = https_hub.gets(SHARD_1)
    assert [entry.fault for entry in gets] == ["drop", None]
    assert gets[1].range_header is not None and gets[1].range_header != "bytes=0-", "restarted instead of resumed"


@pytest.mark.parametrize("trust", ["system", "other-ca-bundle", "other-ssl-cert-file"])
def test_refuses_an_untrusted_certificate_at_once(https_hub: FaultyHub, https_model: Published, pki, tmp_path, trust):
    cache_dir = tmp_path / "hf" / "hub"
    options: dict[str, object] = {"retry_budget_s": 60, "retry_backoff": 5}  # retrying would take > 15 s
    env = None
    if trust == "other-ca-bundle":
        options["ca_bundle"] = str(pki.other_ca_file)
    elif trust == "other-ssl-cert-file":
        env = {"SSL_CERT_FILE": str(pki.other_ca_file)}

    run = prefetch(https_hub, cache_dir, env=env, **options)

    assert run.failed
    message = run.result["msg"]
    assert message.startswith(f"TLS with the Hub at {https_hub.url} failed: certificate verify failed"), message
    assert "ca_bundle" in message
    if trust == "other-ca-bundle":
        assert str(pki.other_ca_file) in message
    assert "attempts" not in message, "a certificate problem is not worth retrying"
    assert_nothing_written(cache_dir, https_hub)


def test_refuses_a_certificate_for_another_host(tmp_path: Path):
    pki = make_test_pki(tmp_path / "pki", hosts=("hub.internal",))
    with FaultyHub(tmp_path / "hub-store", tls=pki) as hub:
        hub.store.publish(REPO_ID, make_model_files(3, [100_000]))
        cache_dir = tmp_path / "hf" / "hub"

        run = prefetch(hub, cache_dir, ca_bundle=str(pki.ca_file))

        assert run.failed
        assert "certificate verify failed: IP address mismatch" in run.result["msg"], run.result["msg"]
        assert_nothing_written(cache_dir, hub)


def test_https_endpoint_of_a_plain_http_server_is_named(tmp_path: Path):
    """The endpoint says https:// but the server speaks plain HTTP: the message says so, without retrying."""
    with FaultyHub(tmp_path / "plain-store") as plain:
        plain.store.publish(REPO_ID, make_model_files(3, [100_000]))
        cache_dir = tmp_path / "hf" / "hub"
        args = {"repo": REPO_ID, "cache_dir": str(cache_dir), "endpoint": plain.url.replace("http://", "https://")}

        run = run_module({**args, "retry_budget_s": 60, "retry_backoff": 5})

        assert run.failed
        assert "the server did not answer in TLS" in run.result["msg"], run.result["msg"]


def test_ca_bundle_that_is_not_a_pem_file_is_refused(https_hub: FaultyHub, tmp_path: Path):
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    for bundle in (not_pem, tmp_path / "missing.pem"):
        run = prefetch(https_hub, tmp_path / "hf" / "hub", ca_bundle=str(bundle))

        assert run.failed
        assert run.result["msg"].startswith(f"ca_bundle '{bundle}' is not a readable PEM file"), run.result["msg"]
    assert https_hub.stats.requests == {}
