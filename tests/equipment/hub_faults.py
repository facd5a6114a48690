"""The sandbox Hub server with faults injected on chosen requests.

`FaultyHub` wraps `glm_deploy.sandbox.hub.HubServer`; tests queue faults with `hub.faults.add(Fault(...))`.
Each fault applies to the next `times` GET requests of files matching `filename` (fnmatch pattern) and then
expires, so a correct client always ends with the right bytes:

- `drop`: send the file up to byte `at_byte` (absolute offset in the file), then cut the connection;
- `stall`: send up to `at_byte`, then go silent for `seconds` and cut the connection (a hung transfer);
- `corrupt`: send the right number of bytes with one byte flipped at `at_byte` (wrong content, right size);
- `slow`: send the right bytes, spread over `seconds` (a transfer still in flight when another file fails);
- `status`: answer `status` (429, 500, 503...) instead of the file, with the rate-limit headers the Hub sends:
  `Retry-After: retry_after` (seconds, or any string), or `retry_after_date_in` seconds after the answer as an
  HTTP-date; `RateLimit: rate_limit` (the IETF draft's structured field as the Hub writes it, e.g.
  `"resolvers";r=0;t=300`; given verbatim, so a test can send several policies or a malformed value) and
  `RateLimit-Policy: rate_limit_policy`; and the Hub's `X-Error-Code: error_code` (e.g. a 401 with
  `RepoNotFound`, the Hub's answer for a repository it will not show to this caller), each only when set.

`api_status` faults answer `status` to the next `times` requests under `/api/` (metadata calls), with the same
headers.
The server counts file bytes sent (`hub.stats.file_bytes_sent`) and keeps a log of every file request
(`hub.file_log`) with its Range header, so tests can prove a resume was ranged and a re-run fetched nothing.

`FaultyHub(root, tls=make_test_pki(directory))` serves HTTPS with a certificate for 127.0.0.1 and localhost
signed by a certificate authority made for the test run: clients trust it by being given `pki.ca_file`, and a
second, unrelated CA (`pki.other_ca_file`) stands for a wrong or missing trust setting.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import email.utils
import fnmatch
import ipaddress
import json
import socket
import threading
import time
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from glm_deploy.sandbox.hub import FileRequest, HubRequestHandler, HubServer, HubStore, server_ssl_context

FaultKind = Literal["drop", "stall", "corrupt", "slow", "status", "api_status"]


@dataclasses.dataclass
class Fault:
    kind: FaultKind
    filename: str = "*"
    times: int = 1
    at_byte: int = 0
    seconds: float = 0.0
    status: int = 500
    retry_after: int | str | None = None
    retry_after_date_in: float | None = None
    rate_limit: str | None = None
    rate_limit_policy: str | None = None
    error_code: str | None = None


@dataclasses.dataclass(frozen=True)
class FileLogEntry:
    method: str
    filename: str
    range_header: str | None
    fault: FaultKind | None
    when: float


class FaultPlan:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self.fired: list[tuple[FaultKind, str]] = []

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def take(self, kinds: tuple[FaultKind, ...], filename: str) -> Fault | None:
        """The first pending fault of one of `kinds` that matches `filename`, consuming one use of it."""
        with self._lock:
            for fault in self._faults:
                if fault.kind in kinds and fnmatch.fnmatchcase(filename, fault.filename):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    self.fired.append((fault.kind, filename))
                    return fault
            return None

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def pending(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)


class FaultyHandler(HubRequestHandler):
    def _plan(self) -> FaultPlan:
        plan: FaultPlan = self.server.faults  # type: ignore[attr-defined]
        return plan

    def route(self, method: str) -> None:
        if self.path.startswith("/api/"):
            fault = self._plan().take(("api_status",), self.path)
            if fault is not None:
                self._send_status_fault(fault)
                return
        super().route(method)

    def serve_file(self, request: FileRequest) -> None:
        fault = None
        if request.method == "GET":
            fault = self._plan().take(("drop", "stall", "corrupt", "slow", "status"), request.entry.path)
        log: list[FileLogEntry] = self.server.file_log  # type: ignore[attr-defined]
        log.append(
            FileLogEntry(
                request.method,
                request.entry.path,
                self.headers.get("Range"),
                fault.kind if fault else None,
                time.monotonic(),
            )
        )
        if fault is None:
            super().serve_file(request)
        elif fault.kind == "status":
            self._send_status_fault(fault)
        elif fault.kind in ("drop", "stall"):
            self.send_file_headers(request)
            before_cut = max(0, min(fault.at_byte - request.start, request.length))
            self.send_file_bytes(request, request.start, before_cut)
            self.wfile.flush()
            if fault.kind == "stall":
                time.sleep(fault.seconds)
            self._cut()
        elif fault.kind == "slow":
            self.send_file_headers(request)
            steps = 20
            offset, end = request.start, request.start + request.length
            while offset < end:
                count = min(-(-request.length // steps), end - offset)
                sent = self.send_file_bytes(request, offset, count)
                if sent <= 0:
                    break  # the client went away
                offset += sent
                self.wfile.flush()
                time.sleep(fault.seconds / steps)
        else:  # corrupt: right length, one flipped byte
            self.send_file_headers(request)
            with request.blob.open("rb") as handle:
                handle.seek(request.start)
                data = bytearray(handle.read(request.length))
            flip = fault.at_byte - request.start
            if 0 <= flip < len(data):
                data[flip] ^= 0xFF
            else:
                data[0] ^= 0xFF
            self.wfile.write(bytes(data))
            self.server.stats.add_file_bytes(len(data))

    def _send_status_fault(self, fault: Fault) -> None:
        body = json.dumps({"error": f"injected {fault.status}"}).encode()
        self.send_response(fault.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if fault.retry_after is not None:
            self.send_header("Retry-After", str(fault.retry_after))
        if fault.retry_after_date_in is not None:
            self.send_header(
                "Retry-After", email.utils.formatdate(time.time() + fault.retry_after_date_in, usegmt=True)
            )
        if fault.error_code is not None:
            self.send_header("X-Error-Code", fault.error_code)
        if fault.rate_limit is not None:
            self.send_header("RateLimit", fault.rate_limit)
        if fault.rate_limit_policy is not None:
            self.send_header("RateLimit-Policy", fault.rate_limit_policy)
        self.end_headers()
        self.wfile.write(body)

    def _cut(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


@dataclasses.dataclass(frozen=True)
class HubPKI:
    """PEM files for a test run's HTTPS: the server's certificate and key, the CA that signed them (what a
    client must trust), and an unrelated CA (trusting it alone must make a client refuse the server)."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    other_ca_file: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _make_ca(common_name: str, now: datetime.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_test_pki(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> HubPKI:
    """Write a fresh CA, a server certificate it signed for `hosts` (IP addresses and DNS names), and an
    unrelated CA into `directory`. Keys are made for this run only and never leave it."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key, ca_cert = _make_ca("glm-deploy test CA", now)
    _, other_cert = _make_ca("glm-deploy unrelated test CA", now)
    server_key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pki = HubPKI(
        ca_file=directory / "ca.pem",
        cert_file=directory / "server.pem",
        key_file=directory / "server-key.pem",
        other_ca_file=directory / "other-ca.pem",
    )
    pki.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.other_ca_file.write_bytes(other_cert.public_bytes(serialization.Encoding.PEM))
    pki.cert_file.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    pki.key_file.touch(mode=0o600)
    pki.key_file.write_bytes(_key_pem(server_key))
    return pki


class FaultyHub(HubServer):
    """A HubServer whose requests pass through `faults` first; HTTPS with the certificate of `tls` when given."""

    def __init__(self, root: Path, *, tls: HubPKI | None = None, **kwargs: object) -> None:
        if tls is not None:
            kwargs["ssl_context"] = server_ssl_context(tls.cert_file, tls.key_file)
        super().__init__(HubStore(root), handler_class=FaultyHandler, **kwargs)  # type: ignore[arg-type]
        self.faults = FaultPlan()
        self.file_log: list[FileLogEntry] = []
        self.httpd.faults = self.faults  # type: ignore[attr-defined]
        self.httpd.file_log = self.file_log  # type: ignore[attr-defined]

    def gets(self, filename: str | None = None) -> list[FileLogEntry]:
        return [e for e in self.file_log if e.method == "GET" and (filename is None or e.filename == filename)]
