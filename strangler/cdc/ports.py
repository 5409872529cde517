"""The ports of a connector: where changes come from and where their events go.

A source hands out records in order, each run of records followed by a `Checkpoint`; the connector sends the
records to a sink and, once the sink has acknowledged every record before a checkpoint, hands that checkpoint
back to the source, which may then advance its durable position past it. That is the whole delivery
guarantee: at least once, nothing lost, duplicates only in the unacknowledged tail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from strangler.cdc.envelope import Record

DeliveryCallback = Callable[[Any, Any], None]  # (error or None, message); confluent-kafka's signature


@dataclass(slots=True)
class Checkpoint:
    position: Any  # the source's own: an LSN, a changelog id, snapshot progress
    commit_time_us: int | None = None  # of the change just before it, for the lag


@dataclass
class SourceStatus:
    phase: str = "starting"  # starting | snapshot | streaming | done
    lag_bytes: int | None = None
    snapshot_rows: int = 0
    snapshot_total: int | None = None  # an estimate
    snapshot_table: str | None = None
    duplicates: int = 0
    confirmed: str | None = None  # the durable position, for people
    counts: dict[tuple[str, str], int] = field(default_factory=dict)  # (table, op) -> events


class ChangeSource(Protocol):
    def start(self) -> None:
        """Connect and prepare (slot, publication, triggers), decide whether to snapshot, resume where the
        durable position says. Raises SourceError, UnmappableColumn."""

    def read(self, max_items: int, timeout: float) -> list[Record | Checkpoint]:
        """The next records and checkpoints in source order, at most about `max_items`; [] when nothing
        arrived within `timeout` seconds. Raises SourceError when the source is lost."""

    def acknowledge(self, checkpoint: Checkpoint) -> None:
        """Every record before `checkpoint` has been acknowledged by the sink. Called in order."""

    def confirm(self) -> None:
        """Make the acknowledged position durable at the source (slot feedback, offset row)."""

    def heartbeat(self, now_us: int) -> list[Record | Checkpoint]:
        """Called every heartbeat interval when idle or not: records to send (may be none)."""

    @property
    def finished(self) -> bool:
        """True when there is nothing more to read (snapshot: initial_only)."""

    @property
    def status(self) -> SourceStatus: ...

    def close(self) -> None: ...


class ChangeMapping(Protocol):
    """Domain events made in-process from the change records a connector reads (`map_domain_events`)."""

    def open(self) -> None:
        """Connect; raises SinkError if the events cannot be published at all."""

    def send(self, records: list[Record], on_done: Callable[[], Callable[[], None]]) -> None:
        """Map each change record (tombstones produce nothing) and publish its domain events and dead letters.
        For each change mapped, `on_done()` is called once at once and the callback it returns is called once
        every output of that change is acknowledged; never after a loss, which raises SinkError from a later
        `send`, `poll` or `flush` instead."""

    def poll(self, timeout: float) -> None:
        """Serve acknowledgements, waiting up to `timeout` seconds for one; SinkError after a loss."""

    def flush(self, timeout: float) -> int:
        """Wait up to `timeout` seconds for every output; the number still unacknowledged."""

    def close(self) -> None: ...


class EventSink(Protocol):
    def open(self) -> None:
        """Connect; raises SinkError if the sink cannot be used at all."""

    def send(self, record: Record, on_delivery: DeliveryCallback) -> None:
        """Queue one record; `on_delivery(error, message)` is called from `poll` or `flush` once the record is
        acknowledged (error None) or lost. May block briefly when the sink's queue is full."""

    def send_many(self, records: list[Record], on_delivery: DeliveryCallback) -> None:
        """`send` for each record, with the same callback (called once per record)."""

    def poll(self, timeout: float) -> None:
        """Serve delivery callbacks, waiting up to `timeout` seconds for one."""

    def flush(self, timeout: float) -> int:
        """Wait up to `timeout` seconds for every queued record; the number still unacknowledged."""

    def problem(self) -> tuple[float, str] | None:
        """(monotonic time, description) of the last error the sink reported (broker unreachable, ...)."""

    def close(self) -> None: ...
