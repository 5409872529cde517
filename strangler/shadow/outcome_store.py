"""The outcome comparison's store: its results in the shadow tables, and its own state (the events waiting
for their partner, the ids it has taken) so that a restart resumes the joins instead of forgetting them.

A batch (`OutcomeBatch`) is written in one transaction: results, the maturity ledger's stage events,
waiting events added and removed, seen ids. Whatever was taken before a batch was written is either all
there after a crash or not at all.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Column, DateTime, MetaData, String, Table, Text, delete, func, insert, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from strangler.events.model import DomainEvent
from strangler.maturity.ledger import StageEvent
from strangler.maturity.store import SqlLedgerStore
from strangler.shadow.outcomes import OutcomeResult, Side
from strangler.shadow.records import Redactor
from strangler.shadow.store import comparisons_table, divergences_table
from strangler.store import StoreUnavailable

metadata = MetaData()
pending_table = Table(  # an event waiting for the other side's; removed when joined or expired
    "outcome_pending",
    metadata,
    Column("side", String(8), primary_key=True),
    Column("event_key", String(100), primary_key=True),
    Column("origin", String(300), nullable=False),  # where it came from: "topic:partition", "" for HTTP
    Column("arrived", DateTime(timezone=True), nullable=False),
    Column("event", Text, nullable=False),
)
seen_table = Table(  # an event taken (waiting, joined or expired): the same id again is a duplicate
    "outcome_seen",
    metadata,
    Column("side", String(8), primary_key=True),
    Column("event_key", String(100), primary_key=True),
    Column("event_id", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)

_KEY_LENGTH = 100


def event_key(event_id: str) -> str:
    """The id as the tables key it: itself, or its SHA-256 when it is longer than the key column."""
    if len(event_id) <= _KEY_LENGTH and not event_id.startswith("sha256:"):
        return event_id
    return "sha256:" + hashlib.sha256(event_id.encode()).hexdigest()


def _always_legacy(aggregate_type: str) -> Side:
    return "legacy"


@dataclass
class OutcomeBatch:
    """What the outcome comparison did since its last write. An event that starts and stops waiting within
    one batch never reaches the store."""

    results: list[tuple[dt.datetime, OutcomeResult]] = field(default_factory=list)
    stages: list[StageEvent] = field(default_factory=list)
    waiting: dict[tuple[Side, str], tuple[DomainEvent, dt.datetime, str]] = field(default_factory=dict)
    resolved: set[tuple[Side, str]] = field(default_factory=set)
    seen: dict[tuple[Side, str], dt.datetime] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.results or self.stages or self.waiting or self.resolved or self.seen)

    def wait(self, side: Side, event: DomainEvent, arrived: dt.datetime, origin: str = "") -> None:
        self.waiting[(side, event.event_id)] = (event, arrived, origin)

    def resolve(self, side: Side, event_id: str) -> None:
        if self.waiting.pop((side, event_id), None) is None:
            self.resolved.add((side, event_id))

    def see(self, side: Side, event_id: str, at: dt.datetime) -> None:
        self.seen.setdefault((side, event_id), at)

    def then(self, later: OutcomeBatch) -> OutcomeBatch:
        """This batch followed by a later one, as one (a batch that could not be written goes first again)."""
        self.results.extend(later.results)
        self.stages.extend(later.stages)
        for key in later.resolved:
            self.resolve(*key)
        self.waiting.update(later.waiting)
        for key, at in later.seen.items():
            self.seen.setdefault(key, at)
        return self


@dataclass(frozen=True)
class RestoredOutcomes:
    """The state a previous run left: waiting events in arrival order with where they came from, the newest
    seen ids (oldest first), and the last time an event was taken (None for a new store)."""

    waiting: list[tuple[Side, DomainEvent, dt.datetime, str]]
    seen: list[tuple[Side, str]]
    last_active: dt.datetime | None


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)  # SQLite drops the zone


class OutcomeStore:
    """Writes outcome results into the shadow tables (one comparison row each, one divergence row a field)
    and their stage events into the maturity ledger, and keeps the comparison's state.

    The serving side's value is the `primary` one, as for response comparisons; values under the
    `redact` patterns are masked before they are stored.
    """

    def __init__(self, engine: Engine, capability_of: Callable[[str], str], *,
                 serving_of: Callable[[str], Side] = _always_legacy, redact: Sequence[str] = ()) -> None:
        self._engine = engine
        self._ledger = SqlLedgerStore(engine)
        self._capability_of = capability_of
        self._serving_of = serving_of
        self._redactor = Redactor(list(redact))
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    def record(self, results: Sequence[tuple[dt.datetime, OutcomeResult]]) -> None:
        """Write results only (StoreUnavailable on failure)."""
        self.write(OutcomeBatch(results=list(results)))

    def write(self, batch: OutcomeBatch) -> None:
        """Write a batch in one transaction: all of it or, with StoreUnavailable, none of it."""
        try:
            with self._engine.begin() as conn:
                self._write(conn, batch)
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"outcome store: {exc.__class__.__name__}: {exc}") from exc

    def restore(self, remember: int, origins: Collection[str] | None = None) -> RestoredOutcomes:
        """The waiting events (those from `origins`, or all) and the newest `remember` seen ids
        (StoreUnavailable on failure)."""
        t = pending_table
        query = select(t.c.side, t.c.arrived, t.c.event, t.c.origin).order_by(t.c.arrived)
        if origins is not None:
            query = query.where(t.c.origin.in_(list(origins)))
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(query).all()
                seen = conn.execute(select(seen_table.c.side, seen_table.c.event_id)
                                    .order_by(seen_table.c.at.desc()).limit(remember)).all()
                last = conn.execute(select(func.max(seen_table.c.at))).scalar()
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"outcome store: {exc.__class__.__name__}: {exc}") from exc
        waiting = [(side, DomainEvent.model_validate_json(event), _aware(arrived), origin)
                   for side, arrived, event, origin in rows]
        return RestoredOutcomes(waiting, [(side, event_id) for side, event_id in reversed(seen)],
                                _aware(last) if last is not None else None)

    def prune_seen(self, keep: dt.timedelta) -> int:
        """Forget seen ids taken more than `keep` before the newest one (activity, not the clock: a long stop
        forgets nothing). Returns how many."""
        try:
            with self._engine.begin() as conn:
                newest = conn.execute(select(func.max(seen_table.c.at))).scalar()
                if newest is None:
                    return 0
                return conn.execute(delete(seen_table).where(seen_table.c.at < newest - keep)).rowcount or 0
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"outcome store: {exc.__class__.__name__}: {exc}") from exc

    def _write(self, conn: Connection, batch: OutcomeBatch) -> None:
        if batch.resolved:
            keys = [(side, event_key(event_id)) for side, event_id in batch.resolved]
            for start in range(0, len(keys), 500):
                conn.execute(delete(pending_table).where(
                    tuple_(pending_table.c.side, pending_table.c.event_key).in_(keys[start:start + 500])))
        if batch.waiting:  # (a batch retried after a commit whose answer was lost finds its rows there)
            conn.execute(self._insert(pending_table).on_conflict_do_nothing(), [
                dict(side=side, event_key=event_key(event_id), origin=origin[:300], arrived=arrived,
                     event=event.to_json().decode())
                for (side, event_id), (event, arrived, origin) in batch.waiting.items()])
        if batch.seen:
            # a redelivered event after a restart may be seen again when its id was beyond what was restored
            conn.execute(self._insert(seen_table).on_conflict_do_nothing(), [
                dict(side=side, event_key=event_key(event_id), event_id=event_id, at=at)
                for (side, event_id), at in batch.seen.items()])
        comparisons, divergences = self._result_rows(batch.results)
        if comparisons:
            conn.execute(insert(comparisons_table), comparisons)
        if divergences:
            conn.execute(insert(divergences_table), divergences)
        self._ledger.write(conn, batch.stages)

    def _result_rows(
        self, results: Sequence[tuple[dt.datetime, OutcomeResult]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        comparisons, divergences = [], []
        for at, r in results:
            capability = self._capability_of(r.aggregate_type)
            serving = self._serving_of(r.aggregate_type)
            cid = (r.correlation_id or "")[:128]
            paths = [self._redactor.path(f.path) for f in r.fields] if r.kind == "divergence" else (
                [f"<missing:{r.missing_side}>"] if r.kind == "missing" else [])
            lag = _lag_ms(r)
            comparisons.append(dict(at=at, capability=capability, route=r.family[:500], method="EVENT",
                                    kind="outcome", outcome=r.kind, correlation_id=cid, serving=serving,
                                    primary_status=None, other_status=None, primary_latency_ms=None,
                                    other_latency_ms=lag, fields=orjson.dumps(paths).decode()))
            base = dict(at=at, capability=capability, route=r.family[:500], method="EVENT", source="outcome",
                        correlation_id=cid, serving=serving, primary_status=None, other_status=None,
                        primary_latency_ms=None, other_latency_ms=lag)
            for f in r.fields:
                legacy, new = self._redactor.value(f.path, f.legacy), self._redactor.value(f.path, f.new)
                primary, other = (new, legacy) if serving == "new" else (legacy, new)
                divergences.append(dict(base, field=self._redactor.path(f.path)[:500], primary_value=_json(primary),
                                        other_value=_json(other), classification=f.resolution.classification))
            if r.kind == "missing":
                seen = r.legacy or r.new
                present = {"aggregate_id": r.aggregate_id, "event_id": seen.event_id if seen else None}
                primary, other = (present, None) if r.missing_side != serving else (None, present)
                divergences.append(dict(base, field=paths[0], primary_value=_json(primary), other_value=_json(other),
                                        classification="missing"))
        return comparisons, divergences


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def _lag_ms(r: OutcomeResult) -> float | None:
    if r.legacy is None or r.new is None:
        return None
    return round((r.new.event_time - r.legacy.event_time).total_seconds() * 1000, 3)
