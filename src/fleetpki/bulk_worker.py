"""The worker-process side of bulk issuance: check and sign a chunk, or create dev-kit devices.

Workers hold the unlocked CA key in memory only (handed over through the pool's pipe, never a
file or argv) and die with the main process (PR_SET_PDEATHSIG), so a killed run leaves no worker
writing behind it. They never touch the inventory: the main process commits, then writes.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import gc
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fleetpki.bulk_inputs import MAX_CSR_BYTES, Item
from fleetpki.ca import CertificateAuthority
from fleetpki.csr import check_csr, check_generated_key, create_csr
from fleetpki.der import pem_armor
from fleetpki.errors import FleetPKIError
from fleetpki.fastsign import (
    DeviceTemplate,
    FastCertificate,
    TemplateError,
    device_csr_der,
    spki_der,
)
from fleetpki.formats import load_csr
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


# On the wire a certificate is a plain tuple: it pickles ten times faster than the dataclass.
Wire = tuple[str, bytes, int, str, str, int, int, bytes]
Refusal = tuple[str, str]


def to_wire(source: str, cert: FastCertificate) -> Wire:
    return (
        source,
        cert.der,
        cert.serial_number,
        cert.certificate_id,
        cert.project_slug,
        int(cert.not_before.timestamp()),
        int(cert.not_after.timestamp()),
        cert.spki,
    )


def from_wire(results: tuple[list[Wire], list[Refusal]]) -> list[Outcome]:
    """The outcomes of a worker's chunk, certificates first."""
    issued, refused = results
    times: dict[int, dt.datetime] = {}

    def when(stamp: int) -> dt.datetime:
        if stamp not in times:
            times[stamp] = dt.datetime.fromtimestamp(stamp, dt.UTC)
        return times[stamp]

    outcomes = [
        Outcome(source, FastCertificate(der, serial, cid, project, when(nb), when(na), spki))
        for source, der, serial, cid, project, nb, na, spki in issued
    ]
    outcomes += [Outcome(source, error=reason) for source, reason in refused]
    return outcomes


def device_file(out: Path | str, certificate_id: str, suffix: str) -> str:
    """OUT/<certificate ID>.<suffix>, e.g. ``dev-000001.crt.der``: one flat folder per run.

    Flat because creating a sub-folder per device costs more than the files themselves; a plain
    string because pathlib costs more than the write.
    """
    return f"{out}{os.sep}{certificate_id}.{suffix}"


def put(path: Path | str, data: bytes, mode: int = 0o644) -> None:
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
    # Certificates are made of acyclic objects; collecting every 700 allocations cost ~5%.
    gc.freeze()
    gc.set_threshold(100_000, 50, 50)
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
    now = utcnow()
    try:
        return DeviceTemplate(state.ca, days=state.days, now=now).issue
    except TemplateError:
        return lambda request: FastCertificate.from_der(
            state.ca.issue(request, days=state.days, now=now).public_bytes(
                serialization.Encoding.DER
            )
        )


def _read_csr(path: str) -> bytes:
    """``files.read_file`` with its messages, in three system calls (a third of its cost)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise FleetPKIError(f"{path}: no such file") from None
    except OSError as exc:
        raise FleetPKIError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = os.read(fd, MAX_CSR_BYTES + 1)
    except IsADirectoryError:
        raise FleetPKIError(f"{path} is a folder, not a file") from None
    except OSError as exc:
        raise FleetPKIError(f"cannot read {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_CSR_BYTES:
        raise FleetPKIError(f"{path} is too large (more than {MAX_CSR_BYTES} bytes)")
    return data


def _load_csr(data: bytes) -> x509.CertificateSigningRequest:
    # DER straight to the parser; PEM and anything odd through formats.load_csr (its messages).
    if data[:1] == b"\x30":
        try:
            return x509.load_der_x509_csr(data)
        except ValueError:
            pass
    return load_csr(data)


def sign_chunk(items: list[Item]) -> tuple[list[Wire], list[Refusal]]:
    """Check (``csr.check_csr``: proof of possession + policy) and sign each CSR of a chunk."""
    state = _state()
    issue = _issuer(state)
    issued: list[Wire] = []
    refused: list[Refusal] = []
    for item in items:
        try:
            data = item.data if item.data is not None else _read_csr(item.path or "")
            request = check_csr(_load_csr(data), state.project, item.certificate_id)
            issued.append(to_wire(item.source, issue(request)))
        except FleetPKIError as exc:
            refused.append((item.source, str(exc)))
        except Exception as exc:  # one odd CSR must not end the run
            refused.append((item.source, f"unexpected error ({type(exc).__name__})"))
    return issued, refused


def issue_chunk(items: list[Item]) -> tuple[list[Wire], list[Refusal]]:
    """Create key, CSR and certificate per device; the key files are written here, first.

    The key reaches the disk before its certificate is committed, so a committed certificate
    always has its key; the main process never sends an ID that already has a certificate.
    """
    state = _state()
    issue = _issuer(state)
    issued: list[Wire] = []
    refused: list[Refusal] = []
    for item in items:
        certificate_id = item.certificate_id or item.source
        try:
            key = generate_private_key(state.key_type)
            public_key = key.public_key()
            spki = spki_der(public_key)
            # The kit's CSR; the certificate is made from the key itself, under check_csr's
            # subject rules (no proof of possession to check: the key was made right here).
            if state.key_type is KeyType.P256:
                csr_der = device_csr_der(key, state.project, certificate_id, spki)  # type: ignore[arg-type]
            else:
                csr = create_csr(key, state.project, certificate_id)
                csr_der = csr.public_bytes(serialization.Encoding.DER)
            request = check_generated_key(public_key, state.project, certificate_id, spki)
            cert = issue(request)
            key_der = key.private_bytes(serialization.Encoding.DER, _PKCS8, _PLAIN)
            where = state.out
            put(device_file(where, certificate_id, "key.der"), key_der, 0o600)
            # The same bytes cryptography writes as PEM, without encoding the key twice.
            put(
                device_file(where, certificate_id, "key.pem"),
                pem_armor("PRIVATE KEY", key_der),
                0o600,
            )
            put(
                device_file(where, certificate_id, "csr.pem"),
                pem_armor("CERTIFICATE REQUEST", csr_der),
            )
            issued.append(to_wire(item.source, cert))
        except FleetPKIError as exc:
            refused.append((item.source, str(exc)))
        except OSError as exc:
            refused.append((item.source, f"cannot write the key files: {exc.strerror}"))
    return issued, refused
