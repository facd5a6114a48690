"""The endpoint's internal certificate authority: made once on the controller, kept 0600 next to the API key.

With `tls: internal` (and no public CA to ask), every host's TLS terminator (glm.deploy.tls_proxy) serves a
certificate this CA signed, with the host's names and addresses in its subject alternative names. Clients trust
the CA through `glm-deploy client-env` (SSL_CERT_FILE, REQUESTS_CA_BUNDLE, NODE_EXTRA_CA_CERTS).

Layout, under `<folder of the API key file>/tls/` (mode 0700; every file 0600):
  ca.crt, ca.key               the CA (EC P-256, 10 years), made on first use and reused by every later run;
  hosts/<host>.crt, <host>.key  a host's certificate (EC P-256, 397 days) and key, reissued only when its names
                               change, when it nears expiry, or when the CA no longer signs it.

Reusing what is on file keeps a second deploy at 0 changed: the host gets the same bytes again.
Uses `cryptography`, which ansible-core already depends on.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import ipaddress
import os
import re
import secrets
import ssl
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from glm_deploy.credentials import api_key_file
from glm_deploy.errors import InputError
from glm_deploy.validation import clip

TLS_DIR_NAME = "tls"
CA_NAME = "glm-deploy endpoint CA"
CA_DAYS = 3650
# Apple's and the browsers' ceiling for a server certificate is 398 days.
SERVER_DAYS = 397
# A certificate with less than this left is reissued at the next deploy.
RENEW_BEFORE = datetime.timedelta(days=30)
# A DNS name as certificates hold it: labels of letters, digits and '-', dot-separated.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*")
_HOST_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class ServerCertificate:
    """A host's certificate and key (PEM) and the CA that signed it."""

    cert_pem: str
    key_pem: str
    ca_pem: str
    names: tuple[str, ...]


def tls_dir(*, secrets_dir: str | Path | None = None, project_dir: str | Path | None = None) -> Path:
    """The folder of the CA and the host certificates: `tls/` beside the endpoint API key file."""
    return api_key_file(secrets_dir=secrets_dir, project_dir=project_dir).parent / TLS_DIR_NAME


def ca_cert_file(folder: Path) -> Path:
    return folder / "ca.crt"


def _write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` with mode 0600 from the first byte, whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        os.replace(staging, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            staging.unlink()


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _make_ca(folder: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    # The key first: a CA certificate on file always has its key beside it.
    _write_private(folder / "ca.key", _key_pem(key))
    _write_private(ca_cert_file(folder), cert.public_bytes(serialization.Encoding.PEM))


def ensure_ca(folder: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA in `folder`, made when there is none; the folder is kept 0700."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)
    if not (folder / "ca.key").is_file() or not ca_cert_file(folder).is_file():
        _make_ca(folder)
    cert = x509.load_pem_x509_certificate(ca_cert_file(folder).read_bytes())
    key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InputError(f"{folder / 'ca.key'} is not the EC key glm-deploy makes", hint="delete ca.key and ca.crt")
    return cert, key


def subject_names(names: Iterable[str]) -> list[x509.GeneralName]:
    """SAN entries for host names and addresses, in order, without repeats; refuses anything else."""
    entries: list[x509.GeneralName] = []
    seen: set[str] = set()
    for raw in names:
        name = str(raw).strip().strip("[]")
        if not name or name.lower() in seen:
            continue
        seen.add(name.lower())
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
            continue
        except ValueError:
            pass
        if not _DNS_NAME.fullmatch(name):
            raise InputError(
                f"{clip(name)} cannot be a certificate name", hint="a DNS name (letters, digits, '-', '.') or an IP"
            )
        entries.append(x509.DNSName(name.lower()))
    if not entries:
        raise InputError("a host certificate needs at least one name or address")
    return entries


def _san_strings(cert: x509.Certificate) -> set[str]:
    try:
        extension = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(entry.value).lower() for entry in extension}


def _still_good(cert: x509.Certificate, ca: x509.Certificate, wanted: Sequence[x509.GeneralName]) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    fresh = cert.not_valid_after_utc - _now() > RENEW_BEFORE
    return fresh and _san_strings(cert) == {str(entry.value).lower() for entry in wanted}


def _issue(
    ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, common_name: str, sans: Sequence[x509.GeneralName]
) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One writer at a time: Ansible's forks issue the hosts' certificates at once, and two CAs made side by side
    would leave one host with a certificate nothing trusts."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with os.fdopen(os.open(folder / ".lock", os.O_WRONLY | os.O_CREAT, 0o600), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def server_certificate(folder: Path, host: str, names: Sequence[str]) -> ServerCertificate:
    """The certificate of inventory host `host` for `names` (its DNS names and IP addresses), signed by the CA in
    `folder`: the one on file when it still fits, else a new one written there (0600)."""
    if not _HOST_FILE.fullmatch(host):
        raise InputError(f"inventory host name {clip(host)} cannot name a certificate file")
    with _locked(folder):
        return _server_certificate(folder, host, names)


def _server_certificate(folder: Path, host: str, names: Sequence[str]) -> ServerCertificate:
    ca, ca_key = ensure_ca(folder)
    sans = subject_names(names)
    cert_path, key_path = folder / "hosts" / f"{host}.crt", folder / "hosts" / f"{host}.key"
    if cert_path.is_file() and key_path.is_file():
        on_file = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if _still_good(on_file, ca, sans):
            return ServerCertificate(
                cert_path.read_text(),
                key_path.read_text(),
                ca_cert_file(folder).read_text(),
                tuple(str(entry.value) for entry in sans),
            )
    cert_pem, key_pem = _issue(ca, ca_key, str(sans[0].value), sans)
    _write_private(key_path, key_pem)
    _write_private(cert_path, cert_pem)
    (folder / "hosts").chmod(0o700)
    return ServerCertificate(
        cert_pem.decode(), key_pem.decode(), ca_cert_file(folder).read_text(), tuple(str(entry.value) for entry in sans)
    )


def ca_bundle(folder: Path) -> Path:
    """`ca-bundle.crt` in `folder`: the system's trusted CAs and this CA, for clients whose variable replaces the
    trusted set (SSL_CERT_FILE, REQUESTS_CA_BUNDLE), so that the same shell still reaches public HTTPS. Rewritten
    only when its content would change."""
    ca_pem = ca_cert_file(folder).read_text()
    system = Path(ssl.get_default_verify_paths().openssl_cafile or "/etc/ssl/certs/ca-certificates.crt")
    system_pem = system.read_text() if system.is_file() else ""
    wanted = (system_pem.rstrip("\n") + "\n" if system_pem else "") + ca_pem
    bundle = folder / "ca-bundle.crt"
    if not bundle.is_file() or bundle.read_text() != wanted:
        _write_private(bundle, wanted.encode())
    return bundle
