"""Helpers for platform tests: test CAs and device certificates of every shape, PostgreSQL."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from fleetpki import profiles
from fleetpki.ca import CertificateAuthority
from fleetpki.keys import PrivateKey, generate_private_key

PEM = serialization.Encoding.PEM
PG_URL = os.environ.get("FLEETPKI_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("FLEETPKI_REQUIRE_PG") == "1"


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(PEM)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


@dataclass(frozen=True)
class Device:
    """A device's key and certificate, plus the certificates it sends along."""

    key: PrivateKey
    cert: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()

    def write(self, folder: Path, name: str = "device") -> tuple[Path, Path]:
        """(certificate file with the chain appended, key file)."""
        folder.mkdir(parents=True, exist_ok=True)
        cert_file = folder / f"{name}.crt.pem"
        key_file = folder / f"{name}.key.pem"
        cert_file.write_bytes(b"".join(pem(c) for c in (self.cert, *self.chain)))
        key_file.write_bytes(key_pem(self.key))
        key_file.chmod(0o600)
        return cert_file, key_file


@dataclass(frozen=True)
class PKI:
    """Project acme's root + intermediate, project other's root, and an unrelated root."""

    root_a: CertificateAuthority
    inter_a: CertificateAuthority
    root_b: CertificateAuthority
    stranger: CertificateAuthority


def subject(project: str | None, certificate_id: str | None) -> x509.Name:
    attrs = []
    if project is not None:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, project))
    if certificate_id is not None:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, certificate_id))
    return x509.Name(attrs)


def issue(
    issuer: CertificateAuthority | Device,
    project: str | None,
    certificate_id: str | None,
    *,
    now: dt.datetime | None = None,
    days: int = 365,
    chain: tuple[x509.Certificate, ...] = (),
) -> Device:
    """A device certificate (our DEVICE profile) for any subject, signed by ``issuer``."""
    key = generate_private_key()
    if isinstance(issuer, Device):
        issuer_cert, issuer_key = issuer.cert, issuer.key
    else:
        issuer_cert, issuer_key = issuer.certificate, issuer.signer.builder_key()
    cert = profiles.DEVICE.builder(
        subject=subject(project, certificate_id),
        public_key=key.public_key(),
        issuer=issuer_cert,
        days=days,
        now=now or profiles.utcnow(),
    ).sign(issuer_key, hashes.SHA256())
    return Device(key, cert, chain)


def future_ca(days_ahead: int = 10) -> CertificateAuthority:
    """A root CA whose validity starts in the future."""
    key = generate_private_key()
    start = profiles.utcnow() + dt.timedelta(days=days_ahead)
    cert = profiles.ROOT.builder(
        subject=subject(None, "Future CA"), public_key=key.public_key(), issuer=None, now=start
    ).sign(key, hashes.SHA256())
    from fleetpki.keys import KeyFileSigner

    return CertificateAuthority("future", cert, KeyFileSigner(key))


