"""The platform store: projects, API keys, CA certificates, CRLs, devices, auth events.

SQLite by default, PostgreSQL by URL (several instances may share it). Changes that caches
depend on bump a counter row (``trust`` for projects/CAs/CRLs, ``devices`` for device state the
authenticator caches), which every instance polls cheaply.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from fleetpki import db
from fleetpki.errors import ConflictError, InputError, NotFoundError
from fleetpki.formats import load_crl
from fleetpki.naming import validate_project_slug
from fleetpki.platform.store.cas import certificate_content, parse_ca_upload
from fleetpki.platform.store.schema import (
    api_keys,
    auth_events,
    ca_certificates,
    counters,
    crls,
    devices,
    projects,
)

MIGRATIONS = Path(__file__).parent / "migrations"
HEAD = "p0001"
MAX_NAME = 100
MAX_STATE_BYTES = 8192
API_KEY_PREFIX = "fpk_"

__all__ = ["HEAD", "MAX_STATE_BYTES", "Store", "hash_api_key", "new_id", "utcnow"]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_id() -> str:
    return uuid.uuid4().hex


def hash_api_key(key: str) -> str:
    """SHA-256 hex of an API key: keys are 256-bit random, so a fast hash is enough."""
    return hashlib.sha256(key.encode()).hexdigest()


def _time(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive datetimes; everything stored is UTC
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def validate_device_name(name: str) -> str:
    """Return ``name`` if usable as a device name; raise InputError saying why not."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME:
        raise InputError(f"device name must be 1-{MAX_NAME} characters")
    if name != name.strip() or not name.isprintable():
        raise InputError("device name must be printable, without whitespace at the ends")
    return name


