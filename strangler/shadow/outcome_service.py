"""Running the outcome comparison: feed it events (HTTP callback, Kafka, or in-process), record results.

Results land in the divergence store next to response comparisons (kind `outcome`, divergence source
`outcome`) and advance the maturity ledger, in the same transaction: the serving side's event means
`propagated`, a match `reconciled`, a divergence or a missing event `exception`. Events of an entity whose
capability is in a mode that compares nothing (`legacy`, `new-only`) only advance the ledger: no other side
is expected.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Collection
from typing import Any, Protocol

from pydantic import ValidationError

from strangler.events.model import DomainEvent
from strangler.maturity.ledger import Stage, StageEvent
from strangler.shadow.config import OutcomeKafkaConfig
from strangler.shadow.outcome_store import OutcomeBatch, RestoredOutcomes
from strangler.shadow.outcomes import OutcomeJoiner, OutcomeResult, Side
from strangler.store import StoreUnavailable

log = logging.getLogger("strangler.outcomes")
NOT_COMMITTING = "outcome consumer: not committing its offsets, the store does not hold the events' results yet"


def _always_legacy(aggregate_type: str) -> Side:
    return "legacy"


class OutcomeJournal(Protocol):
    """Where the outcome comparison keeps its results and its state (`OutcomeStore` is the SQL adapter)."""

    def write(self, batch: OutcomeBatch) -> None:
        """Write the batch's results, stage events, waiting events added and removed and seen ids in one
        transaction: all of it or, raising StoreUnavailable, none of it. Writing a batch again after a
        failure is harmless."""
        ...

    def restore(self, remember: int, origins: Collection[str] | None = None) -> RestoredOutcomes:
        """The waiting events (from `origins`, or all) in arrival order and the newest `remember` seen ids
        (StoreUnavailable)."""
        ...

    def prune_seen(self, keep: dt.timedelta) -> int:
        """Forget seen ids older than `keep` before the newest one; returns how many (StoreUnavailable)."""
        ...


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
    """Owns the joiner in one event loop; results, their stage events and the joiner's state go to the
    journal in batches.

    `start` restores what a previous run left waiting (retrying while the store is unreachable) before it
    takes events from Kafka. The consumer commits its offsets only after the journal holds everything the
    events before them did, so a crash loses nothing; the events after the last commit come again and are
    ignored as duplicates by their ids, which the journal keeps too. Time the service did not run does not
    count against a waiting event's window. A waiting event from Kafka belongs to its partition: several
    processes in one consumer group each hold the waiting events of the partitions they are assigned,
    taken from the journal on assignment and left there on revocation.

    `serving(aggregate_type)` is the side whose event shows a change propagated; `compared(aggregate_type)`
    says whether the other side is expected to publish too (by default always).
    """

    def __init__(
        self,
        joiner: OutcomeJoiner,
        journal: OutcomeJournal,
        clock: Callable[[], dt.datetime],
        *,
        kafka: OutcomeKafkaConfig | None = None,
        tick: float = 1.0,
        serving: Callable[[str], Side] = _always_legacy,
        compared: Callable[[str], bool] = lambda aggregate_type: True,
        remember_for: dt.timedelta = dt.timedelta(hours=1),
    ) -> None:
        self.joiner = joiner
        self._journal = journal
        self._clock = clock
        self._kafka = kafka
        self._tick = tick
        self._serving = serving
        self._compared = compared
        self._remember_for = remember_for
        self._batch = OutcomeBatch()
        self._writing = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._failing: set[str] = set()  # what cannot reach the store now, each said once
        # waiting events taken from a Kafka partition, by where they came from: released when it is revoked
        self._origin_of: dict[tuple[Side, str], tuple[str, DomainEvent]] = {}
        self.restored = False
        self.counts: dict[str, int] = {"match": 0, "divergence": 0, "missing": 0, "rejected": 0, "uncompared": 0,
                                       "duplicate": 0}

    def feed(self, side: Side, event: DomainEvent, origin: str = "") -> list[OutcomeResult]:
        """Take one side's event; `origin` is where it came from ("topic:partition", "" for a callback)."""
        now = self._clock()
        if event.correlation_id and side == self._serving(event.aggregate_type):
            # the serving side's change reached the event stream
            self._batch.stages.append(
                StageEvent(event.correlation_id, event.aggregate_id, Stage.PROPAGATED, event.processing_time))
        if not self._compared(event.aggregate_type):
            self.counts["uncompared"] += 1
            return []
        taken = self.joiner.take(side, event, now)
        if taken.status == "duplicate":
            self.counts["duplicate"] += 1
        else:
            self._batch.see(side, event.event_id, now)
            if taken.status == "waiting":
                self._batch.wait(side, event, now, origin)
                if origin:
                    self._origin_of[(side, event.event_id)] = (origin, event)
            elif taken.partner is not None:
                other: Side = "new" if side == "legacy" else "legacy"
                self._batch.resolve(other, taken.partner.event_id)
                self._origin_of.pop((other, taken.partner.event_id), None)
        self._emit(taken.results, now)
        return taken.results

    def _emit(self, results: list[OutcomeResult], now: dt.datetime) -> None:
        for result in results:
            self.counts[result.kind] += 1
            self._batch.results.append((now, result))
            if result.kind == "missing":  # the event that waited in vain waits no more
                side: Side = "legacy" if result.legacy is not None else "new"
                present = result.legacy or result.new
                if present is not None:
                    self._batch.resolve(side, present.event_id)
                    self._origin_of.pop((side, present.event_id), None)
            self._batch.stages.extend(ledger_events(result, now))

    async def persist(self) -> None:
        """Write what was taken since the last write. On failure (StoreUnavailable) it stays to be written
        with the next batch."""
        async with self._writing:
            batch, self._batch = self._batch, OutcomeBatch()
            if not batch:
                return
            try:
                await asyncio.to_thread(self._journal.write, batch)
            except BaseException:
                self._batch = batch.then(self._batch)
                raise

    async def restore(self, origins: Collection[str] | None = None) -> None:
        """Take back what the journal holds: the seen ids, and the waiting events from `origins` (all by
        default). StoreUnavailable when it cannot be read."""
        state = await asyncio.to_thread(self._journal.restore, self.joiner.memory, origins)
        now = self._clock()
        downtime = now - state.last_active if state.last_active is not None and now > state.last_active else (
            dt.timedelta(0))
        for side, event_id in state.seen:
            self.joiner.remember(side, event_id)
        for side, event, arrived, origin in state.waiting:
            self.joiner.restore(side, event, arrived + downtime)
            if origin:
                self._origin_of[(side, event.event_id)] = (origin, event)
        self.restored = True
        if state.waiting:
            log.info("outcome comparison resumed with %d events waiting for their partner", len(state.waiting))

    async def release(self, origins: Collection[str]) -> int:
        """Forget the waiting events from `origins` (partitions another process reads now; the store keeps
        them for it). Returns how many."""
        wanted = set(origins)
        released = [key for key, (origin, _) in self._origin_of.items() if origin in wanted]
        for side, event_id in released:
            _, event = self._origin_of.pop((side, event_id))
            self.joiner.release(side, event)
            if self._batch.waiting.pop((side, event_id), None) is not None:
                # not written, so its offset is not committed either: the partition's next reader (perhaps
                # this process again) gets it again and must take it afresh
                self._batch.seen.pop((side, event_id), None)
                self.joiner.forget(side, event_id)
        return len(released)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for thread in self._threads:
            await asyncio.to_thread(thread.join, 10)
        if self.restored:
            try:
                await self.persist()
            except StoreUnavailable as exc:  # the journal still holds the waiting events; Kafka redelivers
                log.warning("outcome comparison stopped with results not written: %s", exc)

    async def _run(self) -> None:
        while not self.restored:
            try:  # with Kafka, the events from a partition come back when it is assigned
                await self.restore([""] if self._kafka is not None else None)
            except StoreUnavailable as exc:
                self._store_failed("cannot restore the outcome comparison's state yet", exc)
                await asyncio.sleep(self._tick)
        self._store_back("cannot restore the outcome comparison's state yet")
        if self._kafka is not None:
            loop = asyncio.get_running_loop()
            thread = threading.Thread(target=self._consume, args=(loop,), daemon=True, name="outcomes-kafka")
            thread.start()
            self._threads.append(thread)
        pruned_at = time.monotonic()
        while True:
            await asyncio.sleep(self._tick)
            now = self._clock()
            self._emit(self.joiner.expire(now), now)
            try:
                await self.persist()
                if time.monotonic() - pruned_at >= 60:
                    pruned_at = time.monotonic()
                    await asyncio.to_thread(self._journal.prune_seen, self._remember_for)
            except StoreUnavailable as exc:
                self._store_failed("cannot write outcome results yet", exc)
                continue
            self._store_back("cannot write outcome results yet")

    def _store_failed(self, what: str, exc: Exception) -> None:
        if what not in self._failing:  # retried every tick while the store is away: say it once
            log.warning("%s: %s", what, str(exc).splitlines()[0][:500])
            self._failing.add(what)

    def _store_back(self, what: str) -> None:
        if what in self._failing:
            self._failing.discard(what)
            log.warning("the outcome store answers again")

    def _consume(self, loop: asyncio.AbstractEventLoop) -> None:
        """Kafka consumer thread: decodes events and hands each to the loop before reading the next; about
        every second it has the loop write them, then commits. While they cannot be written it pauses its
        partitions: nothing is committed that the store does not hold."""
        from confluent_kafka import Consumer, KafkaError, KafkaException

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
        uncommitted = False

        def commit() -> bool:
            """Write what the taken events did, then commit their offsets; False if it could not write."""
            nonlocal uncommitted
            if not uncommitted:
                return True
            try:
                asyncio.run_coroutine_threadsafe(self.persist(), loop).result(timeout=60)
            except StoreUnavailable as exc:
                self._store_failed(NOT_COMMITTING, exc)
                return False
            except Exception:
                log.exception("outcome consumer: not committing, the results are not written")
                return False
            self._store_back(NOT_COMMITTING)
            try:
                consumer.commit(asynchronous=False)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError._NO_OFFSET:
                    log.warning("outcome consumer: cannot commit: %s", exc)
                    return True  # written: a later commit covers these offsets too
            uncommitted = False
            return True

        def assigned(consumer: Any, partitions: list[Any]) -> None:
            origins = [f"{p.topic}:{p.partition}" for p in partitions]
            while not self._stopping.is_set():  # the waiting events from these partitions, before their next
                try:
                    asyncio.run_coroutine_threadsafe(self.restore(origins), loop).result(timeout=60)
                    return
                except StoreUnavailable as exc:
                    self._store_failed("cannot take over the waiting events of the assigned partitions", exc)
                except Exception:
                    log.exception("cannot take over the waiting events of the assigned partitions")
                time.sleep(1.0)

        def revoked(consumer: Any, partitions: list[Any]) -> None:
            # before another member reads them: what was taken here is written, and its waiting events are
            # left to that member
            commit()
            origins = [f"{p.topic}:{p.partition}" for p in partitions]
            try:
                asyncio.run_coroutine_threadsafe(self.release(origins), loop).result(timeout=60)
            except Exception:
                log.exception("cannot release the waiting events of the revoked partitions")

        paused: list[Any] = []
        last_commit = time.monotonic()
        try:
            consumer.subscribe(list(sides), on_assign=assigned, on_revoke=revoked)
            while not self._stopping.is_set():
                message = consumer.poll(0.5)
                if message is not None and message.error():
                    log.warning("outcome consumer: %s", message.error())
                elif message is not None:
                    uncommitted = True
                    self._take(message, sides, loop)
                if uncommitted and time.monotonic() - last_commit >= 1.0:
                    last_commit = time.monotonic()
                    if commit():
                        if paused:
                            consumer.resume(paused)
                            paused = []
                    elif not paused:
                        paused = consumer.assignment()
                        consumer.pause(paused)
            commit()
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
        side = sides.get(message.topic(), "legacy")
        origin = f"{message.topic()}:{message.partition()}"
        future = asyncio.run_coroutine_threadsafe(self._feed_async(side, event, origin), loop)
        try:
            future.result(timeout=30)
        except concurrent.futures.TimeoutError:
            log.error("outcome consumer: the comparison did not take %s within 30 s", where)
        except Exception:  # a bug in one event must not stop the consumer
            log.exception("outcome consumer: cannot compare %s", where)

    async def _feed_async(self, side: Side, event: DomainEvent, origin: str) -> None:
        self.feed(side, event, origin)
