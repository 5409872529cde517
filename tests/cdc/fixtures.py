"""Captured tables and envelopes for unit tests, built the way the PostgreSQL source builds them."""

from __future__ import annotations

from strangler.cdc.envelope import Envelope
from strangler.cdc.pgoutput import Relation
from strangler.cdc.tables import CapturedTable, CaptureRules, ColumnFacts, capture_table
from strangler.cdc.values import PgType

TYPES = {
    23: PgType(23, "int4"),
    25: PgType(25, "text"),
    1700: PgType(1700, "numeric"),
    1184: PgType(1184, "timestamptz"),
}
RULES = CaptureRules("legacy", table_include=["public\\..*"], column_exclude=["public\\.customers\\.secret"])


def describe(relation: Relation) -> CapturedTable | None:
    if not RULES.captures(relation.namespace, relation.name):
        return None
    key = tuple(c.name for c in relation.columns if c.part_of_identity) if relation.replica_identity == "d" \
        else ("id",)
    columns = [ColumnFacts(c.name, c.type_oid, c.type_modifier) for c in relation.columns]
    return capture_table(relation.relation_id, relation.namespace, relation.name, columns, key, TYPES, RULES,
                         relation.replica_identity)


def envelope(**kwargs: object) -> Envelope:
    return Envelope(name="legacy", connector="postgresql", db="crm", **kwargs)  # type: ignore[arg-type]
