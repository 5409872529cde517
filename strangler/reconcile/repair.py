"""Repair on request: the authoritative side's current state as a `<Entity>StateReconciled` domain event.

Reconciliation never writes into either system. It publishes, for each drifted entity, what the
authoritative side holds now (`source: reconciliation`), so the lagging side can re-apply it. Event ids
are deterministic per (job, run, entity), so a repeated delivery of one run's events is a duplicate.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import orjson

from strangler.events.model import DomainEvent
from strangler.precedence.rules import Side
from strangler.reconcile.config import RepairSink
from strangler.reconcile.drift import EntityDrift
from strangler.reconcile.errors import RepairFailed

SOURCE = "reconciliation"


def event_type_for(entity: str) -> str:
    """`customer` -> `CustomerStateReconciled`, `order-line` -> `OrderLineStateReconciled`."""
    words = entity.replace("-", "_").replace(".", "_").split("_")
    return "".join(w[:1].upper() + w[1:] for w in words if w) + "StateReconciled"


def state_event(
    job: str, entity: str, drift: EntityDrift, key_names: Sequence[str], authorities: Mapping[str, Side | None],
    run_id: int, read_at: dt.datetime, now: dt.datetime,
) -> DomainEvent | None:
    """The repair event for one drifted entity; None when no drifted field has an authoritative side."""
    drifted = [f.field for f in drift.fields]
    owned = {name: side for name, side in authorities.items() if side is not None}
    if not owned:
        return None
    state: dict[str, Any] = {}
    absent: set[str] = set()
    for name, side in owned.items():
        row = drift.state(side)
        if row is None:
            absent.add(side)
        else:
            state[name] = row[name]
    key = dict(zip(key_names, drift.key, strict=True))
    event_id = uuid.uuid5(uuid.NAMESPACE_URL, f"strangler:reconcile:{job}:{run_id}:{drift.entity_key}")
    return DomainEvent(
        event_id=str(event_id), event_type=event_type_for(entity), event_version=1, aggregate_type=entity,
        aggregate_id=drift.entity_key, event_time=read_at, processing_time=now, source=SOURCE,
        sequence=f"{job}/{run_id}",
        payload={"job": job, "key": key, "state": state, "absent_on": sorted(absent), "authority": owned,
                 "drifted": drifted},
    )


class RepairPublisher(Protocol):
    def publish(self, events: Sequence[DomainEvent]) -> None:
        """Deliver every event durably before returning; RepairFailed if any could not be delivered."""
        ...

    def close(self) -> None:
        ...


def encode(event: DomainEvent) -> bytes:
    return orjson.dumps(event.model_dump(mode="json"))


class JsonlRepairPublisher:
    """Appends one JSON line per event and fsyncs before returning."""

    def __init__(self, path: str) -> None:
        self.path = path

    def publish(self, events: Sequence[DomainEvent]) -> None:
        if not events:
            return
        try:
            with open(self.path, "ab") as fh:
                fh.write(b"".join(encode(e) + b"\n" for e in events))
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise RepairFailed(f"cannot write repair events to {self.path}: {exc}") from exc

    def close(self) -> None:
        pass


class KafkaRepairPublisher:
    """Produces to one topic (key: the aggregate id) with acks=all and an idempotent producer."""

    def __init__(self, bootstrap_servers: str, topic: str, settings: Mapping[str, Any] | None = None) -> None:
        from confluent_kafka import Producer

        self.topic = topic
        self._producer = Producer({**(settings or {}), "bootstrap.servers": bootstrap_servers, "acks": "all",
                                   "enable.idempotence": True, "linger.ms": 5})

    def publish(self, events: Sequence[DomainEvent], timeout: float = 30.0) -> None:
        failures: list[str] = []

        def delivered(err: Any, msg: Any) -> None:
            if err is not None:
                failures.append(str(err))

        for event in events:
            while True:
                try:
                    self._producer.produce(self.topic, key=event.aggregate_id.encode(), value=encode(event),
                                           on_delivery=delivered)
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    self._producer.poll(0.1)
            self._producer.poll(0)
        remaining = self._producer.flush(timeout)
        if failures or remaining:
            raise RepairFailed(f"{len(failures)} repair events failed and {remaining} were not delivered "
                               f"to {self.topic}: {failures[:3]}")

    def close(self) -> None:
        self._producer.flush(10.0)


def repair_publisher(sink: RepairSink) -> RepairPublisher:
    if sink.kind == "kafka":
        return KafkaRepairPublisher(str(sink.bootstrap_servers), str(sink.topic), sink.settings)
    return JsonlRepairPublisher(str(sink.path))
