"""The ledger's store: a port (`LedgerStore`) and its SQLAlchemy adapter.

Recording is idempotent: each stage's time is set once (the first report wins), so replays and
duplicate events from an at-least-once pipeline change nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy import Column, DateTime, MetaData, String, Table, Text, case, exists, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from strangler.maturity.ledger import Journey, Stage, StageEvent
from strangler.store import StoreUnavailable

metadata = MetaData()
changes_table = Table(
    "maturity_changes",
    metadata,
    Column("correlation_id", String(128), primary_key=True),
    Column("entity_key", String(300), primary_key=True),
    Column("capability", String(200)),
    Column("accepted_at", DateTime(timezone=True)),
    Column("applied_at", DateTime(timezone=True)),
    Column("propagated_at", DateTime(timezone=True)),
    Column("reconciled_at", DateTime(timezone=True)),
    Column("exception_at", DateTime(timezone=True)),
    Column("exception_reason", Text),
    Column("updated_at", DateTime(timezone=True)),
)
_STAGE_COLUMNS = {stage: f"{stage.value}_at" for stage in Stage}


class LedgerStore(Protocol):
    def record(self, events: Sequence[StageEvent]) -> None:
        """Record stage events; a stage already recorded keeps its first time (StoreUnavailable on failure)."""
        ...

    def journeys(self, correlation_id: str) -> list[Journey]:
        """Every entity's journey under `correlation_id` (empty when unknown)."""
        ...

    def recent(self, since: dt.datetime, limit: int = 100_000) -> list[Journey]:
        """Journeys updated at or after `since`, newest first."""
        ...


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


class SqlLedgerStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    def record(self, events: Sequence[StageEvent]) -> None:
        if not events:
            return
        try:
            with self._engine.begin() as conn:
                self.write(conn, events)
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"maturity ledger: {exc.__class__.__name__}: {exc}") from exc

    def write(self, conn: Connection, events: Sequence[StageEvent]) -> None:
        """Record stage events in the caller's transaction (a writer whose own rows must go with them)."""
        for event in events:
            for key in self._entity_keys(conn, event):
                conn.execute(self._upsert(event, key))

    @staticmethod
    def _entity_keys(conn: Connection, event: StageEvent) -> list[str]:
        """The rows a stage event belongs to. The gateway cannot always tell the entity (a create has no id
        in its path) and records it under ""; the first stage that names the entity adopts that row, and
        a stage without an entity joins the rows of its correlation id that have one."""
        t = changes_table
        cid = event.correlation_id
        if not event.entity_key:
            keys = conn.execute(select(t.c.entity_key).where(t.c.correlation_id == cid, t.c.entity_key != "")).all()
            return [k for (k,) in keys] or [""]
        same = t.alias("same")
        conn.execute(
            update(t)
            .where(t.c.correlation_id == cid, t.c.entity_key == "",
                   ~exists().where(same.c.correlation_id == cid, same.c.entity_key == event.entity_key))
            .values(entity_key=event.entity_key)
        )
        return [event.entity_key]

    def _upsert(self, event: StageEvent, entity_key: str) -> Any:
        t = changes_table
        column = _STAGE_COLUMNS[event.stage]
        values: dict[str, Any] = {"correlation_id": event.correlation_id, "entity_key": entity_key,
                                  "capability": event.capability, column: event.at, "updated_at": event.at}
        if event.stage is Stage.EXCEPTION:
            values["exception_reason"] = event.detail
        stmt = self._insert(t).values(**values)
        excluded = stmt.excluded
        updates = {  # each stage keeps its first time; the row's updated_at only moves forward
            column: func.coalesce(t.c[column], excluded[column]),
            "capability": func.coalesce(t.c.capability, excluded.capability),
            "updated_at": case((t.c.updated_at < excluded.updated_at, excluded.updated_at), else_=t.c.updated_at),
        }
        if event.stage is Stage.EXCEPTION:
            updates["exception_reason"] = func.coalesce(t.c.exception_reason, excluded.exception_reason)
        return stmt.on_conflict_do_update(index_elements=["correlation_id", "entity_key"], set_=updates)

    def journeys(self, correlation_id: str) -> list[Journey]:
        return self._select(select(changes_table).where(changes_table.c.correlation_id == correlation_id))

    def recent(self, since: dt.datetime, limit: int = 100_000) -> list[Journey]:
        t = changes_table
        return self._select(select(t).where(t.c.updated_at >= since).order_by(t.c.updated_at.desc()).limit(limit))

    def _select(self, query: object) -> list[Journey]:
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(query).mappings().all()  # type: ignore[call-overload]
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"maturity ledger: {exc.__class__.__name__}: {exc}") from exc
        out = []
        for row in rows:
            stages = {}
            for stage, column in _STAGE_COLUMNS.items():
                at = _aware(row[column])
                if at is not None:
                    stages[stage] = at
            out.append(Journey(row["correlation_id"], row["entity_key"], row["capability"], stages,
                               row["exception_reason"]))
        return out
