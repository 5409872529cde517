"""Shadow comparisons and the divergences they found.

Revision ID: 0002_shadow
Revises: 0001_flags
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_shadow"
down_revision = "0001_flags"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shadow_comparisons",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("capability", sa.String(200), nullable=False),
        sa.Column("route", sa.String(500), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("correlation_id", sa.String(128), nullable=False),
        sa.Column("serving", sa.String(16), nullable=False),
        sa.Column("primary_status", sa.Integer, nullable=True),
        sa.Column("other_status", sa.Integer, nullable=True),
        sa.Column("primary_latency_ms", sa.Float, nullable=True),
        sa.Column("other_latency_ms", sa.Float, nullable=True),
        sa.Column("fields", sa.Text, nullable=False),
    )
    op.create_index("ix_shadow_comparisons_capability_at", "shadow_comparisons", ["capability", "at"])
    op.create_table(
        "shadow_divergences",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("capability", sa.String(200), nullable=False),
        sa.Column("route", sa.String(500), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("source", sa.String(16), nullable=False, server_default="response"),
        sa.Column("field", sa.String(500), nullable=False),
        sa.Column("primary_value", sa.Text, nullable=True),
        sa.Column("other_value", sa.Text, nullable=True),
        sa.Column("classification", sa.String(32), nullable=False),
        sa.Column("correlation_id", sa.String(128), nullable=False),
        sa.Column("serving", sa.String(16), nullable=False),
        sa.Column("primary_status", sa.Integer, nullable=True),
        sa.Column("other_status", sa.Integer, nullable=True),
        sa.Column("primary_latency_ms", sa.Float, nullable=True),
        sa.Column("other_latency_ms", sa.Float, nullable=True),
    )
    op.create_index("ix_shadow_divergences_capability_at", "shadow_divergences", ["capability", "at"])


def downgrade() -> None:
    op.drop_table("shadow_divergences")
    op.drop_table("shadow_comparisons")
