"""The mapping pipeline: change events in, typed domain events and dead letters out through record sinks.

A change is done only when every output it produced (events and dead letters alike) is acknowledged by
its sink; then, and only then, its `on_done` runs, so a caller (the Kafka runner committing offsets, a
connector confirming its replication slot) never moves past a change whose outputs could still be lost.
An output that is never acknowledged stops the pipeline (`DeliveryFailed`): its change stays undone.

Used in-process by a connector (`submit` per change, or `run` over an iterable of (key, value, position))
or by `strangler events run` reading Kafka (`submit_raw`, bytes as they arrive).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from strangler.events.errors import DeliveryFailed
from strangler.events.mapping import DeadLetter, DomainEventMapper, MappingResult
from strangler.events.model import DomainEvent
from strangler.events.ports import Ack, RecordSink
from strangler.maturity.ledger import Stage, StageEvent

log = logging.getLogger("strangler.events")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(slots=True)
class PipelineStats:
    changes: int = 0
    events: int = 0
    dead_letters: int = 0
    done: int = 0  # changes whose outputs are all acknowledged


class _Ticket:
    """Counts one change's outputs down to zero, then calls its `on_done` (never after a failure)."""

    __slots__ = ("remaining", "on_done", "pipeline")

    def __init__(self, remaining: int, on_done: Callable[[], None] | None, pipeline: DomainEventPipeline) -> None:
        self.remaining = remaining
        self.on_done = on_done
        self.pipeline = pipeline

    def ack(self, error: Exception | None) -> None:
        if error is not None:
            self.pipeline.fail(error)
            self.remaining = -1
            return
        self.remaining -= 1
        if self.remaining == 0:
            self.pipeline.stats.done += 1
            if self.on_done is not None:
                self.on_done()


def encode_event(event: DomainEvent) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) of an event's record: keyed by aggregate id, so one aggregate stays in order."""
    headers = [("event_id", event.event_id.encode()), ("event_type", event.event_type.encode()),
               ("event_version", str(event.event_version).encode())]
    if event.correlation_id:
        headers.append(("correlation_id", event.correlation_id.encode()))
    return event.aggregate_id.encode(), event.to_json(), headers


