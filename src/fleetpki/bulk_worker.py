"""The worker-process side of bulk issuance: check and sign a chunk, or create dev-kit devices.

Workers hold the unlocked CA key in memory only (handed over through the pool's pipe, never a
file or argv) and die with the main process (PR_SET_PDEATHSIG), so a killed run leaves no worker
writing behind it. They never touch the inventory: the main process commits, then writes.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fleetpki.bulk_inputs import Item
from fleetpki.ca import CertificateAuthority
from fleetpki.csr import check_csr, create_csr
from fleetpki.errors import FleetPKIError
from fleetpki.fastsign import DeviceTemplate, FastCertificate, TemplateError, device_csr_der
from fleetpki.files import read_file
from fleetpki.formats import load_csr, pem_armor
from fleetpki.keys import KeyFileSigner, KeyType, generate_private_key, load_private_key
from fleetpki.profiles import utcnow

_PKCS8 = serialization.PrivateFormat.PKCS8
_PLAIN = serialization.NoEncryption()


@dataclass(slots=True)
class Outcome:
    """What became of one item: a certificate, or the one-line reason it was refused."""

    source: str
    cert: FastCertificate | None = None
    error: str | None = None


def device_file(out: Path, certificate_id: str, suffix: str) -> Path:
    """OUT/<certificate ID>.<suffix>, e.g. ``dev-000001.crt.der``: one flat folder per run.

    Flat because creating a sub-folder per device costs more than the files themselves.
    """
    return out / f"{certificate_id}.{suffix}"


def put(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write a small file in one call; O_NOFOLLOW so a planted symlink cannot redirect it.

    No fsync per file: durability comes from the inventory (a rerun re-writes any file of a
    committed certificate that the journal does not list). Raises OSError.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        if mode == 0o600:
            os.fchmod(fd, mode)  # an existing file keeps its old mode otherwise
        os.write(fd, data)
    finally:
        os.close(fd)


@dataclass
class _State:
    ca: CertificateAuthority
    project: str
    days: int | None
    out: Path
    key_type: KeyType


_STATE: _State | None = None


def init_worker(
    name: str, cert_der: bytes, key_der: bytes, project: str, days: int | None, out: str, kt: str
) -> None:
    """Pool initializer: load the CA from memory; die with the parent; leave Ctrl-C to it."""
    global _STATE
    with contextlib.suppress(Exception):  # Linux only; elsewhere workers end on pipe EOF
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    certificate = x509.load_der_x509_certificate(cert_der)
    signer = KeyFileSigner(load_private_key(key_der))
    authority = CertificateAuthority(name, certificate, signer)
    _STATE = _State(authority, project, days, Path(out), KeyType(kt))


def _state() -> _State:
    if _STATE is None:
        raise RuntimeError("bulk worker used before init_worker")
    return _STATE


def _issuer(state: _State) -> Callable[[Any], FastCertificate]:
    """The template for this chunk (its time is now); the builder if the template refuses."""
    try:
        return DeviceTemplate(state.ca, days=state.days, now=utcnow()).issue
    except TemplateError:
        return lambda request: FastCertificate.from_der(
            state.ca.issue(request, days=state.days).public_bytes(serialization.Encoding.DER)
        )


def sign_chunk(items: list[Item]) -> list[Outcome]:
    """Check (``csr.check_csr``: proof of possession + policy) and sign each CSR of a chunk."""
    state = _state()
    issue = _issuer(state)
    out = []
    for item in items:
        try:
            data = item.data if item.data is not None else read_file(Path(item.path or ""))
            request = check_csr(load_csr(data), state.project, item.certificate_id)
            out.append(Outcome(item.source, issue(request)))
        except FleetPKIError as exc:
            out.append(Outcome(item.source, error=str(exc)))
        except Exception as exc:  # one odd CSR must not end the run
            out.append(Outcome(item.source, error=f"unexpected error ({type(exc).__name__})"))
    return out


def issue_chunk(items: list[Item]) -> list[Outcome]:
    """Create key, CSR and certificate per device; the key files are written here, first.

    The key reaches the disk before its certificate is committed, so a committed certificate
    always has its key; the main process never sends an ID that already has a certificate.
    """
    state = _state()
    issue = _issuer(state)
    out = []
    for item in items:
        certificate_id = item.certificate_id or item.source
        try:
            key = generate_private_key(state.key_type)
            if state.key_type is KeyType.P256:
                csr_der = device_csr_der(key, state.project, certificate_id)  # type: ignore[arg-type]
                csr = x509.load_der_x509_csr(csr_der)
            else:
                csr = create_csr(key, state.project, certificate_id)
                csr_der = csr.public_bytes(serialization.Encoding.DER)
            cert = issue(check_csr(csr, state.project, certificate_id))  # PoP never skipped
            pem, der = serialization.Encoding.PEM, serialization.Encoding.DER
            where = state.out
            put(
                device_file(where, certificate_id, "key.pem"),
                key.private_bytes(pem, _PKCS8, _PLAIN),
                0o600,
            )
            put(
                device_file(where, certificate_id, "key.der"),
                key.private_bytes(der, _PKCS8, _PLAIN),
                0o600,
            )
            put(
                device_file(where, certificate_id, "csr.pem"),
                pem_armor("CERTIFICATE REQUEST", csr_der),
            )
            out.append(Outcome(item.source, cert))
        except FleetPKIError as exc:
            out.append(Outcome(item.source, error=str(exc)))
        except OSError as exc:
            out.append(Outcome(item.source, error=f"cannot write the key files: {exc.strerror}"))
    return out
