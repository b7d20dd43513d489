"""Bulk issuance: production runs of device certificates on all cores, safe to kill and rerun.

Per chunk of CSRs, a worker process (``bulk_worker``) checks each one with ``csr.check_csr``
(proof of possession and the project policy, as ``fleetpki sign``) and signs it through a
``fastsign.DeviceTemplate`` (the DEVICE profile, byte-identical to the builder). The main process
looks the chunk's IDs up in the inventory, commits the new rows in one transaction, and only then
has its writer threads write the files and append the run journal (``bulk_journal``). So a
kill at any moment leaves no certificate file without its row; a rerun skips sources the journal
lists, re-writes the files of IDs committed but not journaled (from the inventory's DER), and
issues the rest. No ID is ever issued twice: the inventory's unique index on active device IDs
refuses it.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import datetime as dt
import fcntl
import gc
import hashlib
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as _json_string  # what json.dumps uses
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization

from fleetpki.bulk_inputs import Item
from fleetpki.bulk_journal import CA_CHAIN, Journal, ManifestStream
from fleetpki.bulk_worker import (
    Outcome,
    Wire,
    device_file,
    from_wire,
    init_worker,
    issue_chunk,
    put,
    sign_chunk,
    to_wire,
)
from fleetpki.ca import CertificateAuthority
from fleetpki.der import pem_armor
from fleetpki.errors import ConflictError, FleetPKIError, InputError
from fleetpki.fastsign import FastCertificate, spki_der, subject_text
from fleetpki.keys import KeyFileSigner, KeyType, load_private_key

if TYPE_CHECKING:
    from fleetpki.inventory import Inventory, IssuedRecord

CHUNK = 256  # CSRs per task sent to a worker
# Certificates per inventory transaction. Serials and fingerprints are random keys: every
# commit rewrites the index pages its rows touch, so larger transactions write fewer pages
# per row (SQLite: 27 -> 18 µs per row from 256 to 2,048 rows, measured at 40k rows).
COMMIT_ROWS = 2048
# File creation is kernel time, outside the GIL: one thread overlaps it with the main thread's
# work. Two threads creating files in one folder contend for its lock (+30 µs of kernel time
# per certificate, measured).
WRITER_THREADS = 1
SIGN_FILES = {"crt_pem": "crt.pem", "crt_der": "crt.der"}
ISSUE_FILES = {**SIGN_FILES, "key_pem": "key.pem", "key_der": "key.der", "csr_pem": "csr.pem"}


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


@dataclass
class _Written:
    """What a writer thread reports back for one batch."""

    rows: list[str]  # journal rows (JSON text), in order
    manifest: list[list[str]]  # the same devices as manifest.csv rows
    failures: list[tuple[str, str]]
    rewritten: bool


class BulkRun:
    """One bulk run of ``mode`` ("sign" or "issue") into ``out``; see the module docstring."""

    def __init__(
        self,
        *,
        inventory: Inventory | Callable[[], Inventory],
        ca: CertificateAuthority,
        project: str,
        out: Path,
        mode: str,
        days: int | None = None,
        workers: int | None = None,
        key_type: KeyType = KeyType.P256,
        chunk: int = CHUNK,
    ) -> None:
        # A callable is opened once the workers are signing: the inventory's imports
        # (SQLAlchemy, ~0.2 s) then overlap the first chunks instead of delaying them.
        self._inventory = inventory
        self.ca, self.project = ca, project
        self.out, self.mode, self.days, self.key_type = Path(out), mode, days, key_type
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.chunk = chunk
        self.summary = Summary(mode)
        self.files = ISSUE_FILES if mode == "issue" else SIGN_FILES
        self.journal = Journal(self.out, project, ca.name, list(self.files))
        self._writes: collections.deque[concurrent.futures.Future[_Written]] = collections.deque()
        self._manifest: ManifestStream | None = None
        self._pending: list[Wire] = []  # signed, to be committed together
        self._commit_rows = chunk
        self._unsettled: set[str] = set()  # bulk issue: IDs sent to workers, not committed yet
        self._times: dict[int, Any] = {}
        self._expiry_text: dict[Any, str] = {}
        self._chain_name = CA_CHAIN

    @property
    def inventory(self) -> Inventory:
        if callable(self._inventory):
            self._inventory = self._inventory()
        return self._inventory

    # -- setup --------------------------------------------------------------------------------

    def _prepare_out(self) -> set[str]:
        """Check OUT belongs to this run (same mode, project, CA); return the journal's done."""
        run = {"mode": self.mode, "project": self.project, "ca": self.ca.name}
        marker = self.out / ".bulk-run.json"
        try:
            previous = json.loads(marker.read_text())
        except (OSError, ValueError):  # absent, or cut short by a kill
            previous = None
        if isinstance(previous, dict):
            if previous != run:
                raise ConflictError(
                    f"{self.out} holds a bulk {previous.get('mode')} run for project "
                    f"{previous.get('project')!r} with CA {previous.get('ca')!r}: use another --out"
                )
        else:
            put(marker, json.dumps(run).encode() + b"\n")
        # A folder without a journal row yet gets its manifests written as the run goes;
        # otherwise they are made from the journal at the end (each device once).
        fresh = not self.journal.path.exists() or self.journal.path.stat().st_size == 0
        self.journal.end_cut_row()
        if fresh:
            self._manifest = self.journal.manifest_stream()
        chain = [self.ca.certificate, *self.ca.chain]
        put(
            self.out / CA_CHAIN,
            b"".join(
                pem_armor("CERTIFICATE", c.public_bytes(serialization.Encoding.DER)) for c in chain
            ),
        )
        return self.journal.done()

    # -- the run ------------------------------------------------------------------------------

    def run(self, items: Iterable[Item], progress: Callable[[int], None] | None = None) -> Summary:
        """Issue everything in ``items``; returns the Summary (refused items do not raise).

        Raises ConflictError if another run holds OUT or OUT belongs to a different run,
        InputError if the CA key is on a token (workers need the key itself).
        """
        if not isinstance(self.ca.signer, KeyFileSigner):
            # Worker processes need the key itself; a token's key never leaves the token.
            raise InputError(f"CA {self.ca.name!r} signs on a token: bulk needs a CA key file")
        started = time.monotonic()
        advance = progress or (lambda n: None)
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            lock = open(self.out / ".bulk.lock", "a")  # held for the whole run
        except OSError as exc:
            raise FleetPKIError(f"cannot write in {self.out}: {exc.strerror}") from None
        # The main process makes many short-lived, acyclic objects per certificate: collecting
        # cycles every 700 allocations is wasted work during the run.
        threshold = gc.get_threshold()
        gc.set_threshold(100_000, 50, 50)
        with lock, contextlib.ExitStack() as restore:
            restore.callback(gc.set_threshold, *threshold)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise ConflictError(f"another bulk run is writing to {self.out}") from None
            done = self._prepare_out()
            if self._manifest is not None:
                restore.callback(self._manifest.close)  # a failed run leaves only its .tmp files
            with (
                open(self.journal.path, "a", encoding="utf-8") as journal,
                concurrent.futures.ThreadPoolExecutor(WRITER_THREADS) as writers,
            ):
                self._loop(items, done, advance, journal, writers)
            if self._manifest is not None:
                self._manifest.finish(self.summary.failures)
            else:
                self.journal.write_manifests(self.summary.failures)
            self.summary.seconds = time.monotonic() - started
        return self.summary

    def _loop(
        self,
        items: Iterable[Item],
        done: set[str],
        advance: Callable[[int], None],
        journal: IO[str],
        writers: concurrent.futures.ThreadPoolExecutor,
    ) -> None:
        key_der = self.ca.signer.builder_key().private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        init_args = (
            self.ca.name,
            self.ca.certificate.public_bytes(serialization.Encoding.DER),
            key_der,  # in memory only: the pool's pipe, never a file or argv
            self.project,
            self.days,
            str(self.out),
            self.key_type.value,
        )
        work = issue_chunk if self.mode == "issue" else sign_chunk
        # fork: workers start at once; the pool exists before any thread of ours does.
        with multiprocessing.get_context("fork").Pool(self.workers, init_worker, init_args) as pool:
            window: collections.deque[Any] = collections.deque()  # bounded: flat memory
            for chunk in self._chunks(items, done, advance, writers):
                window.append(pool.apply_async(work, (chunk,)))
                if len(window) > 4 * self.workers:
                    advance(self._absorb(window.popleft().get(), writers))
                    self._drain(journal, block=False)
            # The input is done: commit each result as it comes, so that writing the files
            # of the last ones overlaps the workers' last chunks.
            while window:
                advance(self._absorb(window.popleft().get(), writers))
                self._commit_pending(writers)
                self._drain(journal, block=False)
        self._drain(journal, block=True)

    def _chunks(
        self,
        items: Iterable[Item],
        done: set[str],
        advance: Callable[[int], None],
        writers: concurrent.futures.ThreadPoolExecutor,
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
                yield from self._unissued(chunk, advance, writers)
                chunk = []
        if chunk:
            yield from self._unissued(chunk, advance, writers)

    def _unissued(
        self,
        chunk: list[Item],
        advance: Callable[[int], None],
        writers: concurrent.futures.ThreadPoolExecutor,
    ) -> Iterator[list[Item]]:
        """``bulk issue``: an ID that has a certificate is finished here, never given a new key."""
        if self.mode != "issue":
            yield chunk
            return
        ids = [item.certificate_id or item.source for item in chunk]
        existing = self.inventory.active_device_certificates(self.project, ids)
        finished = []
        fresh = []
        for item, cid in zip(chunk, ids, strict=True):
            if cid in self._unsettled:  # sent already and not committed yet: never a 2nd key
                self._fail(item.source, f"certificate ID {cid!r} is repeated")
            elif cid not in existing:
                fresh.append(item)
                self._unsettled.add(cid)
            else:
                cert = FastCertificate.from_der(existing[cid])
                if self._key_matches(cid, cert):
                    finished.append(Outcome(item.source, cert))
                else:
                    self._fail(
                        item.source,
                        f"certificate ID {cid!r} already has a certificate (serial "
                        f"{cert.serial_hex}) whose key is not in {self.out}; revoke it or "
                        "choose other IDs",
                    )
        if finished:
            pairs = [(o.source, self._record_of(o.cert)) for o in finished if o.cert is not None]
            self._writes.append(writers.submit(self._write_files, pairs, True))
        advance(len(chunk) - len(fresh))
        if fresh:
            yield fresh

    def _key_matches(self, certificate_id: str, cert: FastCertificate) -> bool:
        try:
            path = Path(device_file(self.out, certificate_id, "key.der"))
            key = load_private_key(path.read_bytes())
        except (OSError, FleetPKIError):
            return False
        return spki_der(key.public_key()) == cert.spki

    def _fail(self, source: str, reason: str) -> None:
        self.summary.failures.append((source, reason))

    def _absorb(
        self,
        results: tuple[list[Wire], list[tuple[str, str]]],
        writers: concurrent.futures.ThreadPoolExecutor,
    ) -> int:
        """Take a worker's chunk; commit when enough is pending. Returns the chunk's size."""
        issued, refused = results
        for source, reason in refused:
            self._fail(source, reason)
            if self.mode == "issue":  # an item's source is its ID there; it is settled
                self._unsettled.discard(source)
        self._pending += issued
        if len(self._pending) >= self._commit_rows:
            self._commit_pending(writers)
            # Small first, so the first files appear at once; then the most efficient size.
            self._commit_rows = min(2 * self._commit_rows, COMMIT_ROWS)
        return len(issued) + len(refused)

    def _commit_pending(self, writers: concurrent.futures.ThreadPoolExecutor) -> None:
        """Commit the pending certificates in one transaction, then hand their files over."""
        issued, self._pending = self._pending, []
        if not issued:
            return
        if self.mode == "issue":
            self._unsettled.difference_update(wire[3] for wire in issued)
        # The common case first: the chunk's IDs are distinct and none has a certificate yet,
        # so the batch insert succeeds (the unique index on active IDs would refuse it
        # otherwise, inserting nothing) and no look-up is needed.
        if len({wire[3] for wire in issued}) == len(issued):
            records = [self._record(wire) for wire in issued]
            try:
                self.inventory.record_batch(records)
            except ConflictError:
                pass
            else:
                pairs = [(wire[0], record) for wire, record in zip(issued, records, strict=True)]
                self._writes.append(writers.submit(self._write_files, pairs, False))
                return
        self._absorb_slowly(from_wire((issued, [])), writers)

    def _absorb_slowly(
        self, outcomes: list[Outcome], writers: concurrent.futures.ThreadPoolExecutor
    ) -> None:
        """A chunk with repeated IDs, or IDs committed by an interrupted run: one by one."""
        unique: list[Outcome] = []
        seen: set[str] = set()
        for outcome in outcomes:
            cert = outcome.cert
            assert cert is not None
            if cert.certificate_id in seen:
                self._fail(outcome.source, f"certificate ID {cert.certificate_id!r} is repeated")
                continue
            seen.add(cert.certificate_id)
            unique.append(outcome)
        existing = self.inventory.active_device_certificates(self.project, seen)
        new: list[Outcome] = []
        reused: list[Outcome] = []
        for outcome in unique:
            cert = outcome.cert
            assert cert is not None
            stored = existing.get(cert.certificate_id)
            if stored is None:
                new.append(outcome)
                continue
            # Issued by an interrupted run: the copy signed now is dropped, never recorded.
            previous = FastCertificate.from_der(stored)
            if previous.spki == cert.spki:
                reused.append(Outcome(outcome.source, previous))
            else:
                self._fail(
                    outcome.source,
                    f"certificate ID {cert.certificate_id!r} already has an active certificate "
                    f"(serial {previous.serial_hex}) for another key",
                )
        committed = self._commit(new)
        if committed:
            self._writes.append(writers.submit(self._write_files, committed, False))
        if reused:
            pairs = [(o.source, self._record_of(o.cert)) for o in reused if o.cert is not None]
            self._writes.append(writers.submit(self._write_files, pairs, True))

    def _record(self, wire: Wire) -> IssuedRecord:
        """The inventory row of a certificate as a worker sent it."""
        from fleetpki.inventory import IssuedRecord

        _source, der, serial, cid, project, not_before, not_after, _spki = wire
        return IssuedRecord(
            f"{serial:x}",
            "device",
            project,
            cid,
            subject_text(project, cid),
            self.ca.name,
            self._time(not_before),
            self._time(not_after),
            hashlib.sha256(der).hexdigest(),
            der,
        )

    def _time(self, stamp: int) -> dt.datetime:
        when = self._times.get(stamp)
        if when is None:  # a chunk's certificates share their validity: a few distinct values
            when = self._times[stamp] = dt.datetime.fromtimestamp(stamp, dt.UTC)
        return when

    def _record_of(self, cert: FastCertificate) -> IssuedRecord:
        return self._record(to_wire("", cert))

    def _commit(self, new: list[Outcome]) -> list[tuple[str, IssuedRecord]]:
        """Record ``new`` in one transaction; on a clash, one by one. Returns what is recorded."""
        pairs = [(o.source, self._record_of(o.cert)) for o in new if o.cert is not None]
        if not pairs:
            return []
        try:
            self.inventory.record_batch([record for _, record in pairs])
            return pairs
        except ConflictError:
            pass
        kept = []
        for source, record in pairs:
            try:
                self.inventory.record([record], action="bulk-issue")
                kept.append((source, record))
            except ConflictError as exc:
                self._fail(source, str(exc))
        return kept

    def _write_files(self, pairs: list[tuple[str, IssuedRecord]], rewritten: bool) -> _Written:
        """Writer thread: certificate files of committed rows, then their journal rows."""
        written = _Written([], [], [], rewritten)
        out, names, chain = self.out, list(self.files.values()), self._chain_name
        for source, record in pairs:
            cid = record.certificate_id or ""
            try:
                put(device_file(out, cid, "crt.pem"), pem_armor("CERTIFICATE", record.der))
                put(device_file(out, cid, "crt.der"), record.der)
            except OSError as exc:
                reason = f"certificate recorded (serial {record.serial}), files not written: "
                written.failures.append((source, reason + str(exc.strerror)))
                continue
            expiry = self._expiry_text.get(record.not_after)
            if expiry is None:
                expiry = self._expiry_text[record.not_after] = (
                    f"{record.not_after:%Y-%m-%dT%H:%M:%SZ}"
                )
            files = [f"{cid}.{name}" for name in names]
            written.rows.append(
                _journal_line(
                    cid, record.serial, record.fingerprint_sha256, expiry, source, self.files
                )
            )
            written.manifest.append(
                [cid, record.serial, record.fingerprint_sha256, expiry, source, *files, chain]
            )
        return written

    def _drain(self, journal: IO[str], *, block: bool) -> None:
        """Journal the batches whose files are written, in order."""
        while self._writes and (block or self._writes[0].done()):
            written = self._writes.popleft().result()
            journal.write("".join(written.rows))
            journal.flush()
            if self._manifest is not None:
                self._manifest.add(written.rows, written.manifest)
            self.summary.failures.extend(written.failures)
            if written.rewritten:
                self.summary.rewritten += len(written.rows)
            else:
                self.summary.issued += len(written.rows)


def _journal_line(
    cid: str, serial: str, fingerprint: str, expiry: str, source: str, files: dict[str, str]
) -> str:
    """``json.dumps`` of the journal row (same text), without encoding a dict per device."""
    text = _json_string(cid)[1:-1]
    listed = ", ".join(f'"{key}": "{text}.{name}"' for key, name in files.items())
    return (
        f'{{"certificate_id": "{text}", "serial": "{serial}", '
        f'"fingerprint_sha256": "{fingerprint}", "not_after": "{expiry}", '
        f'"source": {_json_string(source)}, "files": {{{listed}}}}}\n'
    )
