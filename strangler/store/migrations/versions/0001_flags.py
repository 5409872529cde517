"""Routing flags, their audit log and the store's change counter.

Revision ID: 0001_flags
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_flags"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "strangler_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )
    op.execute("INSERT INTO strangler_meta (key, value) VALUES ('flags_version', 0)")
    op.create_table(
        "routing_flags",
        sa.Column("capability", sa.String(200), primary_key=True),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("percent", sa.Float, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_table(
        "routing_flag_audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("capability", sa.String(200), nullable=False, index=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("from_mode", sa.String(16), nullable=False),
        sa.Column("from_percent", sa.Float, nullable=False),
        sa.Column("to_mode", sa.String(16), nullable=False),
        sa.Column("to_percent", sa.Float, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("forced", sa.Boolean, nullable=False),
        sa.Column("evidence", sa.Text, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("routing_flag_audit")
    op.drop_table("routing_flags")
    op.drop_table("strangler_meta")
