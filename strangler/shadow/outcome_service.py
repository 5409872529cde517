"""Running the outcome comparison: feed it events (HTTP callback, Kafka, or in-process), record results.

Results land in the divergence store next to response comparisons (kind `outcome`, divergence source
`outcome`) and advance the maturity ledger: a match means `reconciled`, a divergence or a missing event
means `exception`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import threading
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
from strangler.shadow.store import comparisons_table, divergences_table
from strangler.store import StoreUnavailable

log = logging.getLogger("strangler.outcomes")


class OutcomeStore:
    """Writes outcome results into the shadow tables (one comparison row each, one divergence row a field)."""

    def __init__(self, engine: Engine, capability_of: Callable[[str], str]) -> None:
        self._engine = engine
        self._capability_of = capability_of

    def record(self, results: Sequence[tuple[dt.datetime, OutcomeResult]]) -> None:
        comparisons, divergences = [], []
        for at, r in results:
            capability = self._capability_of(r.aggregate_type)
            cid = r.correlation_id or ""
            paths = [f.path for f in r.fields] if r.kind == "divergence" else (
                [f"<missing:{r.missing_side}>"] if r.kind == "missing" else [])
            comparisons.append(dict(at=at, capability=capability, route=r.family, method="EVENT", kind="outcome",
                                    outcome=r.kind, correlation_id=cid, serving="legacy", primary_status=None,
                                    other_status=None, primary_latency_ms=None, other_latency_ms=_lag_ms(r),
                                    fields=orjson.dumps(paths).decode()))
            base = dict(at=at, capability=capability, route=r.family, method="EVENT", source="outcome",
                        correlation_id=cid, serving="legacy", primary_status=None, other_status=None,
                        primary_latency_ms=None, other_latency_ms=_lag_ms(r))
            for f in r.fields:
                divergences.append(dict(base, field=f.path[:500], primary_value=_json(f.legacy),
                                        other_value=_json(f.new), classification=f.resolution.classification))
            if r.kind == "missing":
                present = r.legacy or r.new
                divergences.append(dict(base, field=paths[0], primary_value=_json(r.legacy and r.legacy.event_id),
                                        other_value=_json(r.new and r.new.event_id),
                                        classification=f"missing ({present.aggregate_id if present else '?'})"))
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
    """Owns the joiner in one event loop; results go to `record` and the ledger, both non-blocking sinks."""

    def __init__(
        self,
        joiner: OutcomeJoiner,
        record: Callable[[tuple[dt.datetime, OutcomeResult]], None],
        ledger: Callable[[StageEvent], None],
        clock: Callable[[], dt.datetime],
        *,
        kafka: OutcomeKafkaConfig | None = None,
        tick: float = 1.0,
    ) -> None:
        self.joiner = joiner
        self._record = record
        self._ledger = ledger
        self._clock = clock
        self._kafka = kafka
        self._tick = tick
        self._task: asyncio.Task[None] | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.counts: dict[str, int] = {"match": 0, "divergence": 0, "missing": 0, "rejected": 0}

    def feed(self, side: Side, event: DomainEvent) -> list[OutcomeResult]:
        now = self._clock()
        if side == "legacy" and event.correlation_id:  # the authoritative change reached the event stream
            self._ledger(StageEvent(event.correlation_id, event.aggregate_id, Stage.PROPAGATED, event.processing_time))
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
            await asyncio.to_thread(thread.join, 5)

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(self._tick)
            now = self._clock()
            self._emit(self.joiner.expire(now), now)

    def _consume(self, loop: asyncio.AbstractEventLoop) -> None:
        """Kafka consumer thread: decodes events and hands them to the loop; commits after handing over."""
        from confluent_kafka import Consumer, KafkaException

        config = self._kafka
        if config is None:
            return
        sides = {t: "legacy" for t in config.legacy_topics} | {t: "new" for t in config.new_topics}
        consumer = Consumer({
            "bootstrap.servers": config.bootstrap_servers, "group.id": config.group_id,
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000, "heartbeat.interval.ms": 500, **config.settings,
        })
        try:
            consumer.subscribe(list(sides))
            while not self._stopping.is_set():
                message = consumer.poll(0.5)
                if message is None:
                    continue
                if message.error():
                    log.warning("outcome consumer: %s", message.error())
                    continue
                side = sides.get(message.topic())
                try:
                    event = DomainEvent.model_validate_json(message.value() or b"")
                except ValidationError as exc:
                    self.counts["rejected"] += 1
                    log.warning("outcome consumer: %s[%d]@%d is not a domain event: %s", message.topic(),
                                message.partition(), message.offset(), str(exc).splitlines()[0])
                    consumer.commit(message=message, asynchronous=False)
                    continue
                future = asyncio.run_coroutine_threadsafe(self._feed_async(side or "legacy", event), loop)
                future.result(timeout=30)
                consumer.commit(message=message, asynchronous=False)
        except KafkaException as exc:
            log.error("outcome consumer stopped: %s", exc)
        finally:
            consumer.close()

    async def _feed_async(self, side: Any, event: DomainEvent) -> None:
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
             "family": r.family, "fields": [{"path": f.path, "classification": f.resolution.classification,
                                             "explanation": f.resolution.explanation} for f in r.fields]}
            for r in results]}, status_code=202)

    return [Route("/outcomes/{side}", receive, methods=["POST"])]
