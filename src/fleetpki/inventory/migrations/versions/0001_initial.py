"""Initial inventory: certificates and audit log.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "certificates",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("serial", sa.String(42), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("project", sa.String(63), nullable=True),
        sa.Column("certificate_id", sa.String(64), nullable=True),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("issuer_ca", sa.String(64), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fingerprint_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("der", sa.LargeBinary, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revocation_reason", sa.String(32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "uq_active_device_id",
        "certificates",
        ["project", "certificate_id"],
        unique=True,
        sqlite_where=sa.text("status = 'active' AND kind = 'device'"),
        postgresql_where=sa.text("status = 'active' AND kind = 'device'"),
    )
    op.create_index("ix_certificates_not_after", "certificates", ["not_after"])
    op.create_index("ix_certificates_issuer_status", "certificates", ["issuer_ca", "status"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("serial", sa.String(42), nullable=True),
        sa.Column("detail", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_index("ix_certificates_issuer_status", "certificates")
    op.drop_index("ix_certificates_not_after", "certificates")
    op.drop_index("uq_active_device_id", "certificates")
    op.drop_table("certificates")
