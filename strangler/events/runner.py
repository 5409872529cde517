"""`strangler events run`: the mapper as a Kafka consumer group, committing offsets only behind acknowledged
outputs.

Each consumed change gets a place in its partition's queue of offsets; when every output of the change is
acknowledged its place is marked done, and the committed offset advances over the done prefix only. A
crash therefore re-reads, at most, the changes after the last commit: their events are published again
with the same ids (they are derived from the source position) and consumers deduplicate them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from strangler.events.config import ConsumeConfig, DomainEventsConfig
from strangler.events.errors import DeliveryFailed, EventsError
from strangler.events.mapping import DomainEventMapper
from strangler.events.pipeline import DomainEventPipeline, PipelineStats
from strangler.events.ports import RecordSink
from strangler.events.sinks import JsonlRecordSink, KafkaRecordSink
from strangler.maturity.ledger import StageEvent

log = logging.getLogger("strangler.events")

# A consumer group's first join takes ~20 s with librdkafka's defaults against some brokers; these make it fast.
FAST_GROUP = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
# Measured against Tansu: fetches that wait up to librdkafka's default 500 ms for data cost a quarter of the
# mapper's throughput; 50 ms keeps the fetch pipeline full. A topic created after the subscription (the
# connector creates its topics with its first event) is found within 10 s instead of librdkafka's 5 minutes.
FETCH = {"fetch.wait.max.ms": 50, "topic.metadata.refresh.interval.ms": 10_000}


class _Place:
    __slots__ = ("offset", "done", "tracker")

    def __init__(self, offset: int, tracker: OffsetTracker) -> None:
        self.offset = offset
        self.done = False
        self.tracker = tracker

    def finish(self) -> None:
        if not self.done:
            self.done = True
            self.tracker.waiting -= 1


class OffsetTracker:
    """Per partition, the consumed offsets in order and which are done; `ready` pops the done prefix."""

    def __init__(self) -> None:
        self._queues: dict[tuple[str, int], deque[_Place]] = {}
        self.waiting = 0  # changes consumed whose outputs are not all acknowledged yet

    def add(self, topic: str, partition: int, offset: int) -> Callable[[], None]:
        place = _Place(offset, self)
        self._queues.setdefault((topic, partition), deque()).append(place)
        self.waiting += 1
        return place.finish

    def ready(self, partitions: set[tuple[str, int]] | None = None) -> dict[tuple[str, int], int]:
        """The offset to commit (next to read) for each partition whose done prefix grew."""
        out = {}
        for tp, queue in self._queues.items():
            if partitions is not None and tp not in partitions:
                continue
            last = None
            while queue and queue[0].done:
                last = queue.popleft().offset
            if last is not None:
                out[tp] = last + 1
        return out

    def in_flight(self) -> int:
        """Changes whose outputs are not all acknowledged. Done changes waiting for the next commit do not
        count: back-pressure that counted them would wait for a commit it never reaches."""
        return self.waiting

    def forget(self, partitions: set[tuple[str, int]]) -> None:
        for tp in partitions:
            for place in self._queues.pop(tp, ()):
                if not place.done:
                    place.done = True  # a late acknowledgement must not count it twice
                    self.waiting -= 1


class KafkaMapperRunner:
    def __init__(self, pipeline: DomainEventPipeline, consume: ConsumeConfig, *, commit_interval: float = 1.0,
                 max_in_flight: int = 20_000, batch: int = 500,
                 after_commit: Callable[[], None] | None = None) -> None:
        self.pipeline = pipeline
        self.after_commit = after_commit
        self.consume = consume
        self.commit_interval = commit_interval
        self.max_in_flight = max_in_flight
        self.batch = batch
        self.tracker = OffsetTracker()
        self.committed: dict[tuple[str, int], int] = {}
        self._consumer: Any = None

    def run(self, stop: threading.Event, *, on_ready: Callable[[], None] | None = None) -> PipelineStats:
        """Consume, map and publish until `stop` is set; then flush and commit. DeliveryFailed when an output
        was not acknowledged (offsets stay behind it, so a restart maps the change again)."""
        from confluent_kafka import Consumer

        settings: dict[str, Any] = {"bootstrap.servers": self.consume.bootstrap_servers,
                                    "group.id": self.consume.group_id, "auto.offset.reset": "earliest",
                                    **FAST_GROUP, **FETCH, **self.consume.settings,
                                    "enable.auto.commit": False, "enable.auto.offset.store": False}
        consumer = self._consumer = Consumer(settings)
        consumer.subscribe(list(self.consume.topics), on_revoke=self._revoked)
        if on_ready is not None:
            on_ready()
        last_commit = time.monotonic()
        try:
            while not stop.is_set():
                for message in consumer.consume(self.batch, 0.2):
                    self._take(message)
                self.pipeline.poll(0)
                while self.tracker.in_flight() > self.max_in_flight and not stop.is_set():
                    self.pipeline.poll(0.05)  # back-pressure: wait for acknowledgements before reading on
                if time.monotonic() - last_commit >= self.commit_interval:
                    self._commit()
                    if self.after_commit is not None:
                        self.after_commit()
                    last_commit = time.monotonic()
            self.pipeline.flush(30.0)
        except DeliveryFailed:
            self._commit()  # what was acknowledged before the failure stays done
            raise
        finally:
            try:
                self._commit()
            finally:
                consumer.close()
                self._consumer = None
        return self.pipeline.stats

    def _take(self, message: Any) -> None:
        error = message.error()
        if error is not None:
            if error.fatal():
                raise EventsError(f"the consumer failed: {error}")
            log.warning("consumer: %s", error)
            return
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        done = self.tracker.add(topic, partition, offset)
        self.pipeline.submit_raw(message.key(), message.value(), f"{topic}/{partition}/{offset}", done,
                                 source={"topic": topic, "partition": partition, "offset": offset})

    def _commit(self, partitions: set[tuple[str, int]] | None = None) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        if self.pipeline.failure is None:
            self.pipeline.poll(0)
        ready = self.tracker.ready(partitions)
        if not ready or self._consumer is None:
            return
        offsets = [TopicPartition(topic, partition, offset) for (topic, partition), offset in ready.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:  # e.g. during a rebalance: the changes are re-read, never lost
            log.warning("cannot commit offsets yet: %s", exc)
            return
        self.committed.update(ready)

    def _revoked(self, consumer: Any, partitions: list[Any]) -> None:
        """Before partitions go to another member: wait for their outputs, commit what is done, forget them."""
        revoked = {(p.topic, p.partition) for p in partitions}
        try:
            self.pipeline.flush(30.0)
        except DeliveryFailed as exc:
            log.error("partitions revoked with outputs not acknowledged: %s", exc)
        self._commit(revoked)
        self.tracker.forget(revoked)


def build_pipeline(
    config: DomainEventsConfig,
    *,
    events: RecordSink | None = None,
    ledger: Callable[[StageEvent], None] | None = None,
    producer: Mapping[str, Any] | None = None,
) -> DomainEventPipeline:
    """The pipeline a configuration describes. `events`: a sink of the caller's own (a connector's producer),
    instead of the one `publish` names."""
    if events is None:
        publish = config.publish
        if publish is None:
            raise EventsError("domain_events.publish is not configured: nowhere to send the events")
        events = (JsonlRecordSink(publish.path) if publish.path is not None
                  else KafkaRecordSink(publish.bootstrap_servers or "", {**publish.producer, **(producer or {})}))
    dead = config.dead_letter
    dead_sink = JsonlRecordSink(dead.path) if dead.path is not None else None
    return DomainEventPipeline(DomainEventMapper(config), events, dead_letters=dead_sink,
                               dead_letter_topic=dead.topic or "dead-letters", ledger=ledger)
