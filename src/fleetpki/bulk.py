"""Bulk issuance: production runs of device certificates on all cores, safe to kill and rerun.

Per chunk of CSRs, a worker process checks each one with ``csr.check_csr`` (proof of possession
and the project policy, as ``fleetpki sign``) and signs it through a ``fastsign.DeviceTemplate``
(the DEVICE profile, byte-identical to the builder). The main process then looks the IDs up in
the inventory, commits the new rows in one transaction, and only then writes the files and
appends the run journal (``.journal.jsonl``). So a kill at any moment leaves no certificate file
without its row; a rerun skips sources the journal lists, re-writes the files of IDs committed
but not journaled (from the inventory's DER), and issues the rest.

``bulk issue`` (development kits) writes each new private key (0600) in the worker *before*
the certificate is committed, and never generates a key for an ID that already has a
certificate, so a committed certificate's key is never overwritten.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import fcntl
import json
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fleetpki.bulk_inputs import Item
from fleetpki.ca import CertificateAuthority
from fleetpki.csr import check_csr, create_csr
from fleetpki.errors import ConflictError, FleetPKIError, InputError
from fleetpki.fastsign import (
    DeviceTemplate,
    FastCertificate,
    TemplateError,
    device_csr_der,
    spki_der,
    subject_text,
)
from fleetpki.files import read_file
from fleetpki.formats import load_csr, pem_armor
from fleetpki.inventory import Inventory, IssuedRecord
from fleetpki.keys import KeyFileSigner, KeyType, generate_private_key, load_private_key
from fleetpki.profiles import utcnow

CHUNK = 256
JOURNAL = ".journal.jsonl"
MANIFEST_FIELDS = ("certificate_id", "serial", "fingerprint_sha256", "not_after", "source")
SIGN_FILES = ("crt_pem", "crt_der", "chain_pem")
ISSUE_FILES = (*SIGN_FILES, "key_pem", "key_der", "csr_pem")
FILE_NAMES = {
    "crt_pem": "crt.pem",
    "crt_der": "crt.der",
    "chain_pem": "chain.pem",
    "key_pem": "key.pem",
    "key_der": "key.der",
    "csr_pem": "csr.pem",
}


@dataclass(slots=True)
class Outcome:
    """What became of one item: a certificate, or the one-line reason it was refused."""

    source: str
    cert: FastCertificate | None = None
    error: str | None = None


@dataclass
class Summary:
    """Counts of one run; ``failures`` lists (source, reason)."""

    mode: str
    total: int = 0
    issued: int = 0  # new certificates, this run
    rewritten: int = 0  # committed by an interrupted run; files written now
    skipped: int = 0  # complete in an earlier run (journal)
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        rate = self.issued / self.seconds if self.seconds > 0 else 0.0
        return {
            "mode": self.mode,
            "total": self.total,
            "issued": self.issued,
            "rewritten": self.rewritten,
            "skipped": self.skipped,
            "failed": len(self.failures),
            "failures": [{"source": s, "reason": r} for s, r in self.failures],
            "seconds": round(self.seconds, 3),
            "certificates_per_second": round(rate, 1),
        }


# --- worker side -----------------------------------------------------------------------------


@dataclass
class _Worker:
    ca: CertificateAuthority
    project: str
    days: int | None
    out: Path
    key_type: KeyType


_WORKER: _Worker | None = None


def _die_with_parent() -> None:
    # A SIGKILLed run must not leave workers writing key files behind it (Linux only).
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _init_worker(
    name: str, cert_der: bytes, key_der: bytes, project: str, days: int | None, out: str, kt: str
) -> None:
    global _WORKER
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process handles Ctrl-C
    certificate = x509.load_der_x509_certificate(cert_der)
    signer = KeyFileSigner(load_private_key(key_der))
    _WORKER = _Worker(
        CertificateAuthority(name, certificate, signer), project, days, Path(out), KeyType(kt)
    )


def _issuer(state: _Worker) -> Callable[[Any], FastCertificate]:
    try:
        return DeviceTemplate(state.ca, days=state.days, now=utcnow()).issue
    except TemplateError:  # a profile the template cannot reproduce: the builder, slower
        return lambda request: FastCertificate.from_der(
            state.ca.issue(request, days=state.days).public_bytes(serialization.Encoding.DER)
        )


def _sign_chunk(items: list[Item]) -> list[Outcome]:
    state = _WORKER
    assert state is not None
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


def _put(path: Path, data: bytes, mode: int) -> None:
    """Write a small file in one call; O_NOFOLLOW so a planted symlink cannot redirect it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        if mode == 0o600:
            os.fchmod(fd, mode)  # an existing file keeps its old mode otherwise
        os.write(fd, data)
    finally:
        os.close(fd)


