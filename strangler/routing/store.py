"""The flag store: a port (`FlagStore`) and its SQLAlchemy adapter (SQLite or PostgreSQL).

A change is a compare-and-set on the flag's version inside one transaction that also writes the audit
row and bumps the store-wide change counter, so concurrent writers never lose an update and pollers
learn of a change with one cheap query. On PostgreSQL the transaction also sends `NOTIFY strangler_flags`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from strangler.routing.errors import GateRefused, VersionConflict
from strangler.routing.gate import GateDecision
from strangler.routing.modes import Mode, RoutingFlag
from strangler.store import StoreUnavailable

NOTIFY_CHANNEL = "strangler_flags"
metadata = MetaData()
meta_table = Table(
    "strangler_meta", metadata, Column("key", String(64), primary_key=True), Column("value", BigInteger)
)
flags_table = Table(
    "routing_flags",
    metadata,
    Column("capability", String(200), primary_key=True),
    Column("mode", String(16)),
    Column("percent", Float),
    Column("version", Integer),
    Column("updated_at", DateTime(timezone=True)),
    Column("updated_by", String(200)),
    Column("reason", Text),
)
audit_table = Table(
    "routing_flag_audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("capability", String(200)),
    Column("at", DateTime(timezone=True)),
    Column("actor", String(200)),
    Column("from_mode", String(16)),
    Column("from_percent", Float),
    Column("to_mode", String(16)),
    Column("to_percent", Float),
    Column("version", Integer),
    Column("reason", Text),
    Column("forced", Boolean),
    Column("evidence", Text),
)


@dataclass(frozen=True, slots=True)
class StoredFlag:
    capability: str
    mode: Mode
    percent: float
    version: int
    updated_at: dt.datetime | None
    updated_by: str | None
    reason: str | None

    @property
    def routing(self) -> RoutingFlag:
        return RoutingFlag(self.mode, self.percent, self.version)

    def as_dict(self) -> dict[str, object]:
        return {
            "capability": self.capability,
            "mode": self.mode.value,
            "percent": self.percent,
            "version": self.version,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "updated_by": self.updated_by,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class AuditEntry:
    capability: str
    at: dt.datetime
    actor: str
    from_mode: str
    from_percent: float
    to_mode: str
    to_percent: float
    version: int
    reason: str
    forced: bool
    evidence: dict[str, object] | None

    def as_dict(self) -> dict[str, object]:
        return {
            "capability": self.capability,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "from": {"mode": self.from_mode, "percent": self.from_percent},
            "to": {"mode": self.to_mode, "percent": self.to_percent},
            "version": self.version,
            "reason": self.reason,
            "forced": self.forced,
            "evidence": self.evidence,
        }


@dataclass(frozen=True, slots=True)
class FlagChange:
    mode: Mode
    percent: float
    reason: str
    actor: str


Judge = Callable[[RoutingFlag], GateDecision]


class FlagStore(Protocol):
    def change_counter(self) -> int:
        """A number that grows with every flag change: the one cheap query pollers run."""
        ...

    def load(self) -> dict[str, StoredFlag]:
        """Every stored flag (capabilities never changed are absent: they run their initial mode)."""
        ...

    def change(self, capability: str, change: FlagChange, expected_version: int | None, judge: Judge) -> StoredFlag:
        """Apply `change` if `judge(current)` allows it, atomically with its audit row.

        Raises VersionConflict when `expected_version` is stale (or another writer won the race),
        GateRefused when the judge refuses, StoreUnavailable when the store cannot be used. `judge` runs
        inside the write transaction: it must not use the store; whatever it raises propagates, nothing
        written.
        """
        ...

    def history(self, capability: str, limit: int = 100) -> list[AuditEntry]:
        """Audit entries of `capability`, newest first."""
        ...


class SqlFlagStore:
    def __init__(self, engine: Engine, initial: Mapping[str, RoutingFlag], clock: Callable[[], dt.datetime]) -> None:
        self._engine = engine
        self._initial = dict(initial)
        self._clock = clock
        self._notify = engine.dialect.name == "postgresql"

    def change_counter(self) -> int:
        try:
            with self._engine.connect() as conn:
                value = conn.execute(select(meta_table.c.value).where(meta_table.c.key == "flags_version")).scalar()
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"flag store: {exc.__class__.__name__}: {exc}") from exc
        return int(value or 0)

    def load(self) -> dict[str, StoredFlag]:
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(select(flags_table)).mappings().all()
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"flag store: {exc.__class__.__name__}: {exc}") from exc
        return {row["capability"]: _flag(row) for row in rows}

    def current(self, capability: str) -> StoredFlag:
        return self.load().get(capability) or self._initial_flag(capability)

    def _initial_flag(self, capability: str) -> StoredFlag:
        initial = self._initial[capability]
        return StoredFlag(capability, initial.mode, initial.percent, 0, None, None, None)

    def change(self, capability: str, change: FlagChange, expected_version: int | None, judge: Judge) -> StoredFlag:
        try:
            with self._engine.begin() as conn:
                row = conn.execute(select(flags_table).where(flags_table.c.capability == capability)).mappings().first()
                current = _flag(row) if row is not None else self._initial_flag(capability)
                if expected_version is not None and expected_version != current.version:
                    raise VersionConflict(current)
                decision = judge(current.routing)
                if not decision.allowed:
                    raise GateRefused(decision)
                now = self._clock()
                values = dict(
                    mode=change.mode.value,
                    percent=change.percent,
                    version=current.version + 1,
                    updated_at=now,
                    updated_by=change.actor,
                    reason=change.reason,
                )
                if row is None:
                    conn.execute(insert(flags_table).values(capability=capability, **values))
                else:
                    result = conn.execute(
                        update(flags_table)
                        .where(flags_table.c.capability == capability, flags_table.c.version == current.version)
                        .values(**values)
                    )
                    if result.rowcount != 1:  # another writer committed since our read: show its flag
                        reread = conn.execute(
                            select(flags_table).where(flags_table.c.capability == capability)
                        ).mappings().first()
                        raise VersionConflict(_flag(reread) if reread is not None else current)
                conn.execute(
                    insert(audit_table).values(
                        capability=capability,
                        at=now,
                        actor=change.actor,
                        from_mode=current.mode.value,
                        from_percent=current.percent,
                        to_mode=change.mode.value,
                        to_percent=change.percent,
                        version=current.version + 1,
                        reason=change.reason,
                        forced=decision.forced,
                        evidence=json.dumps(decision.as_dict()),
                    )
                )
                conn.execute(
                    update(meta_table).where(meta_table.c.key == "flags_version").values(value=meta_table.c.value + 1)
                )
                if self._notify:
                    conn.execute(text(f"NOTIFY {NOTIFY_CHANNEL}"))
        except IntegrityError as exc:  # another writer inserted the first row concurrently
            raise VersionConflict(self._reread(capability)) from exc
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"flag store: {exc.__class__.__name__}: {exc}") from exc
        return StoredFlag(
            capability, change.mode, change.percent, current.version + 1, now, change.actor, change.reason
        )

    def _reread(self, capability: str) -> StoredFlag:
        try:
            return self.current(capability)
        except StoreUnavailable:
            return self._initial_flag(capability)

    def history(self, capability: str, limit: int = 100) -> list[AuditEntry]:
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(
                    select(audit_table)
                    .where(audit_table.c.capability == capability)
                    .order_by(audit_table.c.id.desc())
                    .limit(limit)
                ).mappings().all()
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"flag store: {exc.__class__.__name__}: {exc}") from exc
        return [
            AuditEntry(
                capability=row["capability"],
                at=_aware(row["at"]),
                actor=row["actor"],
                from_mode=row["from_mode"],
                from_percent=row["from_percent"],
                to_mode=row["to_mode"],
                to_percent=row["to_percent"],
                version=row["version"],
                reason=row["reason"],
                forced=bool(row["forced"]),
                evidence=json.loads(row["evidence"]) if row["evidence"] else None,
            )
            for row in rows
        ]


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _flag(row: Mapping[Any, Any]) -> StoredFlag:
    updated_at = row["updated_at"]
    return StoredFlag(
        capability=str(row["capability"]),
        mode=Mode(str(row["mode"])),
        percent=float(row["percent"]),
        version=int(row["version"]),
        updated_at=_aware(updated_at) if isinstance(updated_at, dt.datetime) else None,
        updated_by=str(row["updated_by"]) if row["updated_by"] is not None else None,
        reason=str(row["reason"]) if row["reason"] is not None else None,
    )
