"""One connector: read changes from a source, send their events to a sink, and advance the source only past
what the sink acknowledged. A failure of either side ends the session; the next one starts again from the
source's durable position, after a back-off (tenacity), so nothing is lost and duplicates stay bounded by
what was in flight.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
from tenacity import RetryCallState, RetryError, Retrying, retry_if_exception, stop_when_event_set

from strangler.cdc.checkpoint import AckTracker
from strangler.cdc.config import ConnectorConfig
from strangler.cdc.errors import SinkError, SlotLost, SourceError
from strangler.cdc.metrics import CdcMetrics
from strangler.cdc.ports import ChangeMapping, ChangeSource, EventSink

log = logging.getLogger("strangler.cdc")
_STALL_AFTER = 10.0  # seconds without an acknowledgement, with events in flight, before reporting unhealthy
_OBSERVE_EVERY = 0.5
_DRAIN_TIMEOUT = 30.0


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, (SourceError, SinkError)) and not isinstance(exc, SlotLost)


class Connector:
    def __init__(
        self,
        name: str,
        config: ConnectorConfig,
        *,
        make_source: Callable[[], ChangeSource],
        make_sink: Callable[[], EventSink],
        metrics: CdcMetrics,
        heartbeat: tuple[str, str] | None = None,
        heartbeat_interval: float = 0.0,
        lag_warning_bytes: int = 1 << 30,
        make_mapping: Callable[[], ChangeMapping] | None = None,
        publish_changes: bool = True,
    ) -> None:
        self.name = name
        self.config = config
        self.make_source = make_source
        self.make_sink = make_sink
        self.metrics = metrics
        self.heartbeat = heartbeat  # (topic, server name) of Debezium-style heartbeat records, if any
        self.heartbeat_interval = heartbeat_interval
        self.lag_warning_bytes = lag_warning_bytes
        if not publish_changes and make_mapping is None:
            raise ValueError("a connector that publishes no change events must map them to domain events")
        self.make_mapping = make_mapping  # domain events made in-process, if any
        self.publish_changes = publish_changes
        self.phase = "starting"
        self.healthy = False
        self.reason: str | None = "starting"
        self.acknowledged = 0  # across sessions
        self.mapped = 0  # changes whose domain events were acknowledged, across sessions
        self.duplicates = 0
        self.lag_seconds = 0.0
        self.lag_bytes: int | None = None
        self.snapshot: dict[str, Any] = {}
        self.confirmed: str | None = None
        self.in_flight = 0
        self._failures = 0
        self._progressed = False
        self._session_acks = 0
        self._session_mapped = 0
        self._session_duplicates = 0
        self._last_ack = time.monotonic()
        self._last_commit_us: int | None = None
        self._warned_lag = False

    # -- lifecycle ------------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Run sessions until `stop` is set or the source is finished; raises errors that retrying cannot
        fix (configuration, unmappable columns, a lost slot)."""
        retrying = Retrying(
            retry=retry_if_exception(_retryable),
            wait=self._backoff,
            stop=stop_when_event_set(stop),
            sleep=lambda seconds: None if stop.wait(seconds) else None,
            before_sleep=self._before_retry,
        )
        try:
            for attempt in retrying:
                with attempt:
                    self._session(stop)
        except RetryError:
            pass  # stopped while waiting to retry
        self.phase = "stopped" if self.phase != "done" else "done"

    def _backoff(self, state: RetryCallState) -> float:
        if self._progressed:  # the last session delivered something: start the back-off afresh
            self._failures, self._progressed = 0, False
        self._failures += 1
        return float(min(self.config.retry_max_wait, 0.5 * 2 ** (self._failures - 1)) * random.uniform(0.8, 1.2))

    def _before_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0
        log.warning("cdc %s: %s; retrying in %.1f s", self.name, exc, wait)

    def _unhealthy(self, reason: str) -> None:
        self.healthy, self.reason = False, reason
        self.metrics.healthy.labels(self.name).set(0)

    def _healthy(self) -> None:
        self.healthy, self.reason = True, None
        self.metrics.healthy.labels(self.name).set(1)

    # -- one session ----------------------------------------------------------------------------------

    def _session(self, stop: threading.Event) -> None:
        source, sink, tracker = self.make_source(), self.make_sink(), AckTracker()
        mapping = self.make_mapping() if self.make_mapping is not None else None
        self._session_acks = self._session_mapped = self._session_duplicates = 0
        self.metrics.forget_counts(self.name)
        try:
            sink.open()
            if mapping is not None:
                mapping.open()
            source.start()
            self._last_ack = time.monotonic()
            self._healthy()
            self._loop(stop, source, sink, tracker, mapping)
            remaining = sink.flush(_DRAIN_TIMEOUT)
            if mapping is not None:
                remaining += mapping.flush(_DRAIN_TIMEOUT)
            self._advance(source, tracker)
            source.confirm()
            if remaining:
                log.warning("cdc %s: %d events were not acknowledged before exit; they will be re-read",
                            self.name, remaining)
            self._observe(source, sink, tracker, time.monotonic())
        except SinkError as exc:
            self.metrics.sink_errors.labels(self.name).inc()
            self._unhealthy(str(exc))
            raise
        except SourceError as exc:
            self.metrics.source_errors.labels(self.name).inc()
            self._unhealthy(str(exc))
            raise
        finally:
            self._fold(source, tracker)
            self.in_flight = 0
            source.close()
            sink.close()
            if mapping is not None:
                mapping.close()

    def _loop(self, stop: threading.Event, source: ChangeSource, sink: EventSink, tracker: AckTracker,
              mapping: ChangeMapping | None) -> None:
        cfg = self.config
        now = time.monotonic()
        next_confirm = now + cfg.confirm_interval
        next_heartbeat = now + self.heartbeat_interval if self.heartbeat_interval > 0 else float("inf")
        next_observe = now
        while not stop.is_set():
            if tracker.in_flight < cfg.max_in_flight:
                # with events in flight, wait on the source only briefly: deliveries are served below
                items = source.read(cfg.batch_size, 0.005 if tracker.in_flight else 0.2)
                self._send(items, sink, tracker, mapping)
                sink.poll(0)
                if mapping is not None:
                    mapping.poll(0)
            elif mapping is None:
                sink.poll(0.05)
            else:
                sink.poll(0.02)
                mapping.poll(0.02)
            self._advance(source, tracker)
            now = time.monotonic()
            if now >= next_confirm:
                source.confirm()
                next_confirm = now + cfg.confirm_interval
            if now >= next_heartbeat:
                self._heartbeat(source, sink, tracker)
                next_heartbeat = now + self.heartbeat_interval
            if now >= next_observe:
                self._observe(source, sink, tracker, now)
                next_observe = now + _OBSERVE_EVERY
            if source.finished and tracker.in_flight == 0 and not tracker.waiting:
                self.phase = "done"
                return

    def _send(self, items: list[Any], sink: EventSink, tracker: AckTracker, mapping: ChangeMapping | None) -> None:
        """Each run of records goes to the sink with its unit's callback (and to the mapping, each change one
        more output of the unit); each checkpoint closes the unit."""
        start = 0
        for index, item in enumerate(items):
            if type(item) is not tuple:
                if index > start:
                    self._send_run(items[start:index], sink, tracker, mapping)
                tracker.close(item)
                start = index + 1
        if start < len(items):
            self._send_run(items[start:] if start else items, sink, tracker, mapping)

    def _send_run(self, records: list[Any], sink: EventSink, tracker: AckTracker,
                  mapping: ChangeMapping | None) -> None:
        if self.publish_changes:
            sink.send_many(records, tracker.sending(len(records)))
        if mapping is not None:
            mapping.send(records, tracker.mapping)

    def _advance(self, source: ChangeSource, tracker: AckTracker) -> None:
        if tracker.errors:
            raise SinkError(f"the sink lost events: {tracker.errors[0]}")
        for checkpoint in tracker.completed():
            source.acknowledge(checkpoint)
            if checkpoint.commit_time_us is not None:
                self._last_commit_us = checkpoint.commit_time_us

    def _heartbeat(self, source: ChangeSource, sink: EventSink, tracker: AckTracker) -> None:
        now_us = time.time_ns() // 1000
        for item in source.heartbeat(now_us):
            if type(item) is tuple:
                sink.send(item, tracker.sending())
            else:
                tracker.close(item)  # type: ignore[arg-type]
        if self.heartbeat is not None:
            topic, server = self.heartbeat
            record = (topic, orjson.dumps({"serverName": server}), orjson.dumps({"ts_ms": now_us // 1000}), None)
            sink.send(record, tracker.sending())

    def _observe(self, source: ChangeSource, sink: EventSink, tracker: AckTracker, now: float) -> None:
        if tracker.acknowledged > self._session_acks or tracker.mapped > self._session_mapped:
            self._last_ack = now
            self._progressed = True
        self._fold(source, tracker)
        status = source.status
        self.phase = status.phase
        self.in_flight = tracker.in_flight
        self.metrics.in_flight.labels(self.name).set(tracker.in_flight)
        self.confirmed = status.confirmed
        self.snapshot = {"rows": status.snapshot_rows, "total": status.snapshot_total, "table": status.snapshot_table}
        self.metrics.snapshot_rows.labels(self.name).set(status.snapshot_rows)
        if status.snapshot_total is not None:
            self.metrics.snapshot_total.labels(self.name).set(status.snapshot_total)
        caught_up = tracker.in_flight == 0 and not tracker.waiting
        self.lag_seconds = 0.0 if caught_up or self._last_commit_us is None else max(
            0.0, time.time() - self._last_commit_us / 1e6)
        self.metrics.lag_seconds.labels(self.name).set(self.lag_seconds)
        if status.lag_bytes is not None:
            self.lag_bytes = status.lag_bytes
            self.metrics.lag_bytes.labels(self.name).set(status.lag_bytes)
            over = status.lag_bytes > self.lag_warning_bytes
            self.metrics.lag_warning.labels(self.name).set(1 if over else 0)
            if over and not self._warned_lag:
                log.warning("cdc %s: the slot holds %d bytes of WAL (over %d)", self.name, status.lag_bytes,
                            self.lag_warning_bytes)
            self._warned_lag = over
        problem = sink.problem()
        if problem is not None and problem[0] > self._last_ack:
            self._unhealthy(f"sink: {problem[1]}")
        elif tracker.in_flight and now - self._last_ack > _STALL_AFTER:
            self._unhealthy(f"no acknowledgement for {now - self._last_ack:.0f} s, {tracker.in_flight} in flight")
        else:
            self._healthy()

    def _fold(self, source: ChangeSource, tracker: AckTracker) -> None:
        status = source.status
        self.metrics.fold_counts(self.name, status.counts)
        new_acks = tracker.acknowledged - self._session_acks
        if new_acks > 0:
            self.metrics.acknowledged.labels(self.name).inc(new_acks)
            self.acknowledged += new_acks
            self._session_acks = tracker.acknowledged
        new_mapped = tracker.mapped - self._session_mapped
        if new_mapped > 0:
            self.metrics.mapped.labels(self.name).inc(new_mapped)
            self.mapped += new_mapped
            self._session_mapped = tracker.mapped
        new_duplicates = status.duplicates - self._session_duplicates
        if new_duplicates > 0:
            self.metrics.duplicates.labels(self.name).inc(new_duplicates)
            self.duplicates += new_duplicates
            self._session_duplicates = status.duplicates

    def report(self) -> dict[str, Any]:
        return {
            "connector": self.name, "phase": self.phase, "healthy": self.healthy, "reason": self.reason,
            "acknowledged": self.acknowledged, "mapped": self.mapped, "in_flight": self.in_flight,
            "lag_seconds": self.lag_seconds, "lag_bytes": self.lag_bytes, "duplicates": self.duplicates,
            "confirmed": self.confirmed, "snapshot": self.snapshot,
        }