def _issue_chunk(items: list[Item]) -> list[Outcome]:
    state = _WORKER
    assert state is not None
    issue = _issuer(state)
    out = []
    for item in items:
        certificate_id = item.certificate_id or item.source
        try:
            folder = device_folder(state.out, certificate_id)
            key = generate_private_key(state.key_type)
            if state.key_type is KeyType.P256:
                csr_der = device_csr_der(key, state.project, certificate_id)  # type: ignore[arg-type]
                csr = x509.load_der_x509_csr(csr_der)
            else:
                csr = create_csr(key, state.project, certificate_id)
                csr_der = csr.public_bytes(serialization.Encoding.DER)
            request = check_csr(csr, state.project, certificate_id)  # never skipped
            cert = issue(request)
            # The key goes to disk before its certificate is committed: a committed
            # certificate always has its key (see the module docstring).
            folder.mkdir(exist_ok=True)
            pkcs8 = serialization.PrivateFormat.PKCS8
            none = serialization.NoEncryption()
            _put(
                folder / "key.pem",
                key.private_bytes(serialization.Encoding.PEM, pkcs8, none),
                0o600,
            )
            _put(
                folder / "key.der",
                key.private_bytes(serialization.Encoding.DER, pkcs8, none),
                0o600,
            )
            _put(folder / "csr.pem", pem_armor("CERTIFICATE REQUEST", csr_der), 0o644)
            out.append(Outcome(item.source, cert))
        except FleetPKIError as exc:
            out.append(Outcome(item.source, error=str(exc)))
        except OSError as exc:
            out.append(Outcome(item.source, error=f"cannot write files: {exc.strerror}"))
    return out


def device_folder(out: Path, certificate_id: str) -> Path:
    """OUT/<certificate ID>; raises InputError for IDs that are not usable folder names."""
    if certificate_id in (".", ".."):
        raise InputError(f"certificate ID {certificate_id!r} cannot name a folder")
    return out / certificate_id


# --- main side -------------------------------------------------------------------------------


