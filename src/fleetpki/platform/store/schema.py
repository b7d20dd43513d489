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
    # The presented leaf's issuer and notAfter: the device page's "last presented certificate".
    sa.Column("issuer", sa.Text, nullable=True),
    sa.Column("not_after", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_auth_events_project_id", "project_id", "id"),
    sa.Index("ix_auth_events_device", "device_id", "id"),
    sa.Index("ix_auth_events_certificate", "project_id", "certificate_id", "id"),
)

# Device search and keyset pagination compare names byte by byte: SQLite's BINARY collation
# (the unique indexes above serve it), PostgreSQL's "C" collation (these indexes serve it).
for _column in ("name", "certificate_id"):
    sa.Index(
        f"ix_devices_{_column}_c", devices.c.project_id, devices.c[_column].collate("C")
    ).ddl_if(dialect="postgresql")

# Console sign-ins: the cookie holds a random token, the table only its SHA-256.
console_sessions = sa.Table(
    "console_sessions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # SHA-256 hex of the cookie's token
    sa.Column(
        "api_key_id",
        sa.String(32),
        sa.ForeignKey("api_keys.id", ondelete="CASCADE"),
        nullable=True,
    ),
    sa.Column(
        "project_id",
        sa.String(63),
        sa.ForeignKey("projects.id", ondelete="CASCADE"),
        nullable=True,
    ),
    sa.Column("admin_tag", sa.String(64), nullable=True),  # HMAC(admin key, token): admin only
    _created_at(),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),  # idle deadline
    sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),  # absolute deadline
    sa.Index("ix_console_sessions_expires", "expires_at"),
)

# Change counters: every instance polls these to know when its caches are stale.
counters = sa.Table(
    "counters",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)
