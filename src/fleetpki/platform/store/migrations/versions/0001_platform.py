"""Platform: projects, API keys, CA certificates, CRLs, devices, auth events, counters.

Revision ID: p0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "p0001"
down_revision = None
branch_labels = None
depends_on = None


def _project_fk() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        "project_id",
        sa.String(63),
        sa.ForeignKey("projects.id", ondelete="CASCADE"),
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", sa.String(63), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        _project_fk(),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "ca_certificates",
        sa.Column("id", sa.String(32), primary_key=True),
        _project_fk(),
        sa.Column("cert_type", sa.String(16), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("der", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("project_id", "fingerprint", name="uq_ca_project_fingerprint"),
    )
    op.create_table(
        "crls",
        sa.Column("id", sa.String(32), primary_key=True),
        _project_fk(),
        sa.Column("issuer", sa.Text, nullable=False),
        sa.Column("der", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "devices",
        sa.Column("id", sa.String(32), primary_key=True),
        _project_fk(),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("certificate_id", sa.String(64), nullable=True),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state", sa.Text, nullable=True),
        sa.UniqueConstraint("project_id", "certificate_id", name="uq_device_certificate_id"),
        sa.UniqueConstraint("project_id", "name", name="uq_device_name"),
    )
    op.create_table(
        "auth_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("project_id", sa.String(63), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("certificate_id", sa.String(200), nullable=True),
        sa.Column("serial", sa.String(64), nullable=True),
        sa.Column("transport", sa.String(16), nullable=False),
        sa.Column("peer", sa.String(100), nullable=False),
        sa.Column("device_id", sa.String(32), nullable=True),
    )
    op.create_index("ix_auth_events_project_id", "auth_events", ["project_id", "id"])
    counters = op.create_table(
        "counters",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(counters, [{"name": "trust", "value": 0}, {"name": "devices", "value": 0}])


def downgrade() -> None:
    for name in ("counters", "auth_events", "devices", "crls", "ca_certificates", "api_keys"):
        op.drop_table(name)
    op.drop_table("projects")
