"""The outcome comparison's state: events waiting for the other side's, and the ids it has taken.

Revision ID: 0005_outcome_state
Revises: 0004_reconcile
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_outcome_state"
down_revision = "0004_reconcile"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outcome_pending",
        sa.Column("side", sa.String(8), primary_key=True),
        sa.Column("event_key", sa.String(100), primary_key=True),
        sa.Column("origin", sa.String(300), nullable=False),  # "topic:partition", "" for HTTP callbacks
        sa.Column("arrived", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event", sa.Text, nullable=False),
    )
    op.create_index("ix_outcome_pending_origin_arrived", "outcome_pending", ["origin", "arrived"])
    op.create_table(
        "outcome_seen",
        sa.Column("side", sa.String(8), primary_key=True),
        sa.Column("event_key", sa.String(100), primary_key=True),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_outcome_seen_at", "outcome_seen", ["at"])


def downgrade() -> None:
    op.drop_table("outcome_seen")
    op.drop_table("outcome_pending")
