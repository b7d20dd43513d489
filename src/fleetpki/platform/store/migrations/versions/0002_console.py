"""Console: sign-in sessions, the presented leaf in auth events, indexes for the console's lists.

Revision ID: p0002
Revises: p0001
"""

import sqlalchemy as sa
from alembic import op

revision = "p0002"
down_revision = "p0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("auth_events") as batch:
        batch.add_column(sa.Column("issuer", sa.Text, nullable=True))
        batch.add_column(sa.Column("not_after", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_auth_events_device", "auth_events", ["device_id", "id"])
    op.create_index(
        "ix_auth_events_certificate", "auth_events", ["project_id", "certificate_id", "id"]
    )
    if op.get_bind().dialect.name == "postgresql":
        # Byte-order search and keyset pagination (SQLite's BINARY unique indexes serve it there).
        for column in ("name", "certificate_id"):
            op.execute(
                f'CREATE INDEX ix_devices_{column}_c ON devices (project_id, {column} COLLATE "C")'
            )
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
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
        sa.Column("admin_tag", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_console_sessions_expires", "console_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_table("console_sessions")
    if op.get_bind().dialect.name == "postgresql":
        for column in ("name", "certificate_id"):
            op.drop_index(f"ix_devices_{column}_c", "devices")
    op.drop_index("ix_auth_events_certificate", "auth_events")
    op.drop_index("ix_auth_events_device", "auth_events")
    with op.batch_alter_table("auth_events") as batch:
        batch.drop_column("not_after")
        batch.drop_column("issuer")
