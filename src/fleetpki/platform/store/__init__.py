"""The platform store: projects, API keys, CA certificates, CRLs, devices, auth events.

SQLite by default, PostgreSQL by URL (several instances may share it). Changes that caches
depend on bump a counter row (``trust`` for projects/CAs/CRLs, ``devices`` for device state the
authenticator caches), which every instance polls cheaply.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from fleetpki.errors import ConflictError, InputError, NotFoundError
from fleetpki.formats import load_crl
from fleetpki.platform.store.base import (
    HEAD,
    MIGRATIONS,
    hash_api_key,
    iso_time,
    new_id,
    utcnow,
    validate_device_name,
)
from fleetpki.platform.store.cas import certificate_content, parse_ca_upload
from fleetpki.platform.store.devices import MAX_STATE_BYTES, DevicePage, DeviceStore
from fleetpki.platform.store.schema import ca_certificates, crls, projects
from fleetpki.platform.store.sessions import ConsoleSession, SessionStore

__all__ = [
    "HEAD",
    "MAX_STATE_BYTES",
    "MIGRATIONS",
    "ConsoleSession",
    "DevicePage",
    "Store",
    "hash_api_key",
    "new_id",
    "utcnow",
    "validate_device_name",
]


class Store(DeviceStore, SessionStore):
    """All platform data behind one SQLAlchemy engine."""

    # -- CA certificates and CRLs ------------------------------------------------------------

    @staticmethod
    def _ca_object(row: Any) -> dict[str, Any]:
        cert = x509.load_der_x509_certificate(row["der"])
        return {
            "id": row["id"],
            "projectId": row["project_id"],
            "certType": row["cert_type"],
            "enabled": bool(row["enabled"]),
            "createdAt": iso_time(row["created_at"]),
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
        """The stored CA certificate itself (to decode or download); raises NotFoundError."""
        return x509.load_der_x509_certificate(self._ca_row(project_id, ca_id)["der"])

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

    def list_crls(self, project_id: str) -> list[dict[str, Any]]:
        """The project's CRLs, oldest upload first: issuer, thisUpdate, nextUpdate, entries."""
        self.get_project(project_id)
        with self.reader.connect() as conn:
            rows = conn.execute(
                sa.select(crls.c.id, crls.c.der, crls.c.created_at)
                .where(crls.c.project_id == project_id)
                .order_by(crls.c.created_at, crls.c.id)
            ).all()
        items = []
        for row in rows:
            crl = x509.load_der_x509_crl(row.der)
            items.append(
                {
                    "id": row.id,
                    "projectId": project_id,
                    "issuer": crl.issuer.rfc4514_string(),
                    "thisUpdate": iso_time(crl.last_update_utc),
                    "nextUpdate": iso_time(crl.next_update_utc),
                    "entries": len(crl),
                    "createdAt": iso_time(row.created_at),
                }
            )
        return items

    def trust_anchors(self, project_id: str) -> list[tuple[str, x509.Certificate, bool]]:
        """Every CA certificate of the project as (id, certificate, enabled)."""
        with self.reader.connect() as conn:
            rows = conn.execute(
                sa.select(ca_certificates.c.id, ca_certificates.c.der, ca_certificates.c.enabled)
                .where(ca_certificates.c.project_id == project_id)
                .order_by(ca_certificates.c.created_at)
            ).all()
        return [(r.id, x509.load_der_x509_certificate(r.der), bool(r.enabled)) for r in rows]

    def project_crls(self, project_id: str) -> list[x509.CertificateRevocationList]:
        with self.reader.connect() as conn:
            ders = conn.execute(sa.select(crls.c.der).where(crls.c.project_id == project_id))
            return [x509.load_der_x509_crl(der) for der in ders.scalars()]

    def project_exists(self, project_id: str) -> bool:
        with self.reader.connect() as conn:
            found = conn.execute(sa.select(projects.c.id).where(projects.c.id == project_id))
            return found.first() is not None