class BulkRun:
    """One bulk run of ``mode`` ("sign" or "issue") into ``out``; see the module docstring."""

    def __init__(
        self,
        *,
        inventory: Inventory,
        ca: CertificateAuthority,
        project: str,
        out: Path,
        mode: str,
        days: int | None = None,
        workers: int | None = None,
        key_type: KeyType = KeyType.P256,
        chunk: int = CHUNK,
    ) -> None:
        self.inventory, self.ca, self.project = inventory, ca, project
        self.out, self.mode, self.days, self.key_type = Path(out), mode, days, key_type
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.chunk = chunk
        self.summary = Summary(mode)
        self.files = ISSUE_FILES if mode == "issue" else SIGN_FILES
        issuers = [ca.certificate, *ca.chain]
        self._intermediates = b"".join(
            pem_armor("CERTIFICATE", c.public_bytes(serialization.Encoding.DER))
            for c in issuers
            if c.subject != c.issuer
        )
        self._ca_chain = b"".join(
            pem_armor("CERTIFICATE", c.public_bytes(serialization.Encoding.DER)) for c in issuers
        )

    # -- setup --------------------------------------------------------------------------------

    def _prepare_out(self) -> set[str]:
        """Check OUT belongs to this run (same mode, project, CA); return the journal's done."""
        run = {"mode": self.mode, "project": self.project, "ca": self.ca.name}
        marker = self.out / ".bulk-run.json"
        if marker.exists():
            previous = json.loads(marker.read_text())
            if previous != run:
                raise ConflictError(
                    f"{self.out} holds a bulk {previous.get('mode')} run for project "
                    f"{previous.get('project')!r} with CA {previous.get('ca')!r}: use another --out"
                )
        else:
            marker.write_text(json.dumps(run) + "\n")
        (self.out / "ca-chain.pem").write_bytes(self._ca_chain)
        done = set()
        for row in self._journal_rows():
            if (self.out / row["files"]["crt_der"]).exists():
                done.add(row["source"])
        return done

    def _journal_rows(self) -> Iterator[dict[str, Any]]:
        path = self.out / JOURNAL
        if not path.exists():
            return
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                with contextlib.suppress(ValueError):  # a line cut short by a kill
                    row = json.loads(line)
                    if isinstance(row, dict) and "source" in row:
                        yield row

    # -- the run --------------------------------------------------------------------------

    def run(self, items: Iterable[Item], progress: Callable[[int], None] | None = None) -> Summary:
        """Issue everything in ``items``; returns the Summary (failures do not raise)."""
        started = time.monotonic()
        advance = progress or (lambda n: None)
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            lock = open(self.out / ".bulk.lock", "a")  # held for the whole run
        except OSError as exc:
            raise FleetPKIError(f"cannot write in {self.out}: {exc.strerror}") from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            raise ConflictError(f"another bulk run is writing to {self.out}") from None
        try:
            return self._run_locked(items, advance, started)
        finally:
            lock.close()

    def _run_locked(
        self, items: Iterable[Item], advance: Callable[[int], None], started: float
    ) -> Summary:
        done = self._prepare_out()
        key_der = self.ca.signer.builder_key().private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        init_args = (
            self.ca.name,
            self.ca.certificate.public_bytes(serialization.Encoding.DER),
            key_der,  # in memory only: the pipe to the workers, never a file or argv
            self.project,
            self.days,
            str(self.out),
            self.key_type.value,
        )
        work = _issue_chunk if self.mode == "issue" else _sign_chunk
        context = multiprocessing.get_context("fork")
        with (
            open(self.out / JOURNAL, "a", encoding="utf-8") as journal,
            context.Pool(self.workers, _init_worker, init_args) as pool,
        ):
            # A bounded window of chunks in flight: memory stays flat for any input size.
            window: collections.deque[Any] = collections.deque()
            for chunk in self._chunks(items, done, advance, journal):
                window.append(pool.apply_async(work, (chunk,)))
                if len(window) >= 2 * self.workers + 1:
                    advance(self._absorb(window.popleft().get(), journal))
            while window:
                advance(self._absorb(window.popleft().get(), journal))
        self.summary.seconds = time.monotonic() - started
        self._write_manifests()
        return self.summary

    def _chunks(
        self,
        items: Iterable[Item],
        done: set[str],
        advance: Callable[[int], None],
        journal: Any,
    ) -> Iterator[list[Item]]:
        chunk: list[Item] = []
        for item in items:
            self.summary.total += 1
            if item.source in done:
                self.summary.skipped += 1
                advance(1)
                continue
            chunk.append(item)
            if len(chunk) >= self.chunk:
                yield from self._pending(chunk, advance, journal)
                chunk = []
        if chunk:
            yield from self._pending(chunk, advance, journal)

    def _pending(
        self, chunk: list[Item], advance: Callable[[int], None], journal: Any
    ) -> Iterator[list[Item]]:
        """``bulk issue``: IDs with a certificate already are finished here, never re-keyed."""
        if self.mode != "issue":
            yield chunk
            return
        ids = [item.certificate_id or item.source for item in chunk]
        existing = self.inventory.active_device_certificates(self.project, ids)
        fresh = [item for item, cid in zip(chunk, ids, strict=True) if cid not in existing]
        finished = []
        for item, cid in zip(chunk, ids, strict=True):
            if cid in existing:
                cert = FastCertificate.from_der(existing[cid])
                if self._key_matches(cid, cert):
                    finished.append(Outcome(item.source, cert))
                else:
                    self._fail(
                        item.source,
                        f"certificate ID {cid!r} already has a certificate (serial "
                        f"{cert.serial_hex}) whose key is not in {self.out / cid}; revoke it "
                        "or choose other IDs",
                    )
        if finished:
            self._write(finished, journal, rewritten=True)
        advance(len(chunk) - len(fresh))
        if fresh:
            yield fresh

    def _key_matches(self, certificate_id: str, cert: FastCertificate) -> bool:
        try:
            key = load_private_key((self.out / certificate_id / "key.der").read_bytes())
        except (OSError, FleetPKIError):
            return False
        return spki_der(key.public_key()) == cert.spki

    def _fail(self, source: str, reason: str) -> None:
        self.summary.failures.append((source, reason))

    def _absorb(self, outcomes: list[Outcome], journal: Any) -> int:
        """Commit a worker's chunk, then write its files; returns how many items it held."""
        signed = []
        for outcome in outcomes:
            if outcome.cert is None:
                self._fail(outcome.source, outcome.error or "refused")
            else:
                signed.append(outcome)
        ids = {o.cert.certificate_id for o in signed if o.cert is not None}
        existing = self.inventory.active_device_certificates(self.project, ids) if ids else {}
        new: list[Outcome] = []
        reused: list[Outcome] = []
        seen: set[str] = set()
        for outcome in signed:
            cert = outcome.cert
            assert cert is not None
            if cert.certificate_id in seen:
                self._fail(outcome.source, f"certificate ID {cert.certificate_id!r} is repeated")
                continue
            seen.add(cert.certificate_id)
            stored = existing.get(cert.certificate_id)
            if stored is None:
                new.append(outcome)
                continue
            # Issued before (an interrupted run): the signed copy here is dropped unrecorded.
            previous = FastCertificate.from_der(stored)
            if previous.spki == cert.spki:
                reused.append(Outcome(outcome.source, previous))
            else:
                self._fail(
                    outcome.source,
                    f"certificate ID {cert.certificate_id!r} already has an active certificate "
                    f"(serial {previous.serial_hex}) for another key",
                )
        new = self._commit(new)
        self._write(new, journal)
        self._write(reused, journal, rewritten=True)
        return len(outcomes)

    def _record(self, cert: FastCertificate) -> IssuedRecord:
        return IssuedRecord(
            serial=cert.serial_hex,
            kind="device",
            project=cert.project_slug,
            certificate_id=cert.certificate_id,
            subject=subject_text(cert.project_slug, cert.certificate_id),
            issuer_ca=self.ca.name,
            not_before=cert.not_before,
            not_after=cert.not_after,
            fingerprint_sha256=cert.fingerprint(),
            der=cert.der,
        )

    def _commit(self, new: list[Outcome]) -> list[Outcome]:
        """Record ``new`` in one transaction; on a clash, one by one. Returns the recorded."""
        records = [self._record(o.cert) for o in new if o.cert is not None]
        if not records:
            return []
        try:
            self.inventory.record(records, action="bulk-issue", check_active=False)
            return new
        except ConflictError:
            pass
        kept = []
        for outcome, record in zip(new, records, strict=True):
            try:
                self.inventory.record([record], action="bulk-issue")
                kept.append(outcome)
            except ConflictError as exc:
                self._fail(outcome.source, str(exc))
        return kept

    def _write(self, outcomes: list[Outcome], journal: Any, *, rewritten: bool = False) -> None:
        rows = []
        for outcome in outcomes:
            cert = outcome.cert
            assert cert is not None
            try:
                folder = device_folder(self.out, cert.certificate_id)
                folder.mkdir(exist_ok=True)
                pem = pem_armor("CERTIFICATE", cert.der)
                fingerprint = cert.fingerprint()
                _put(folder / "crt.pem", pem, 0o644)
                _put(folder / "crt.der", cert.der, 0o644)
                _put(folder / "chain.pem", pem + self._intermediates, 0o644)
            except (OSError, FleetPKIError) as exc:
                reason = getattr(exc, "strerror", None) or str(exc)
                self._fail(outcome.source, f"certificate recorded, files not written: {reason}")
                continue
            if rewritten:
                self.summary.rewritten += 1
            else:
                self.summary.issued += 1
            files = {k: f"{cert.certificate_id}/{FILE_NAMES[k]}" for k in self.files}
            row = {
                "certificate_id": cert.certificate_id,
                "serial": cert.serial_hex,
                "fingerprint_sha256": fingerprint,
                "not_after": f"{cert.not_after:%Y-%m-%dT%H:%M:%SZ}",
                "source": outcome.source,
                "files": files,
            }
            rows.append(json.dumps(row) + "\n")
        journal.write("".join(rows))
        journal.flush()

    def _write_manifests(self) -> None:
        """manifest.csv and manifest.json from the journal: every device of the run so far."""
        import csv

        csv_tmp, json_tmp = self.out / ".manifest.csv.tmp", self.out / ".manifest.json.tmp"
        with (
            open(csv_tmp, "w", newline="", encoding="utf-8") as csv_handle,
            open(json_tmp, "w", encoding="utf-8") as json_handle,
        ):
            writer = csv.writer(csv_handle)
            writer.writerow([*MANIFEST_FIELDS, *self.files])
            head = {"project": self.project, "ca": self.ca.name}
            json_handle.write(json.dumps(head)[:-1] + ', "devices": [')
            first = True
            for row in self._journal_rows():
                writer.writerow(
                    [*(row[k] for k in MANIFEST_FIELDS), *(row["files"][k] for k in self.files)]
                )
                json_handle.write(("\n  " if first else ",\n  ") + json.dumps(row))
                first = False
            json_handle.write("\n]}\n")
        with open(self.out / "failures.csv", "w", newline="", encoding="utf-8") as handle:
            failures = csv.writer(handle)
            failures.writerow(["source", "reason"])
            failures.writerows(self.summary.failures)
        os.replace(csv_tmp, self.out / "manifest.csv")
        os.replace(json_tmp, self.out / "manifest.json")
