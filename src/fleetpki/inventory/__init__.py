"""The inventory: one row per certificate ever issued, and an audit log.

A row is committed before its certificate file is written; serials and fingerprints are unique
constraints, and at most one active device certificate exists per (project, certificate ID).
"""

from __future__ import annotations

import builtins
import datetime as dt
import functools
import json
import operator
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from fleetpki import db
from fleetpki.errors import ConflictError, NotFoundError
from fleetpki.inventory.schema import audit_log, certificates, metadata
from fleetpki.naming import parse_device_subject

MIGRATIONS = Path(__file__).parent / "migrations"
HEAD = "0001"

__all__ = ["HEAD", "Inventory", "IssuedRecord", "audit_log", "certificates", "metadata"]


class IssuedRecord(NamedTuple):
    """What the inventory stores about one certificate (a tuple: bulk runs make millions)."""

    serial: str
    kind: str
    project: str | None
    certificate_id: str | None
    subject: str
    issuer_ca: str
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint_sha256: str
    der: bytes
    status: str = "active"

    @classmethod
    def from_certificate(
        cls, cert: x509.Certificate, *, kind: str, issuer_ca: str, der: bytes | None = None
    ) -> IssuedRecord:
        der = der if der is not None else cert.public_bytes(serialization.Encoding.DER)
        project = certificate_id = None
        if kind == "device":
            name = parse_device_subject(cert.subject)
            project, certificate_id = name.project_slug, name.certificate_id
        return cls(
            serial=f"{cert.serial_number:x}",
            kind=kind,
            project=project,
            certificate_id=certificate_id,
            subject=cert.subject.rfc4514_string(),
            issuer_ca=issuer_ca,
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
            der=der,
        )

    def row(self, now: dt.datetime) -> dict[str, Any]:
        return {**self._asdict(), "created_at": now}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite hands back naive datetimes; everything stored is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def _conflict(exc: sa.exc.IntegrityError) -> ConflictError:
    text = db.short_db_error(exc)
    if "serial" in text:
        return ConflictError("serial number collision; retry")
    if "fingerprint" in text:
        return ConflictError("this exact certificate is already in the inventory")
    return ConflictError("an active certificate exists for this certificate ID (use --renew)")


_ROW_KEYS = (*IssuedRecord._fields, "created_at")


@functools.lru_cache(maxsize=8)
def _bulk_insert(
    dialect: sa.Dialect,
) -> tuple[str, bool, list[str], Any, list[tuple[int, Any, bool]]]:
    """The certificates INSERT compiled for ``dialect`` once, with its columns' converters."""
    compiled = certificates.insert().compile(dialect=dialect, column_keys=list(_ROW_KEYS))
    names = list(compiled.positiontup or ()) if compiled.positional else list(_ROW_KEYS)
    pick = operator.itemgetter(*(_ROW_KEYS.index(name) for name in names))
    converters = []
    for index, name in enumerate(names):
        column_type = certificates.c[name].type
        process = column_type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            converters.append((index, process, isinstance(column_type, sa.DateTime)))
    return compiled.string, compiled.positional, names, pick, converters


def _insert_many(conn: sa.Connection, records: Sequence[IssuedRecord], now: dt.datetime) -> None:
    """``conn.execute(certificates.insert(), [r.row(now) for r in records])``, less per-row work.

    Same statement, same stored values: each column's bind processor (the dialect's own) still
    converts every value, but a bulk batch repeats the same few datetimes in every row, so each
    distinct one is converted once; the driver's executemany then gets plain tuples or dicts.
    """
    sql, positional, names, pick, converters = _bulk_insert(conn.dialect)
    steps = [
        (index, functools.lru_cache(maxsize=64)(process) if is_datetime else process)
        for index, process, is_datetime in converters
    ]
    tail = (now,)
    values = []
    for record in records:
        row = list(pick(record + tail))
        for index, process in steps:
            row[index] = process(row[index])
        values.append(row)
    params: list[Any] = (
        [tuple(v) for v in values]
        if positional
        else [dict(zip(names, v, strict=True)) for v in values]
    )
    conn.exec_driver_sql(sql, params)


