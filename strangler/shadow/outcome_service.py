"""Running the outcome comparison: feed it events (HTTP callback, Kafka, or in-process), record results.

Results land in the divergence store next to response comparisons (kind `outcome`, divergence source
`outcome`) and advance the maturity ledger: the serving side's event means `propagated`, a match
`reconciled`, a divergence or a missing event `exception`. Events of an entity whose capability is in a
mode that compares nothing (`legacy`, `new-only`) only advance the ledger: no other side is expected.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from pydantic import ValidationError
from sqlalchemy import insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from strangler.events.model import DomainEvent
from strangler.maturity.ledger import Stage, StageEvent
from strangler.shadow.config import OutcomeKafkaConfig
from strangler.shadow.outcomes import OutcomeJoiner, OutcomeResult, Side
from strangler.shadow.records import Redactor
from strangler.shadow.store import comparisons_table, divergences_table
from strangler.store import StoreUnavailable

log = logging.getLogger("strangler.outcomes")


def _always_legacy(aggregate_type: str) -> Side:
    return "legacy"


class OutcomeStore:
    """Writes outcome results into the shadow tables (one comparison row each, one divergence row a field).

    The serving side's value is the `primary` one, as for response comparisons; values under the
    `redact` patterns are masked before they are stored.
    """

    def __init__(self, engine: Engine, capability_of: Callable[[str], str], *,
                 serving_of: Callable[[str], Side] = _always_legacy, redact: Sequence[str] = ()) -> None:
        self._engine = engine
        self._capability_of = capability_of
        self._serving_of = serving_of
        self._redactor = Redactor(list(redact))

    def record(self, results: Sequence[tuple[dt.datetime, OutcomeResult]]) -> None:
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
        try:
            with self._engine.begin() as conn:
                if comparisons:
                    conn.execute(insert(comparisons_table), comparisons)
                if divergences:
                    conn.execute(insert(divergences_table), divergences)
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"outcome store: {exc.__class__.__name__}: {exc}") from exc


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def _lag_ms(r: OutcomeResult) -> float | None:
    if r.legacy is None or r.new is None:
        return None
    return round((r.new.event_time - r.legacy.event_time).total_seconds() * 1000, 3)


def ledger_events(result: OutcomeResult, at: dt.datetime) -> list[StageEvent]:
    cid = result.correlation_id
    if cid is None:
        return []
    if result.kind == "match":
        return [StageEvent(cid, result.aggregate_id, Stage.RECONCILED, at)]
    reason = (f"{result.missing_side} side published no {result.family} event" if result.kind == "missing"
              else "outcome differs: " + ", ".join(f"{f.path} ({f.resolution.classification})" for f in result.fields))
    return [StageEvent(cid, result.aggregate_id, Stage.EXCEPTION, at, detail=reason)]


class OutcomeService:
    """Owns the joiner in one event loop; results go to `record` and the ledger, both non-blocking sinks.

    `serving(aggregate_type)` is the side whose event shows a change propagated; `compared(aggregate_type)`
    says whether the other side is expected to publish too (by default always).
    """

    def __init__(
        self,
        joiner: OutcomeJoiner,
        record: Callable[[tuple[dt.datetime, OutcomeResult]], None],
        ledger: Callable[[StageEvent], None],
        clock: Callable[[], dt.datetime],
        *,
        kafka: OutcomeKafkaConfig | None = None,
        tick: float = 1.0,
        serving: Callable[[str], Side] = _always_legacy,
        compared: Callable[[str], bool] = lambda aggregate_type: True,
    ) -> None:
        self.joiner = joiner
        self._record = record
        self._ledger = ledger
        self._clock = clock
        self._kafka = kafka
        self._tick = tick
        self._serving = serving
        self._compared = compared
        self._task: asyncio.Task[None] | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.counts: dict[str, int] = {"match": 0, "divergence": 0, "missing": 0, "rejected": 0, "uncompared": 0}

    def feed(self, side: Side, event: DomainEvent) -> list[OutcomeResult]:
        now = self._clock()
        if event.correlation_id and side == self._serving(event.aggregate_type):
            # the serving side's change reached the event stream
            self._ledger(StageEvent(event.correlation_id, event.aggregate_id, Stage.PROPAGATED, event.processing_time))
        if not self._compared(event.aggregate_type):
            self.counts["uncompared"] += 1
            return []
        results = self.joiner.add(side, event, now)
        self._emit(results, now)
        return results

    def _emit(self, results: list[OutcomeResult], now: dt.datetime) -> None:
        for result in results:
            self.counts[result.kind] += 1
            self._record((now, result))
            for stage_event in ledger_events(result, now):
                self._ledger(stage_event)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._expire_loop())
        if self._kafka is not None:
            loop = asyncio.get_running_loop()
            thread = threading.Thread(target=self._consume, args=(loop,), daemon=True, name="outcomes-kafka")
            thread.start()
            self._threads.append(thread)

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for thread in self._threads:
            await asyncio.to_thread(thread.join, 10)

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(self._tick)
            now = self._clock()
            self._emit(self.joiner.expire(now), now)

    def _consume(self, loop: asyncio.AbstractEventLoop) -> None:
        """Kafka consumer thread: decodes events and hands each to the loop before reading the next, so
        a commit (every second) never covers an event the joiner has not taken."""
        from confluent_kafka import Consumer, KafkaException

        config = self._kafka
        if config is None:
            return
        sides: dict[str, Side] = {}
        sides.update((t, "legacy") for t in config.legacy_topics)
        sides.update((t, "new") for t in config.new_topics)
        consumer = Consumer({
            "bootstrap.servers": config.bootstrap_servers, "group.id": config.group_id,
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
            "topic.metadata.refresh.interval.ms": 10_000,  # topics created after start are found soon
            **config.settings,
        })
        last_commit = time.monotonic()
        uncommitted = False
        try:
            consumer.subscribe(list(sides))
            while not self._stopping.is_set():
                message = consumer.poll(0.5)
                if message is not None and message.error():
                    log.warning("outcome consumer: %s", message.error())
                elif message is not None:
                    uncommitted = True
                    self._take(message, sides, loop)
                if uncommitted and (time.monotonic() - last_commit >= 1.0 or self._stopping.is_set()):
                    consumer.commit(asynchronous=False)
                    uncommitted, last_commit = False, time.monotonic()
            if uncommitted:
                consumer.commit(asynchronous=False)
        except KafkaException as exc:
            log.error("outcome consumer stopped: %s", exc)
        finally:
            consumer.close()

    def _take(self, message: Any, sides: dict[str, Side], loop: asyncio.AbstractEventLoop) -> None:
        value = message.value()
        if value is None:
            return  # a tombstone: no event
        where = f"{message.topic()}[{message.partition()}]@{message.offset()}"
        try:
            event = DomainEvent.model_validate_json(value)
        except ValidationError as exc:
            self.counts["rejected"] += 1
            log.warning("outcome consumer: %s is not a domain event: %s", where, str(exc).splitlines()[0])
            return
        future = asyncio.run_coroutine_threadsafe(self._feed_async(sides.get(message.topic(), "legacy"), event), loop)
        try:
            future.result(timeout=30)
        except concurrent.futures.TimeoutError:
            log.error("outcome consumer: the comparison did not take %s within 30 s", where)
        except Exception:  # a bug in one event must not stop the consumer
            log.exception("outcome consumer: cannot compare %s", where)

    async def _feed_async(self, side: Side, event: DomainEvent) -> None:
        self.feed(side, event)


def outcome_routes(service: OutcomeService) -> list[Any]:
    """`POST /outcomes/{side}`: a domain event (or a list of them) from `legacy` or `new`, for services that
    call back over HTTP instead of publishing to Kafka."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from strangler.routing.admin_api import problem

    async def receive(request: Request) -> Response:
        side = request.path_params["side"]
        if side not in ("legacy", "new"):
            return problem(404, "Not Found", "side must be 'legacy' or 'new'")
        try:
            body = orjson.loads(await request.body())
            items = body if isinstance(body, list) else [body]
            events = [DomainEvent.model_validate(item) for item in items]
        except (orjson.JSONDecodeError, ValidationError) as exc:
            return problem(422, "Unprocessable Content", f"not a domain event: {str(exc).splitlines()[0]}")
        results = [r for event in events for r in service.feed(side, event)]
        return JSONResponse({"accepted": len(events), "results": [
            {"kind": r.kind, "aggregate_type": r.aggregate_type, "aggregate_id": r.aggregate_id,
             "family": r.family, "correlation_id": r.correlation_id,
             "fields": [{"path": f.path, "classification": f.resolution.classification,
                         "winner": f.resolution.winner, "explanation": f.resolution.explanation} for f in r.fields]}
            for r in results]}, status_code=202)

    return [Route("/outcomes/{side}", receive, methods=["POST"])]
