"""Inventory tables (SQLAlchemy Core). Changes here need an Alembic migration in migrations/."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

certificates = sa.Table(
    "certificates",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("serial", sa.String(42), nullable=False, unique=True),  # lowercase hex
    sa.Column("kind", sa.String(16), nullable=False),  # root | intermediate | device
    sa.Column("project", sa.String(63), nullable=True),
    sa.Column("certificate_id", sa.String(64), nullable=True),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("issuer_ca", sa.String(64), nullable=False),
    sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
    sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
    sa.Column("fingerprint_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("der", sa.LargeBinary, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # active | superseded | revoked
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("revocation_reason", sa.String(32), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index(
        "uq_active_device_id",
        "project",
        "certificate_id",
        unique=True,
        sqlite_where=sa.text("status = 'active' AND kind = 'device'"),
        postgresql_where=sa.text("status = 'active' AND kind = 'device'"),
    ),
    sa.Index("ix_certificates_not_after", "not_after"),
    sa.Index("ix_certificates_issuer_status", "issuer_ca", "status"),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("serial", sa.String(42), nullable=True),
    sa.Column("detail", sa.Text, nullable=False),  # JSON; never holds a secret
)
