"""The platform store: projects, API keys, CA certificates, CRLs, devices, auth events.

SQLite by default, PostgreSQL by URL (several instances may share it). Changes that caches
depend on bump a counter row (``trust`` for projects/CAs/CRLs, ``devices`` for device state the
authenticator caches), which every instance polls cheaply.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from fleetpki.errors import ConflictError, InputError, NotFoundError
from fleetpki.formats import Kind, read_blocks
from fleetpki.platform.store.base import (
    HEAD,
    MIGRATIONS,
    hash_api_key,
    iso_time,
    new_id,
    utcnow,
    validate_device_name,
)
from fleetpki.platform.store.cas import MAX_CRL_BYTES, certificate_content, parse_ca_upload
from fleetpki.platform.store.devices import MAX_STATE_BYTES, DevicePage, DeviceStore
from fleetpki.platform.store.inspection import crl_signed_by, inspect_certificate, inspect_crl
from fleetpki.platform.store.schema import ca_certificates, crls, projects
from fleetpki.platform.store.sessions import ConsoleSession, SessionStore

__all__ = [
    "HEAD",
    "MAX_STATE_BYTES",
    "MIGRATIONS",
    "ConsoleSession",
    "DevicePage",
    "Store",
    "StoredCrls",
    "hash_api_key",
    "new_id",
    "utcnow",
    "validate_device_name",
]
log = logging.getLogger("fleetpki.platform")


@dataclass(frozen=True, slots=True)
class StoredCrls:
    """A project's CRLs that can be read, and {issuer (RFC 4514): why} of those that cannot."""

    crls: tuple[x509.CertificateRevocationList, ...]
    unreadable: dict[str, str]


class Store(DeviceStore, SessionStore):
    """All platform data behind one SQLAlchemy engine."""

    # -- CA certificates and CRLs ------------------------------------------------------------

    @staticmethod
    def _ca_object(row: Any) -> dict[str, Any]:
        content, problem = certificate_content(row["der"])
        return {
            "id": row["id"],
            "projectId": row["project_id"],
            "certType": row["cert_type"],
            "enabled": bool(row["enabled"]),
            "createdAt": iso_time(row["created_at"]),
            "fingerprintSha256": row["fingerprint"],
            "certificateContent": content,
            "problem": problem,
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
                            f"{item.inspected.name} is already uploaded to "
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
        with self.reader.connect() as conn:
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
        return self._ca_object(self._ca_row(project_id, ca_id))

    def get_ca_certificate(self, project_id: str, ca_id: str) -> x509.Certificate:
        """The stored CA certificate itself (to decode or download); raises NotFoundError,
        InputError (a row stored by an older version that cannot be read)."""
        row = self._ca_row(project_id, ca_id)
        return inspect_certificate(row["der"], f"stored CA certificate {ca_id}").certificate

    def _ca_row(self, project_id: str, ca_id: str) -> Any:
        with self.reader.connect() as conn:
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
        return row

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
        if len(data) > MAX_CRL_BYTES:
            raise InputError(f"CRL upload too large ({len(data)} bytes, at most {MAX_CRL_BYTES})")
        blocks = read_blocks(data)
        if [b.kind for b in blocks] != [Kind.CRL]:
            found = ", ".join(b.kind.value for b in blocks)
            raise InputError(f"expected one CRL, found {found}")
        inspected = inspect_crl(blocks[0].der)
        crl = inspected.crl
        anchors = [cert for _, cert, _ in self.trust_anchors(project_id)]
        if not any(crl_signed_by(crl, anchor) for anchor in anchors):
            raise InputError("the CRL is not signed by any CA certificate of this project")
        crl_id = new_id()
        with self.engine.begin() as conn:
            conn.execute(
                crls.insert().values(
                    id=crl_id,
                    project_id=project_id,
                    issuer=inspected.issuer,
                    der=crl.public_bytes(Encoding.DER),
                    created_at=utcnow(),
                )
            )
            self._bump(conn, "trust")
        self._changed()
        return {"id": crl_id, "issuer": inspected.issuer, "revoked": inspected.revoked}

    def list_crls(self, project_id: str) -> list[dict[str, Any]]:
        """The project's CRLs, oldest upload first: issuer, thisUpdate, nextUpdate, entries.

        A stored CRL that cannot be read is listed with its issuer and ``problem`` (the times
        and count None): its issuer's devices are refused until it is replaced.
        """
        self.get_project(project_id)
        with self.reader.connect() as conn:
            rows = conn.execute(
                sa.select(crls.c.id, crls.c.issuer, crls.c.der, crls.c.created_at)
                .where(crls.c.project_id == project_id)
                .order_by(crls.c.created_at, crls.c.id)
            ).all()
        items = []
        for row in rows:
            item: dict[str, Any] = {
                "id": row.id,
                "projectId": project_id,
                "issuer": row.issuer,
                "thisUpdate": None,
                "nextUpdate": None,
                "entries": None,
                "createdAt": iso_time(row.created_at),
                "problem": None,
            }
            try:
                inspected = inspect_crl(row.der, f"stored CRL {row.id}")
            except InputError as exc:
                item["problem"] = str(exc)
            else:
                crl = inspected.crl
                item["thisUpdate"] = iso_time(crl.last_update_utc)
                item["nextUpdate"] = iso_time(crl.next_update_utc)
                item["entries"] = inspected.revoked
            items.append(item)
        return items

    def trust_anchors(self, project_id: str) -> list[tuple[str, x509.Certificate, bool]]:
        """Every readable CA certificate of the project as (id, certificate, enabled).

        A row that cannot be read in full (stored by an older version) is left out, and logged:
        it can never be an anchor, and it must not break the others.
        """
        with self.reader.connect() as conn:
            rows = conn.execute(
                sa.select(ca_certificates.c.id, ca_certificates.c.der, ca_certificates.c.enabled)
                .where(ca_certificates.c.project_id == project_id)
                .order_by(ca_certificates.c.created_at)
            ).all()
        anchors = []
        for row in rows:
            try:
                cert = inspect_certificate(row.der, f"stored CA certificate {row.id}").certificate
            except InputError as exc:
                log.warning("project %s: %s; it is not used as trust", project_id, exc)
                continue
            anchors.append((row.id, cert, bool(row.enabled)))
        return anchors

    def project_crls(self, project_id: str) -> StoredCrls:
        """The project's readable CRLs, and the issuers of stored CRLs that cannot be read.

        A CRL row that cannot be read (stored by an older version) is not skipped silently:
        its issuer's certificates are refused ("revocation cannot be checked").
        """
        with self.reader.connect() as conn:
            rows = conn.execute(
                sa.select(crls.c.id, crls.c.issuer, crls.c.der).where(
                    crls.c.project_id == project_id
                )
            ).all()
        readable, unreadable = [], {}
        for row in rows:
            try:
                readable.append(inspect_crl(row.der, f"stored CRL {row.id}").crl)
            except InputError as exc:
                log.warning("project %s: %s; its issuer's devices are refused", project_id, exc)
                unreadable[row.issuer] = str(exc)
        return StoredCrls(tuple(readable), unreadable)

    def project_exists(self, project_id: str) -> bool:
        with self.reader.connect() as conn:
            found = conn.execute(sa.select(projects.c.id).where(projects.c.id == project_id))
            return found.first() is not None