def pg_unavailable() -> str | None:
    """Why PostgreSQL cannot be used for tests, or None when it can."""
    try:
        import psycopg

        with psycopg.connect(PG_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return f"{PG_URL}: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}"
    return None


class PgSchema:
    """A uniquely named schema on the test server, so concurrent runs never collide."""

    def __init__(self) -> None:
        self.name = f"fp_{uuid.uuid4().hex[:16]}"

    @property
    def url(self) -> str:
        sep = "&" if "?" in PG_URL else "?"
        return f"{PG_URL}{sep}options=-csearch_path%3D{self.name}"

    def __enter__(self) -> PgSchema:
        import psycopg

        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{self.name}"')
        return self

    def __exit__(self, *exc: object) -> None:
        import psycopg

        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{self.name}" CASCADE')


class ServeProcess:
    """``fleetpki serve`` as a real subprocess on ephemeral loopback ports."""

    ADMIN_KEY = "test-admin-key-0123456789abcdef"

    def __init__(
        self,
        data: Path,
        db_url: str | None = None,
        *,
        workers: int = 1,
        coaps_port: int | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        import subprocess
        import sys

        exe = str(Path(sys.executable).with_name("fleetpki"))
        cmd = [
            exe,
            "serve",
            "--data",
            str(data),
            "--api",
            "127.0.0.1:0",
            "--https",
            "127.0.0.1:0",
            *(["--coaps", f"127.0.0.1:{coaps_port}"] if coaps_port else ["--no-coaps"]),
            "--workers",
            str(workers),
            *args,
        ]
        if db_url:
            cmd += ["--db", db_url]
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETPKI_")}
        env["FLEETPKI_ADMIN_KEY"] = self.ADMIN_KEY
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        self.lines: list[str] = []
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            if line.strip() == "ready":
                break
        else:
            raise AssertionError(f"serve did not start: {self.proc.stderr.read()}")  # type: ignore[union-attr]
        self.api_url = self._find("management API").split()[2]
        self.https_port = int(self._find("device HTTPS").split()[2].rsplit(":", 1)[1])
        self.server_ca = Path(self._find("server CA").split()[2])

    def _find(self, label: str) -> str:
        return next(line for line in self.lines if line.strip().startswith(label))

    def api(
        self, method: str, path: str, json: object = None, key: str | None = None
    ) -> httpx.Response:
        import httpx

        headers = {"x-api-key": key or self.ADMIN_KEY}
        return httpx.request(method, self.api_url + path, json=json, headers=headers, timeout=10)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()

    def output(self) -> str:
        """Everything the process printed (stdout and stderr); call after ``stop``."""
        assert self.proc.stdout is not None and self.proc.stderr is not None
        return "\n".join([*self.lines, self.proc.stdout.read(), self.proc.stderr.read()])

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def curl_whoami(
    server: ServeProcess, files: tuple[Path, Path], path: str = "/v1/device/whoami"
) -> tuple[int, str]:
    """A device request by curl over real mTLS: (HTTP status, body)."""
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            str(server.server_ca),
            "--cert",
            str(files[0]),
            "--key",
            str(files[1]),
            "-w",
            "\n%{http_code}",
            f"https://localhost:{server.https_port}{path}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    body, _, status = out.stdout.rpartition("\n")
    return int(status), body


# -- certificates and CRLs broken on purpose (DER surgery) ------------------------------------


def der_parts(der: bytes) -> tuple[bytes, bytes, bytes]:
    """(to-be-signed, signature algorithm, signature BIT STRING) elements of a certificate/CRL."""
    from fleetpki.der import der_bounds

    start, end = der_bounds(der, 0, len(der))
    parts = []
    pos = start
    while pos < end:
        _, element_end = der_bounds(der, pos, end)
        parts.append(der[pos:element_end])
        pos = element_end
    tbs, algorithm, signature = parts
    return tbs, algorithm, signature


def resign(der: bytes, tbs: bytes, key: PrivateKey) -> bytes:
    """``der`` (a certificate or CRL) with ``tbs`` in place of its own, signed again by ``key``.

    So a mutated body comes with a valid signature and gets past the signature checks, to the
    parts that are read lazily.
    """
    from cryptography.hazmat.primitives.asymmetric import ec

    from fleetpki.der import tlv

    _, algorithm, _ = der_parts(der)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    signature = key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    return tlv(0x30, tbs + algorithm + tlv(0x03, b"\x00" + signature))


def broken_key_twin(cert: x509.Certificate, how: str) -> bytes:
    """DER of ``cert`` (same subject, issuer, serial) whose public key cannot be loaded.

    ``how``: ``"ec-point"`` (the point is not on the curve) or ``"key-oid"`` (an unknown key
    algorithm OID).
    """
    der = cert.public_bytes(serialization.Encoding.DER)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    at = der.index(spki)
    if how == "ec-point":
        broken = spki[:-8] + bytes(b ^ 0x5A for b in spki[-8:])
    elif how == "key-oid":
        ec_public_key = bytes.fromhex("06072a8648ce3d0201")  # 1.2.840.10045.2.1
        broken = spki.replace(ec_public_key, ec_public_key[:-1] + b"\x09", 1)
    else:
        raise ValueError(how)
    assert broken != spki and len(broken) == len(spki)
    return der[:at] + broken + der[at + len(spki) :]
