"""Reconciliation: runs with their checkpoints, and drift records with first seen, last seen, resolution.

Revision ID: 0004_reconcile
Revises: 0003_maturity
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_reconcile"
down_revision = "0003_maturity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reconcile_runs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("job", sa.String(200), nullable=False),
        sa.Column("plan", sa.Text, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("chunks_done", sa.Text, nullable=False),
        sa.Column("compared", sa.BigInteger, nullable=False),
        sa.Column("drifted", sa.Integer, nullable=False),
        sa.Column("errors", sa.Integer, nullable=False),
    )
    op.create_index("ix_reconcile_runs_job_status", "reconcile_runs", ["job", "status"])
    op.create_table(
        "reconcile_drift",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("job", sa.String(200), nullable=False),
        sa.Column("entity_key", sa.String(300), nullable=False),
        sa.Column("field", sa.String(200), nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("legacy_value", sa.Text, nullable=True),
        sa.Column("new_value", sa.Text, nullable=True),
        sa.Column("classification", sa.String(32), nullable=False),
        sa.Column("authority", sa.String(16), nullable=True),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
    )
    # at most one open record per (job, entity, field); resolved ones are history
    op.create_index("ux_reconcile_drift_open", "reconcile_drift", ["job", "entity_key", "field"], unique=True,
                    postgresql_where=sa.text("resolved_at IS NULL"), sqlite_where=sa.text("resolved_at IS NULL"))
    op.create_index("ix_reconcile_drift_job_first_seen", "reconcile_drift", ["job", "first_seen"])


def downgrade() -> None:
    op.drop_table("reconcile_drift")
    op.drop_table("reconcile_runs")
