"""Platform tables (SQLAlchemy Core). Changes here need an Alembic migration in migrations/."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

metadata = sa.MetaData()


# Columns most tables share; a Column belongs to one table, so each call makes a new one.
def _id() -> sa.Column[str]:
    return sa.Column("id", sa.String(32), primary_key=True)


def _project_id() -> sa.Column[str]:
    return sa.Column(
        "project_id", sa.String(63), sa.ForeignKey("projects.id", ondelete="CASCADE"),
        nullable=False,
    )  # fmt: skip


def _created_at() -> sa.Column[dt.datetime]:
    return sa.Column("created_at", sa.DateTime(timezone=True), nullable=False)


projects = sa.Table(
    "projects",
    metadata,
    sa.Column("id", sa.String(63), primary_key=True),  # the slug
    sa.Column("name", sa.String(200), nullable=False),
    _created_at(),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    _id(),
    _project_id(),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),  # SHA-256 hex of the key
    _created_at(),
)

ca_certificates = sa.Table(
    "ca_certificates",
    metadata,
    _id(),
    _project_id(),
    sa.Column("cert_type", sa.String(16), nullable=False),  # root | intermediate
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("der", sa.LargeBinary, nullable=False),
    _created_at(),
    sa.UniqueConstraint("project_id", "fingerprint", name="uq_ca_project_fingerprint"),
)

crls = sa.Table(
    "crls",
    metadata,
    _id(),
    _project_id(),
    sa.Column("issuer", sa.Text, nullable=False),
    sa.Column("der", sa.LargeBinary, nullable=False),
    _created_at(),
)

devices = sa.Table(
    "devices",
    metadata,
    _id(),
    _project_id(),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("certificate_id", sa.String(64), nullable=True),
    sa.Column("enabled", sa.Boolean, nullable=False),
    _created_at(),
    sa.Column("last_seen", sa.DateTime(timezone=True), nullable=True),
    sa.Column("state", sa.Text, nullable=True),  # the device's JSON document
    sa.UniqueConstraint("project_id", "certificate_id", name="uq_device_certificate_id"),
    sa.UniqueConstraint("project_id", "name", name="uq_device_name"),
)

auth_events = sa.Table(
    "auth_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("project_id", sa.String(63), nullable=True),  # as claimed; may name no project
    sa.Column("outcome", sa.String(16), nullable=False),  # accepted | refused
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("certificate_id", sa.String(200), nullable=True),
    sa.Column("serial", sa.String(64), nullable=True),
    sa.Column("transport", sa.String(16), nullable=False),
    sa.Column("peer", sa.String(100), nullable=False),
    sa.Column("device_id", sa.String(32), nullable=True),
    sa.Index("ix_auth_events_project_id", "project_id", "id"),
)

# Change counters: every instance polls these to know when its caches are stale.
counters = sa.Table(
    "counters",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)
