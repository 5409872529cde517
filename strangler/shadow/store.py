"""The divergence store: a port (`DivergenceStore`) and its SQLAlchemy adapter.

Comparisons are written in batches by a background writer, never on the request path. Every
comparison leaves one row (with the list of fields that differed, so noise can be judged later);
every difference of a candidate comparison leaves a divergence row with both (redacted) values, and
with `store_bodies` one more row (source `body`, field "") holds both redacted bodies.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import orjson
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from strangler.shadow.records import ComparisonRecord
from strangler.store import StoreUnavailable

metadata = MetaData()
comparisons_table = Table(
    "shadow_comparisons",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True)),
    Column("capability", String(200)),
    Column("route", String(500)),
    Column("method", String(16)),
    Column("kind", String(16)),
    Column("outcome", String(16)),
    Column("correlation_id", String(128)),
    Column("serving", String(16)),
    Column("primary_status", Integer),
    Column("other_status", Integer),
    Column("primary_latency_ms", Float),
    Column("other_latency_ms", Float),
    Column("fields", Text),
)
divergences_table = Table(
    "shadow_divergences",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True)),
    Column("capability", String(200)),
    Column("route", String(500)),
    Column("method", String(16)),
    Column("source", String(16)),
    Column("field", String(500)),
    Column("primary_value", Text),
    Column("other_value", Text),
    Column("classification", String(32)),
    Column("correlation_id", String(128)),
    Column("serving", String(16)),
    Column("primary_status", Integer),
    Column("other_status", Integer),
    Column("primary_latency_ms", Float),
    Column("other_latency_ms", Float),
)


@dataclass(frozen=True, slots=True)
class ComparisonRow:
    at: dt.datetime
    capability: str
    route: str
    method: str
    kind: str
    outcome: str
    serving: str
    primary_status: int | None
    other_status: int | None
    primary_latency_ms: float | None
    other_latency_ms: float | None
    fields: tuple[str, ...]


class DivergenceStore(Protocol):
    def record(self, records: Sequence[ComparisonRecord]) -> None:
        """Store a batch of comparisons and their divergences in one transaction (StoreUnavailable)."""
        ...

    def comparisons(self, capability: str, since: dt.datetime, limit: int = 100_000) -> list[ComparisonRow]:
        """Comparison rows of `capability` at or after `since`, newest first, at most `limit`."""
        ...

    def divergences(self, capability: str | None, limit: int = 100) -> list[dict[str, object]]:
        """The most recent divergence rows (values decoded), newest first."""
        ...

    def prune(self, older_than: dt.datetime, keep: int) -> int:
        """Delete rows older than `older_than`, and beyond the newest `keep` per table; return the count."""
        ...


def _json(value: object) -> str:
    return orjson.dumps(value, default=str).decode()


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


# SQLite: comparison rows go to the driver as tuples, without SQLAlchemy's per-row work (half of a row's CPU,
# all of it holding the GIL that the worker's event loop needs), up to `_SQLITE_ROWS` rows in one statement:
# the driver releases and takes back the GIL around every statement step, and each time the writer thread
# takes it back it waits for the event loop's thread to let go, two thread switches per step. DateTime
# columns are text there, in the format SQLAlchemy's SQLite dialect writes and reads back.
_COMPARISON_COLUMNS = [c.name for c in comparisons_table.columns if c.name != "id"]
_SQLITE_ROWS = 500  # x 13 columns: within SQLite's 32,766 parameters per statement
_SQLITE_INSERT = f"INSERT INTO {comparisons_table.name} ({', '.join(_COMPARISON_COLUMNS)}) VALUES "
_SQLITE_VALUES = f"({', '.join(['?'] * len(_COMPARISON_COLUMNS))})"
_SQLITE_DATETIME = "%04d-%02d-%02d %02d:%02d:%02d.%06d"


def _sqlite_row(r: ComparisonRecord) -> tuple[object, ...]:
    at = r.at
    return (_SQLITE_DATETIME % (at.year, at.month, at.day, at.hour, at.minute, at.second, at.microsecond),
            r.capability, r.route, r.method, r.kind, r.outcome, r.correlation_id, r.serving, r.primary_status,
            r.other_status, r.primary_latency_ms, r.other_latency_ms,
            _json([d.path for d in r.differences]) if r.differences else "[]")


class SqlDivergenceStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"

    def record(self, records: Sequence[ComparisonRecord]) -> None:
        if not records:
            return
        comparison_rows: list[object] = []
        divergence_rows = []
        for r in records:
            comparison_rows.append(
                _sqlite_row(r) if self._sqlite else
                dict(at=r.at, capability=r.capability, route=r.route, method=r.method, kind=r.kind,
                     outcome=r.outcome, correlation_id=r.correlation_id, serving=r.serving,
                     primary_status=r.primary_status, other_status=r.other_status,
                     primary_latency_ms=r.primary_latency_ms, other_latency_ms=r.other_latency_ms,
                     fields=_json([d.path for d in r.differences]))
            )
            if r.kind != "candidate":
                continue
            for diff, classification in zip(r.differences, r.classifications, strict=True):
                divergence_rows.append(
                    dict(at=r.at, capability=r.capability, route=r.route, method=r.method, source="response",
                         field=diff.path[:500], primary_value=_json(diff.primary), other_value=_json(diff.other),
                         classification=classification, correlation_id=r.correlation_id, serving=r.serving,
                         primary_status=r.primary_status, other_status=r.other_status,
                         primary_latency_ms=r.primary_latency_ms, other_latency_ms=r.other_latency_ms)
                )
            if r.bodies is not None:
                divergence_rows.append(
                    dict(at=r.at, capability=r.capability, route=r.route, method=r.method, source="body",
                         field="", primary_value=_json(r.bodies[0]), other_value=_json(r.bodies[1]),
                         classification="body", correlation_id=r.correlation_id, serving=r.serving,
                         primary_status=r.primary_status, other_status=r.other_status,
                         primary_latency_ms=r.primary_latency_ms, other_latency_ms=r.other_latency_ms)
                )
        try:
            with self._engine.begin() as conn:
                if self._sqlite:
                    for start in range(0, len(comparison_rows), _SQLITE_ROWS):
                        rows = comparison_rows[start : start + _SQLITE_ROWS]
                        conn.exec_driver_sql(_SQLITE_INSERT + ", ".join([_SQLITE_VALUES] * len(rows)),
                                             tuple(v for row in rows for v in row))  # type: ignore[attr-defined]
                else:
                    conn.execute(insert(comparisons_table), comparison_rows)  # type: ignore[arg-type]
                if divergence_rows:
                    conn.execute(insert(divergences_table), divergence_rows)
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"divergence store: {exc.__class__.__name__}: {exc}") from exc

    def comparisons(self, capability: str, since: dt.datetime, limit: int = 100_000) -> list[ComparisonRow]:
        t = comparisons_table
        query = (
            select(t.c.at, t.c.capability, t.c.route, t.c.method, t.c.kind, t.c.outcome, t.c.serving,
                   t.c.primary_status, t.c.other_status, t.c.primary_latency_ms, t.c.other_latency_ms, t.c.fields)
            .where(t.c.capability == capability, t.c.at >= since)
            .order_by(t.c.id.desc())
            .limit(limit)
        )
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(query).all()
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"divergence store: {exc.__class__.__name__}: {exc}") from exc
        return [
            ComparisonRow(_aware(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10],
                          tuple(orjson.loads(r[11])))
            for r in rows
        ]

    def divergences(self, capability: str | None, limit: int = 100) -> list[dict[str, object]]:
        t = divergences_table
        query = select(t).order_by(t.c.id.desc()).limit(limit)
        if capability is not None:
            query = query.where(t.c.capability == capability)
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(query).mappings().all()
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"divergence store: {exc.__class__.__name__}: {exc}") from exc
        out = []
        for row in rows:
            item = dict(row)
            item["at"] = _aware(item["at"]).isoformat()
            for key in ("primary_value", "other_value"):
                item[key] = orjson.loads(item[key]) if item[key] is not None else None
            out.append(item)
        return out

    def prune(self, older_than: dt.datetime, keep: int) -> int:
        deleted = 0
        try:
            with self._engine.begin() as conn:
                for table in (comparisons_table, divergences_table):
                    deleted += conn.execute(delete(table).where(table.c.at < older_than)).rowcount or 0
                    newest = conn.execute(select(func.max(table.c.id))).scalar()
                    if newest is not None and newest > keep:
                        deleted += conn.execute(delete(table).where(table.c.id <= newest - keep)).rowcount or 0
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"divergence store: {exc.__class__.__name__}: {exc}") from exc
        return deleted