class DomainEventPipeline:
    def __init__(
        self,
        mapper: DomainEventMapper,
        events: RecordSink,
        *,
        dead_letters: RecordSink | None = None,
        dead_letter_topic: str = "dead-letters",
        clock: Callable[[], dt.datetime] = utcnow,
        ledger: Callable[[StageEvent], None] | None = None,
    ) -> None:
        self.mapper = mapper
        self.events = events
        self.dead_letters = dead_letters or events
        self.dead_letter_topic = dead_letter_topic
        self.clock = clock
        self.ledger = ledger
        self.stats = PipelineStats()
        self.failure: Exception | None = None

    def fail(self, error: Exception) -> None:
        if self.failure is None:
            self.failure = error
            log.error("an output was not acknowledged; the mapper stops: %s", error)

    def submit(self, key: Any, value: Any, position: str, on_done: Callable[[], None] | None = None, *,
               source: Mapping[str, Any] | None = None, raw_key: bytes | None = None) -> MappingResult:
        """Map one change (decoded JSON key and value) read at `position` and send its outputs; `on_done` runs
        once all are acknowledged (at once when there are none). `source` (e.g. topic, partition, offset)
        goes into dead letters."""
        self._check()
        result = self.mapper.map(key, value, position, self.clock())
        self._send(result, key if raw_key is None else raw_key, on_done, source)
        return result

    def submit_raw(self, key: bytes | None, value: bytes | None, position: str,
                   on_done: Callable[[], None] | None = None, *, source: Mapping[str, Any] | None = None) -> None:
        """As `submit`, for a record's bytes: a key or value that is not JSON becomes a dead letter."""
        self._check()
        decoded: list[Any] = []
        for which, data in (("key", key), ("value", value)):
            try:
                decoded.append(orjson.loads(data) if data else None)
            except orjson.JSONDecodeError as exc:
                dead = DeadLetter(f"the {which} is not JSON: {exc}", position, _text(key), _text(value), self.clock())
                self._send(MappingResult(dead=[dead]), key, on_done, source)
                return
        self.submit(decoded[0], decoded[1], position, on_done, source=source, raw_key=key)

    def run(self, changes: Iterable[tuple[Any, Any, str]], *, flush_timeout: float = 60.0) -> PipelineStats:
        """Map every (key, value, position) of `changes` and wait for every acknowledgement (in-process use)."""
        for i, (key, value, position) in enumerate(changes):
            self.submit(key, value, position)
            if i % 1000 == 999:
                self.poll(0)
        self.flush(flush_timeout)
        return self.stats

    def poll(self, timeout: float = 0) -> None:
        """Serve the sinks' acknowledgements (DeliveryFailed once one failed)."""
        self.events.poll(timeout)
        if self.dead_letters is not self.events:
            self.dead_letters.poll(0)
        self._check()

    def flush(self, timeout: float) -> None:
        """Wait for every acknowledgement; DeliveryFailed if one failed or did not come within `timeout`."""
        waiting = self.drain(timeout)
        if waiting:
            raise DeliveryFailed(f"{waiting} outputs were not acknowledged within {timeout:g} s")

    def drain(self, timeout: float) -> int:
        """Wait up to `timeout` seconds for every acknowledgement; the number of outputs still waiting.
        DeliveryFailed if one failed."""
        waiting = self.events.flush(timeout)
        if self.dead_letters is not self.events:
            waiting += self.dead_letters.flush(timeout)
        self._check()
        return waiting

    def close(self) -> None:
        self.events.close()
        if self.dead_letters is not self.events:
            self.dead_letters.close()

    def _check(self) -> None:
        if self.failure is not None:
            raise DeliveryFailed(str(self.failure)) from self.failure

    def _send(self, result: MappingResult, key: Any, on_done: Callable[[], None] | None,
              source: Mapping[str, Any] | None) -> None:
        self.stats.changes += 1
        outputs = len(result.events) + len(result.dead)
        ticket = _Ticket(outputs, on_done, self)
        if outputs == 0:
            ticket.remaining = 1
            ticket.ack(None)
            return
        for topic, event in result.events:
            record_key, value, headers = encode_event(event)
            self.events.send(topic, record_key, value, headers, ticket.ack)
        self.stats.events += len(result.events)
        for dead in result.dead:
            self.dead_letters.send(self.dead_letter_topic, _key_bytes(key), self._dead_value(dead, source),
                                   [("reason", dead.reason[:1000].encode())], self._dead_ack(dead, ticket.ack))
        self.stats.dead_letters += len(result.dead)

    def _dead_value(self, dead: DeadLetter, source: Mapping[str, Any] | None) -> bytes:
        body = dead.as_dict()
        body["source"] = dict(source) if source is not None else None
        body["mapper"] = self.mapper.config.source
        return orjson.dumps(body, default=str)

    def _dead_ack(self, dead: DeadLetter, ack: Ack) -> Ack:
        if self.ledger is None or not dead.correlation_id:
            return ack
        ledger, cid = self.ledger, dead.correlation_id

        def acknowledged(error: Exception | None) -> None:
            if error is None:  # the request's journey shows why its change went nowhere
                ledger(StageEvent(cid, dead.entity_key or "", Stage.EXCEPTION, dead.at,
                                  detail=f"dead letter: {dead.reason}"[:2000]))
            ack(error)

        return acknowledged


def _key_bytes(key: Any) -> bytes | None:
    if key is None or isinstance(key, bytes):
        return key
    return orjson.dumps(key, option=orjson.OPT_SORT_KEYS)


def _text(data: bytes | None) -> str | None:
    return data.decode("utf-8", "replace") if data is not None else None
