"""State reconciliation: compare what each side holds, find drift fast, record its age, repair on request."""

from __future__ import annotations

from strangler.reconcile.config import FieldSpec, HttpSide, JobConfig, ReconcileConfig, RepairSink, SqlSide
from strangler.reconcile.drift import EntityDrift, FieldDrift, compare_entity, field_authorities
from strangler.reconcile.errors import ReconcileError, RepairFailed, SideUnavailable, UnsupportedSide

__all__ = [
    "EntityDrift", "FieldDrift", "FieldSpec", "HttpSide", "JobConfig", "ReconcileConfig", "ReconcileError",
    "RepairFailed", "RepairSink", "SideUnavailable", "SqlSide", "UnsupportedSide", "compare_entity",
    "field_authorities",
]