class Store:
    """All platform data behind one SQLAlchemy engine."""

    def __init__(self, url: str) -> None:
        self.engine = db.create_engine(url)
        db.upgrade(self.engine, MIGRATIONS, HEAD)
        self._listeners: list[Callable[[], None]] = []
        self._flushers: list[Callable[[], None]] = []

    def close(self) -> None:
        self.engine.dispose()

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every change made through this store (same process)."""
        self._listeners.append(listener)

    def _bump(self, conn: sa.Connection, *names: str) -> None:
        for name in names:
            conn.execute(
                counters.update().where(counters.c.name == name).values(value=counters.c.value + 1)
            )

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    def counters(self) -> tuple[int, int]:
        """(trust, devices) change counters."""
        with self.engine.connect() as conn:
            rows = dict(conn.execute(sa.select(counters.c.name, counters.c.value)).all())
        return int(rows.get("trust", 0)), int(rows.get("devices", 0))

    # -- projects and API keys ---------------------------------------------------------------

    def create_project(self, slug: str, name: str | None = None) -> dict[str, Any]:
        """A new project; raises InputError (bad slug), ConflictError (exists)."""
        validate_project_slug(slug)
        name = (name or slug).strip()
        if not name or len(name) > 200 or not name.isprintable():
            raise InputError("project name must be 1-200 printable characters")
        now = utcnow()
        try:
            with self.engine.begin() as conn:
                conn.execute(projects.insert().values(id=slug, name=name, created_at=now))
                self._bump(conn, "trust")
        except sa.exc.IntegrityError:
            raise ConflictError(f"project {slug!r} already exists") from None
        self._changed()
        return {"id": slug, "name": name, "createdAt": _time(now)}

    def list_projects(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(projects).order_by(projects.c.id)).mappings().all()
        return [
            {"id": r["id"], "name": r["name"], "createdAt": _time(r["created_at"])} for r in rows
        ]

    def get_project(self, slug: str) -> dict[str, Any]:
        """The project; raises NotFoundError."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(projects).where(projects.c.id == slug)).mappings().first()
        if row is None:
            raise NotFoundError(f"no project {slug[:63]!r}")
        return {"id": row["id"], "name": row["name"], "createdAt": _time(row["created_at"])}

    def create_api_key(self, project_id: str) -> dict[str, str]:
        """A new API key for ``project_id``: ``{"id", "key"}``; only the hash is stored."""
        self.get_project(project_id)
        key_id = new_id()
        key = API_KEY_PREFIX + secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            conn.execute(
                api_keys.insert().values(
                    id=key_id,
                    project_id=project_id,
                    key_hash=hash_api_key(key),
                    created_at=utcnow(),
                )
            )
        return {"id": key_id, "key": key}

    def project_for_api_key(self, key: str) -> str | None:
        """The project an API key belongs to, or None."""
        digest = hash_api_key(key)
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(api_keys.c.project_id, api_keys.c.key_hash).where(
                    api_keys.c.key_hash == digest
                )
            ).first()
        if row is None or not hmac.compare_digest(row.key_hash, digest):
            return None
        return str(row.project_id)

    # -- CA certificates and CRLs ------------------------------------------------------------

    @staticmethod
    def _ca_object(row: Any) -> dict[str, Any]:
        cert = x509.load_der_x509_certificate(row["der"])
        return {
            "id": row["id"],
            "projectId": row["project_id"],
            "certType": row["cert_type"],
            "enabled": bool(row["enabled"]),
            "createdAt": _time(row["created_at"]),
            "fingerprintSha256": row["fingerprint"],
            "certificateContent": certificate_content(cert),
        }

    def upload_ca(
        self, project_id: str, data: bytes, cert_type: str | None
    ) -> list[dict[str, Any]]:
        """Store the CA certificates in ``data``, all or none; raises InputError, ConflictError."""
        self.get_project(project_id)
        uploaded = parse_ca_upload(data, cert_type)
        now = utcnow()
        ids = [new_id() for _ in uploaded]
        try:
            with self.engine.begin() as conn:
                existing = set(
                    conn.execute(
                        sa.select(ca_certificates.c.fingerprint).where(
                            ca_certificates.c.project_id == project_id,
                            ca_certificates.c.fingerprint.in_([u.fingerprint for u in uploaded]),
                        )
                    ).scalars()
                )
                for item in uploaded:
                    if item.fingerprint in existing:
                        raise ConflictError(
                            f"{item.certificate.subject.rfc4514_string()} is already uploaded to "
                            f"project {project_id!r} (same SHA-256 fingerprint)"
                        )
                conn.execute(
                    ca_certificates.insert(),
                    [
                        {
                            "id": ca_id,
                            "project_id": project_id,
                            "cert_type": item.cert_type,
                            "enabled": True,
                            "fingerprint": item.fingerprint,
                            "der": item.certificate.public_bytes(Encoding.DER),
                            "created_at": now,
                        }
                        for ca_id, item in zip(ids, uploaded, strict=True)
                    ],
                )
                self._bump(conn, "trust")
        except sa.exc.IntegrityError:
            raise ConflictError(
                "this CA certificate is already uploaded (same fingerprint)"
            ) from None
        self._changed()
        return [self.get_ca(project_id, ca_id) for ca_id in ids]

    def list_cas(self, project_id: str) -> list[dict[str, Any]]:
        self.get_project(project_id)
        with self.engine.connect() as conn:
            rows = (
                conn.execute(
                    sa.select(ca_certificates)
                    .where(ca_certificates.c.project_id == project_id)
                    .order_by(ca_certificates.c.created_at, ca_certificates.c.id)
                )
                .mappings()
                .all()
            )
        return [self._ca_object(r) for r in rows]

    def get_ca(self, project_id: str, ca_id: str) -> dict[str, Any]:
        """One CA certificate object; raises NotFoundError."""
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    sa.select(ca_certificates).where(
                        ca_certificates.c.project_id == project_id, ca_certificates.c.id == ca_id
                    )
                )
                .mappings()
                .first()
            )
        if row is None:
            raise NotFoundError(f"no CA certificate {ca_id[:40]!r} in project {project_id!r}")
        return self._ca_object(row)

    def set_ca_enabled(self, project_id: str, ca_id: str, enabled: bool) -> dict[str, Any]:
        """Enable or disable a CA certificate; raises NotFoundError."""
        with self.engine.begin() as conn:
            done = conn.execute(
                ca_certificates.update()
                .where(ca_certificates.c.project_id == project_id, ca_certificates.c.id == ca_id)
                .values(enabled=enabled)
            ).rowcount
            if done:
                self._bump(conn, "trust")
        if not done:
            raise NotFoundError(f"no CA certificate {ca_id[:40]!r} in project {project_id!r}")
        self._changed()
        return self.get_ca(project_id, ca_id)

    def delete_ca(self, project_id: str, ca_id: str) -> None:
        """Delete a CA certificate; raises NotFoundError."""
        with self.engine.begin() as conn:
            done = conn.execute(
                ca_certificates.delete().where(
                    ca_certificates.c.project_id == project_id, ca_certificates.c.id == ca_id
                )
            ).rowcount
            if done:
                self._bump(conn, "trust")
        if not done:
            raise NotFoundError(f"no CA certificate {ca_id[:40]!r} in project {project_id!r}")
        self._changed()

    def upload_crl(self, project_id: str, data: bytes) -> dict[str, Any]:
        """Store a CRL signed by one of the project's CA certificates; raises InputError."""
        self.get_project(project_id)
        crl = load_crl(data)
        anchors = [cert for _, cert, _ in self.trust_anchors(project_id)]
        if not any(
            a.subject == crl.issuer and crl.is_signature_valid(a.public_key())  # type: ignore[arg-type]
            for a in anchors
        ):
            raise InputError("the CRL is not signed by any CA certificate of this project")
        crl_id = new_id()
        with self.engine.begin() as conn:
            conn.execute(
                crls.insert().values(
                    id=crl_id,
                    project_id=project_id,
                    issuer=crl.issuer.rfc4514_string(),
                    der=crl.public_bytes(Encoding.DER),
                    created_at=utcnow(),
                )
            )
            self._bump(conn, "trust")
        self._changed()
        return {"id": crl_id, "issuer": crl.issuer.rfc4514_string(), "revoked": len(crl)}

    def trust_anchors(self, project_id: str) -> list[tuple[str, x509.Certificate, bool]]:
        """Every CA certificate of the project as (id, certificate, enabled)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(ca_certificates.c.id, ca_certificates.c.der, ca_certificates.c.enabled)
                .where(ca_certificates.c.project_id == project_id)
                .order_by(ca_certificates.c.created_at)
            ).all()
        return [(r.id, x509.load_der_x509_certificate(r.der), bool(r.enabled)) for r in rows]

    def project_crls(self, project_id: str) -> list[x509.CertificateRevocationList]:
        with self.engine.connect() as conn:
            ders = conn.execute(sa.select(crls.c.der).where(crls.c.project_id == project_id))
            return [x509.load_der_x509_crl(der) for der in ders.scalars()]

    def project_exists(self, project_id: str) -> bool:
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(projects.c.id).where(projects.c.id == project_id))
            return found.first() is not None

    # -- devices ------------------------------------------------------------------------------

    @staticmethod
    def device_object(row: Any) -> dict[str, Any]:
        return {
            "id": row["id"],
            "projectId": row["project_id"],
            "name": row["name"],
            "certificateId": row["certificate_id"],
            "enabled": bool(row["enabled"]),
            "createdAt": _time(row["created_at"]),
            "lastSeen": _time(row["last_seen"]),
        }

    def list_devices(
        self, project_id: str, *, limit: int = 100, offset: int = 0
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of devices (oldest first) and the total count."""
        self.get_project(project_id)
        self._flush()
        where = devices.c.project_id == project_id
        with self.engine.connect() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(devices).where(where))
            rows = conn.execute(
                sa.select(devices)
                .where(where)
                .order_by(devices.c.created_at, devices.c.id)
                .limit(limit)
                .offset(offset)
            ).mappings()
            return [self.device_object(r) for r in rows], int(total.scalar() or 0)

    def get_device(self, project_id: str, device_id: str) -> dict[str, Any]:
        """One device; raises NotFoundError."""
        self._flush()
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    sa.select(devices).where(
                        devices.c.project_id == project_id, devices.c.id == device_id
                    )
                )
                .mappings()
                .first()
            )
        if row is None:
            raise NotFoundError(f"no device {device_id[:40]!r} in project {project_id!r}")
        return self.device_object(row)

    def create_device(self, project_id: str, name: str) -> dict[str, Any]:
        """Pre-create a device by name (no certificate ID yet); raises ConflictError."""
        self.get_project(project_id)
        validate_device_name(name)
        device_id = new_id()
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    devices.insert().values(
                        id=device_id,
                        project_id=project_id,
                        name=name,
                        certificate_id=None,
                        enabled=True,
                        created_at=utcnow(),
                    )
                )
        except sa.exc.IntegrityError:
            raise ConflictError(f"a device named {name!r} already exists") from None
        return self.get_device(project_id, device_id)

    def update_device(
        self,
        project_id: str,
        device_id: str,
        *,
        name: str | None = None,
        enabled: bool | None = None,
    ) -> dict[str, Any]:
        """Rename and/or enable/disable a device; raises NotFoundError, ConflictError."""
        values: dict[str, Any] = {}
        if name is not None:
            values["name"] = validate_device_name(name)
        if enabled is not None:
            values["enabled"] = enabled
        if values:
            try:
                with self.engine.begin() as conn:
                    done = conn.execute(
                        devices.update()
                        .where(devices.c.project_id == project_id, devices.c.id == device_id)
                        .values(**values)
                    ).rowcount
                    self._bump(conn, "devices")
            except sa.exc.IntegrityError:
                raise ConflictError(f"a device named {name!r} already exists") from None
            if not done:
                raise NotFoundError(f"no device {device_id[:40]!r} in project {project_id!r}")
            self._changed()
        return self.get_device(project_id, device_id)

    def delete_device(self, project_id: str, device_id: str) -> None:
        """Delete a device (its certificate ID becomes free); raises NotFoundError."""
        with self.engine.begin() as conn:
            done = conn.execute(
                devices.delete().where(
                    devices.c.project_id == project_id, devices.c.id == device_id
                )
            ).rowcount
            self._bump(conn, "devices")
        if not done:
            raise NotFoundError(f"no device {device_id[:40]!r} in project {project_id!r}")
        self._changed()

    def device_state(self, device_id: str) -> bytes | None:
        """The device's JSON document, or None if it has none; raises NotFoundError."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(devices.c.state).where(devices.c.id == device_id)).first()
        if row is None:
            raise NotFoundError("device no longer exists")
        return None if row.state is None else str(row.state).encode()

    def set_device_state(self, device_id: str, document: bytes) -> None:
        """Replace the device's JSON document; raises InputError, NotFoundError."""
        if len(document) > MAX_STATE_BYTES:
            raise InputError(f"state too large ({len(document)} bytes, at most {MAX_STATE_BYTES})")
        try:
            text = json.dumps(json.loads(document), separators=(",", ":"))
        except (ValueError, UnicodeDecodeError):
            raise InputError("state must be a JSON document") from None
        with self.engine.begin() as conn:
            done = conn.execute(
                devices.update().where(devices.c.id == device_id).values(state=text)
            ).rowcount
        if not done:
            raise NotFoundError("device no longer exists")

    # -- auth events --------------------------------------------------------------------------

    def add_auth_events(
        self, events: Sequence[dict[str, Any]], seen: dict[str, dt.datetime] | None = None
    ) -> None:
        """Insert auth events and set lastSeen of the devices in ``seen``, in one transaction."""
        with self.engine.begin() as conn:
            if events:
                conn.execute(auth_events.insert(), list(events))
            if seen:
                conn.execute(
                    devices.update()
                    .where(devices.c.id == sa.bindparam("device_id"))
                    .values(last_seen=sa.bindparam("seen")),
                    [{"device_id": k, "seen": v} for k, v in seen.items()],
                )

    def add_flusher(self, flush: Callable[[], None]) -> None:
        """Call ``flush`` before reading events or devices (pending writes of this process)."""
        self._flushers.append(flush)

    def _flush(self) -> None:
        for flush in self._flushers:
            flush()

    def list_auth_events(
        self,
        project_id: str | None,
        *,
        outcome: str | None = None,
        certificate_id: str | None = None,
        device_id: str | None = None,
        transport: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Auth events of a project (None: attempts that named no project), newest first."""
        self._flush()
        column = auth_events.c.project_id
        query = sa.select(auth_events).where(
            column.is_(None) if project_id is None else column == project_id
        )
        for column, value in (
            (auth_events.c.outcome, outcome),
            (auth_events.c.certificate_id, certificate_id),
            (auth_events.c.device_id, device_id),
            (auth_events.c.transport, transport),
        ):
            if value is not None:
                query = query.where(column == value)
        query = query.order_by(auth_events.c.id.desc()).limit(max(1, min(limit, 1000)))
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [_event_object(r) for r in rows]


def _event_object(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "time": _time(row["time"]),
        "projectId": row["project_id"],
        "outcome": row["outcome"],
        "reason": row["reason"],
        "certificateId": row["certificate_id"],
        "serial": row["serial"],
        "transport": row["transport"],
        "peer": row["peer"],
        "deviceId": row["device_id"],
    }
