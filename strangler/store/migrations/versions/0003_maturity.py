"""The maturity ledger: one row per (correlation id, entity key) with the time of each stage.

Revision ID: 0003_maturity
Revises: 0002_shadow
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_maturity"
down_revision = "0002_shadow"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "maturity_changes",
        sa.Column("correlation_id", sa.String(128), primary_key=True),
        sa.Column("entity_key", sa.String(300), primary_key=True),
        sa.Column("capability", sa.String(200), nullable=True),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("propagated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reconciled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("exception_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("exception_reason", sa.Text, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_maturity_changes_updated_at", "maturity_changes", ["updated_at"])


def downgrade() -> None:
    op.drop_table("maturity_changes")
