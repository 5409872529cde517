"""The drift store: runs with their checkpoints, and drift records with first seen, last seen, resolution.

A drift record is one (job, entity key, field) while it lasts: a run that sees it again moves `last_seen`
(and the values); a finished run resolves every open record it did not see. A run's checkpoint is the
list of chunks done, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from strangler.maturity.ledger import Stage, StageEvent
from strangler.maturity.store import changes_table
from strangler.reconcile.drift import EntityDrift
from strangler.store import StoreUnavailable

metadata = MetaData()
runs_table = Table(
    "reconcile_runs",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("job", String(200)),
    Column("plan", Text),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("status", String(16)),
    Column("chunks_done", Text),
    Column("compared", BigInteger),
    Column("drifted", Integer),
    Column("errors", Integer),
)
drift_table = Table(
    "reconcile_drift",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("job", String(200)),
    Column("entity_key", String(300)),
    Column("field", String(200)),
    Column("key", Text),
    Column("legacy_value", Text),
    Column("new_value", Text),
    Column("classification", String(32)),
    Column("authority", String(16)),
    Column("first_seen", DateTime(timezone=True)),
    Column("last_seen", DateTime(timezone=True)),
    Column("resolved_at", DateTime(timezone=True)),
)


@dataclass(frozen=True, slots=True)
class Run:
    id: int
    job: str
    plan: str
    started_at: dt.datetime
    status: str
    chunks_done: tuple[int, ...]
    compared: int
    drifted: int
    errors: int


class DriftStore(Protocol):
    def open_run(self, job: str, fingerprint: str, plan: str, now: dt.datetime) -> Run:
        """The job's unfinished run planned under the same `fingerprint` (to resume), else a new one with `plan`."""
        ...

    def chunk_done(self, run: Run, chunk: int, drift: Sequence[EntityDrift], compared: int, errors: int,
                   now: dt.datetime) -> Run:
        """Records a chunk's drift (first/last seen) and adds the chunk to the run's checkpoint, atomically."""
        ...

    def finish(self, run: Run, now: dt.datetime, resolve: bool) -> int:
        """Marks the run done; with `resolve`, resolves the open drift it did not see. Returns the count resolved."""
        ...

    def open_drift(self, job: str | None, limit: int = 1000) -> list[dict[str, Any]]:
        """Open drift records, oldest first."""
        ...


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


class SqlDriftStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def _fail(self, exc: SQLAlchemyError) -> StoreUnavailable:
        return StoreUnavailable(f"drift store: {exc.__class__.__name__}: {exc}")

    def open_run(self, job: str, fingerprint: str, plan: str, now: dt.datetime) -> Run:
        t = runs_table
        try:
            with self._engine.begin() as conn:
                row = conn.execute(select(t).where(t.c.job == job, t.c.status == "running")
                                   .order_by(t.c.id.desc()).limit(1)).mappings().first()
                if row is not None and orjson.loads(row["plan"]).get("config") == fingerprint:
                    return _run(row)
                if row is not None:  # the configuration changed: the checkpoint is void
                    conn.execute(update(t).where(t.c.id == row["id"]).values(status="abandoned", finished_at=now))
                new_id = conn.execute(insert(t).values(job=job, plan=plan, started_at=now, status="running",
                                                       chunks_done="[]", compared=0, drifted=0, errors=0)
                                      .returning(t.c.id)).scalar_one()
        except SQLAlchemyError as exc:
            raise self._fail(exc) from exc
        return Run(int(new_id), job, plan, now, "running", (), 0, 0, 0)

    def chunk_done(self, run: Run, chunk: int, drift: Sequence[EntityDrift], compared: int, errors: int,
                   now: dt.datetime) -> Run:
        d = drift_table
        done = (*run.chunks_done, chunk)
        try:
            with self._engine.begin() as conn:
                for start in range(0, len(drift), 500):
                    batch = drift[start:start + 500]
                    keys = [e.entity_key[:300] for e in batch]
                    existing = {
                        (r.entity_key, r.field): r.id
                        for r in conn.execute(select(d.c.id, d.c.entity_key, d.c.field).where(
                            d.c.job == run.job, d.c.resolved_at.is_(None), d.c.entity_key.in_(keys)))
                    }
                    inserts = []
                    for entity in batch:
                        key_json = orjson.dumps(list(entity.key), default=str).decode()
                        for f in entity.fields:
                            values = dict(legacy_value=f.legacy, new_value=f.new, classification=f.classification,
                                          authority=f.authority, last_seen=now)
                            record = existing.get((entity.entity_key[:300], f.field))
                            if record is not None:
                                conn.execute(update(d).where(d.c.id == record).values(**values))
                            else:
                                inserts.append(dict(values, job=run.job, entity_key=entity.entity_key[:300],
                                                    field=f.field, key=key_json, first_seen=now))
                    if inserts:
                        conn.execute(insert(d), inserts)
                conn.execute(update(runs_table).where(runs_table.c.id == run.id).values(
                    chunks_done=orjson.dumps(done).decode(), compared=runs_table.c.compared + compared,
                    drifted=runs_table.c.drifted + len(drift), errors=runs_table.c.errors + errors))
        except SQLAlchemyError as exc:
            raise self._fail(exc) from exc
        return Run(run.id, run.job, run.plan, run.started_at, run.status, done, run.compared + compared,
                   run.drifted + len(drift), run.errors + errors)

    def finish(self, run: Run, now: dt.datetime, resolve: bool) -> int:
        d = drift_table
        try:
            with self._engine.begin() as conn:
                resolved = 0
                if resolve:
                    resolved = conn.execute(update(d).where(
                        d.c.job == run.job, d.c.resolved_at.is_(None), d.c.last_seen < run.started_at
                    ).values(resolved_at=now)).rowcount or 0
                conn.execute(update(runs_table).where(runs_table.c.id == run.id)
                             .values(status="done", finished_at=now))
        except SQLAlchemyError as exc:
            raise self._fail(exc) from exc
        return resolved

    def open_drift(self, job: str | None, limit: int = 1000) -> list[dict[str, Any]]:
        d = drift_table
        query = select(d).where(d.c.resolved_at.is_(None)).order_by(d.c.first_seen, d.c.id).limit(limit)
        if job is not None:
            query = query.where(d.c.job == job)
        return self._rows(query)

    def drift_since(self, job: str, since: dt.datetime, limit: int = 1_000_000) -> list[dict[str, Any]]:
        """Open drift records of `job` seen at or after `since` (by a run that began then), by entity key."""
        d = drift_table
        return self._rows(select(d).where(d.c.job == job, d.c.resolved_at.is_(None), d.c.last_seen >= since)
                          .order_by(d.c.entity_key, d.c.field).limit(limit))

    def summary(self, now: dt.datetime) -> dict[str, dict[str, float]]:
        """Per job with open drift: drifted entities and the oldest drift's age in seconds."""
        d = drift_table
        query = (select(d.c.job, func.count(func.distinct(d.c.entity_key)), func.min(d.c.first_seen))
                 .where(d.c.resolved_at.is_(None)).group_by(d.c.job))
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(query).all()
        except SQLAlchemyError as exc:
            raise self._fail(exc) from exc
        out = {}
        for job, entities, oldest in rows:
            first = _aware(oldest)
            out[job] = {"drifted_entities": int(entities),
                        "oldest_drift_seconds": max(0.0, (now - first).total_seconds()) if first else 0.0}
        return out

    def runs(self, job: str, limit: int = 10) -> list[dict[str, Any]]:
        t = runs_table
        return self._rows(select(t).where(t.c.job == job).order_by(t.c.id.desc()).limit(limit))

    def _rows(self, query: Any) -> list[dict[str, Any]]:
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(query).mappings().all()
        except SQLAlchemyError as exc:
            raise self._fail(exc) from exc
        out = []
        for row in rows:
            item = dict(row)
            for name, value in item.items():
                if isinstance(value, dt.datetime):
                    item[name] = _aware(value).isoformat()  # type: ignore[union-attr]
            out.append(item)
        return out

    def reconciled_changes(self, job: str, capability: str, run: Run, now: dt.datetime) -> list[StageEvent]:
        """Ledger changes of `capability` applied before `run` began, whose entity has no open drift in `job`."""
        c, d = changes_table, drift_table
        drifting = select(d.c.entity_key).where(d.c.job == job, d.c.resolved_at.is_(None))
        query = select(c.c.correlation_id, c.c.entity_key).where(and_(
            c.c.capability == capability, c.c.reconciled_at.is_(None), c.c.exception_at.is_(None),
            c.c.applied_at.is_not(None), c.c.applied_at <= run.started_at, c.c.entity_key.not_in(drifting)))
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(query).all()
        except SQLAlchemyError as exc:
            raise self._fail(exc) from exc
        return [StageEvent(cid, key, Stage.RECONCILED, now, capability, f"reconciliation {job} run {run.id}")
                for cid, key in rows]


def _run(row: Any) -> Run:
    return Run(int(row["id"]), row["job"], row["plan"], _aware(row["started_at"]) or dt.datetime.now(dt.UTC),
               row["status"], tuple(orjson.loads(row["chunks_done"] or "[]")), int(row["compared"] or 0),
               int(row["drifted"] or 0), int(row["errors"] or 0))