class Inventory:
    """Issued certificates and the audit log, in SQLite (default) or any SQLAlchemy URL."""

    def __init__(self, url: str) -> None:
        # 64 MiB of SQLite pages (the default is 2 MiB): the random-keyed indexes (serials,
        # fingerprints) of an inventory of millions stay in memory during bulk runs. The
        # inventory is used by one CLI process with a connection or two.
        self.engine = db.create_engine(url, sqlite_cache_kib=65536)
        self.reader = db.reader(self.engine)
        db.upgrade(self.engine, MIGRATIONS, HEAD)

    @classmethod
    def at(cls, path: Path) -> Inventory:
        return cls(db.sqlite_url(path))

    def close(self) -> None:
        self.engine.dispose()

    # -- writes ------------------------------------------------------------------------------

    def record(
        self,
        records: Sequence[IssuedRecord],
        *,
        renew: bool = False,
        action: str = "issue",
    ) -> None:
        """Insert ``records`` in one transaction, or none of them.

        A device record for a (project, certificate ID) that has an active certificate raises
        ConflictError unless ``renew``, which marks the old one superseded in the same transaction.
        """
        now = _now()
        try:
            with self.engine.begin() as conn:
                for rec in records:
                    if rec.kind == "device":
                        self._supersede_or_refuse(conn, rec, renew, now)
                conn.execute(certificates.insert(), [rec.row(now) for rec in records])
                conn.execute(
                    audit_log.insert(),
                    [
                        {
                            "time": now,
                            "action": action,
                            "serial": rec.serial,
                            "detail": json.dumps(
                                {
                                    "subject": rec.subject,
                                    "issuer_ca": rec.issuer_ca,
                                    "kind": rec.kind,
                                }
                            ),
                        }
                        for rec in records
                    ],
                )
        except sa.exc.IntegrityError as exc:
            raise _conflict(exc) from None

    def record_batch(self, records: Sequence[IssuedRecord], *, action: str = "bulk-issue") -> None:
        """Insert new device records in one transaction with one audit entry (bulk issuance).

        No per-row lookup: the caller looked the IDs up (``active_device_certificates``). The
        unique indexes still refuse a serial, fingerprint or second active ID: then nothing is
        inserted and ConflictError is raised (retry one by one with ``record`` to find which).
        """
        if not records:
            return
        now = _now()
        detail = {
            "count": len(records),
            "issuer_ca": records[0].issuer_ca,
            "serials": [rec.serial for rec in records],
        }
        try:
            with self.engine.begin() as conn:
                _insert_many(conn, records, now)
                conn.execute(
                    audit_log.insert().values(
                        time=now, action=action, serial=None, detail=json.dumps(detail)
                    )
                )
        except sa.exc.IntegrityError as exc:
            raise _conflict(exc) from None

    @staticmethod
    def _supersede_or_refuse(
        conn: sa.Connection, rec: IssuedRecord, renew: bool, now: dt.datetime
    ) -> None:
        active = conn.execute(
            sa.select(certificates.c.serial).where(
                certificates.c.kind == "device",
                certificates.c.project == rec.project,
                certificates.c.certificate_id == rec.certificate_id,
                certificates.c.status == "active",
            )
        ).scalar()
        if active is None:
            return
        if not renew:
            raise ConflictError(
                f"certificate ID {rec.certificate_id!r} in project {rec.project!r} already has an "
                f"active certificate (serial {active}); use --renew to replace it"
            )
        conn.execute(
            certificates.update().where(certificates.c.serial == active).values(status="superseded")
        )
        conn.execute(
            audit_log.insert().values(
                time=now, action="supersede", serial=active, detail=json.dumps({"by": rec.serial})
            )
        )

    def revoke(self, serial: str, reason: str = "unspecified") -> dict[str, Any]:
        """Mark a certificate revoked; raises NotFoundError, ConflictError if already revoked."""
        now = _now()
        with self.engine.begin() as conn:
            row = (
                conn.execute(sa.select(certificates).where(certificates.c.serial == serial.lower()))
                .mappings()
                .first()
            )
            if row is None:
                raise NotFoundError(f"no certificate with serial {serial} in the inventory")
            if row["status"] == "revoked":
                raise ConflictError(f"certificate {serial} is already revoked")
            conn.execute(
                certificates.update()
                .where(certificates.c.id == row["id"])
                .values(status="revoked", revoked_at=now, revocation_reason=reason)
            )
            conn.execute(
                audit_log.insert().values(
                    time=now,
                    action="revoke",
                    serial=row["serial"],
                    detail=json.dumps({"reason": reason}),
                )
            )
            return {
                **self._public(row),
                "status": "revoked",
                "revoked_at": now,
                "revocation_reason": reason,
            }

    # -- reads -------------------------------------------------------------------------------

    @staticmethod
    def _public(row: Any) -> dict[str, Any]:
        out = {k: row[k] for k in row.keys() if k not in ("der", "id")}
        for key in ("not_before", "not_after", "revoked_at", "created_at"):
            out[key] = _aware(out.get(key))
        return out

    def find(
        self,
        *,
        serial: str | None = None,
        project: str | None = None,
        certificate_id: str | None = None,
        status: str | None = None,
    ) -> list[dict[str, Any]]:
        query = sa.select(certificates)
        if serial is not None:
            query = query.where(certificates.c.serial == serial.lower())
        if project is not None:
            query = query.where(certificates.c.project == project)
        if certificate_id is not None:
            query = query.where(certificates.c.certificate_id == certificate_id)
        if status is not None:
            query = query.where(certificates.c.status == status)
        with self.reader.connect() as conn:
            return [
                self._public(r) for r in conn.execute(query.order_by(certificates.c.id)).mappings()
            ]

    def list(
        self,
        *,
        project: str | None = None,
        expiring_within: int | None = None,
        kind: str | None = None,
        include_inactive: bool = True,
    ) -> list[dict[str, Any]]:
        """Inventory rows, oldest first; ``expiring_within`` days keeps active ones ending soon."""
        query = sa.select(certificates)
        if project is not None:
            query = query.where(certificates.c.project == project)
        if kind is not None:
            query = query.where(certificates.c.kind == kind)
        if expiring_within is not None:
            limit = _now() + dt.timedelta(days=expiring_within)
            query = query.where(
                certificates.c.not_after <= limit, certificates.c.status == "active"
            )
        elif not include_inactive:
            query = query.where(certificates.c.status == "active")
        with self.reader.connect() as conn:
            return [
                self._public(r) for r in conn.execute(query.order_by(certificates.c.id)).mappings()
            ]

    def revoked_by(self, issuer_ca: str) -> builtins.list[tuple[int, dt.datetime, str]]:
        """(serial, revocation time, reason) of every revoked certificate ``issuer_ca`` issued."""
        query = sa.select(
            certificates.c.serial, certificates.c.revoked_at, certificates.c.revocation_reason
        ).where(certificates.c.issuer_ca == issuer_ca, certificates.c.status == "revoked")
        with self.reader.connect() as conn:
            return [
                (int(s, 16), _aware(t) or _now(), r or "unspecified")
                for s, t, r in conn.execute(query)
            ]

    def count(self) -> int:
        with self.reader.connect() as conn:
            return int(
                conn.execute(sa.select(sa.func.count()).select_from(certificates)).scalar() or 0
            )

    def audit(self, action: str, detail: dict[str, Any], serial: str | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                audit_log.insert().values(
                    time=_now(), action=action, serial=serial, detail=json.dumps(detail)
                )
            )

    def active_device_certificates(
        self, project: str, certificate_ids: Iterable[str]
    ) -> dict[str, bytes]:
        """certificate ID -> DER of its active device certificate, for the IDs that have one."""
        wanted = list(certificate_ids)
        # Literal status/kind so SQLite can use the partial unique index on active devices.
        query = sa.select(certificates.c.certificate_id, certificates.c.der).where(
            sa.text("status = 'active' AND kind = 'device'"),
            certificates.c.project == project,
            certificates.c.certificate_id.in_(wanted),
        )
        with self.reader.connect() as conn:
            return {str(i): bytes(d) for i, d in conn.execute(query)}

    def existing_serials(self, serials: Iterable[str]) -> set[str]:
        wanted = list(serials)
        with self.reader.connect() as conn:
            return {
                s
                for (s,) in conn.execute(
                    sa.select(certificates.c.serial).where(certificates.c.serial.in_(wanted))
                )
            }
