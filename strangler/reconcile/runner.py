"""Running one reconciliation job: chunk by chunk, checkpointed, drift recorded with its age.

For each chunk not yet done in the current run: compare (two SQL sides by checksummed bisection, a SQL and
an HTTP side key by key), publish repair events when asked, then record the chunk's drift and mark the
chunk done in one transaction. When every chunk is done, open drift the run did not see is resolved and
the ledger's changes of entities without drift become `reconciled`. A stop request ends the run between
chunks; the next run of the job resumes it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import orjson

from strangler.maturity.store import LedgerStore
from strangler.precedence.rules import Side
from strangler.reconcile.bisect import MAX_BITS, find_leaves
from strangler.reconcile.drift import EntityDrift, Key, compare_entity, merge_sorted
from strangler.reconcile.plan import JobPlan, chunks_from_json
from strangler.reconcile.repair import RepairPublisher, state_event
from strangler.reconcile.sql_side import Chunk, SqlStateSide
from strangler.reconcile.store import SqlDriftStore

T = TypeVar("T")


class Progress(Protocol):
    def begin(self, job: str, chunks: int, done: int, rows: int) -> None: ...

    def advance(self, job: str, compared: int, drifted: int) -> None: ...


@dataclass
class ChunkResult:
    drift: list[EntityDrift] = field(default_factory=list)
    compared: int = 0
    errors: list[str] = field(default_factory=list)
    queries: int = 0
    read_rows: int = 0


@dataclass
class JobReport:
    job: str
    run_id: int
    complete: bool
    compared: int
    chunks: int
    resumed_chunks: int
    drifted: list[dict[str, Any]]
    errors: list[str]
    resolved: int = 0
    reconciled: int = 0
    repaired: int = 0
    seconds: float = 0.0
    queries: int = 0
    read_rows: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "job": self.job, "run": self.run_id, "complete": self.complete, "compared": self.compared,
            "drifted": self.drifted, "errors": self.errors[:100], "error_count": len(self.errors),
            "resolved": self.resolved, "reconciled": self.reconciled, "repaired": self.repaired,
            "chunks": self.chunks, "resumed_chunks": self.resumed_chunks, "seconds": round(self.seconds, 3),
            "queries": self.queries, "rows_read": self.read_rows,
        }


class JobRunner:
    def __init__(
        self,
        plan: JobPlan,
        authorities: Mapping[str, Side | None],
        store: SqlDriftStore,
        clock: Callable[[], dt.datetime],
        *,
        ledger: LedgerStore | None = None,
        capability: str | None = None,
        publisher: RepairPublisher | None = None,
        progress: Progress | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.plan = plan
        self.authorities = authorities
        self.store = store
        self.clock = clock
        self.ledger = ledger
        self.capability = capability
        self.publisher = publisher
        self.progress = progress
        self.stop = stop or threading.Event()
        self._pool: ThreadPoolExecutor | None = None

    def run(self) -> JobReport:
        started = time.monotonic()
        plan = self.plan
        run = self.store.open_run(plan.name, plan.fingerprint(), plan.chunks_json(), self.clock())
        _, chunks = chunks_from_json(run.plan)  # a resumed run keeps the chunks it was planned with
        done = set(run.chunks_done)
        report = JobReport(plan.name, run.id, False, 0, len(chunks), len(done), [], [])
        if self.progress:
            self.progress.begin(plan.name, len(chunks), len(done), plan.estimated_rows)
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="reconcile")
        try:
            for chunk in chunks:
                if chunk.index in done:
                    continue
                if self.stop.is_set():
                    break
                read_at = self.clock()
                result = self.compare_chunk(chunk)
                if result is None:  # stopped inside the chunk: it is read again on resume
                    break
                report.queries += result.queries
                report.read_rows += result.read_rows
                report.errors.extend(result.errors)
                if self.publisher is not None and result.drift:
                    events = [e for e in (state_event(plan.name, plan.job.entity, d, plan.key_names,
                                                      self.authorities, run.id, read_at, self.clock())
                                          for d in result.drift) if e is not None]
                    self.publisher.publish(events)
                    report.repaired += len(events)
                run = self.store.chunk_done(run, chunk.index, result.drift, result.compared, len(result.errors),
                                            self.clock())
                if self.progress:
                    self.progress.advance(plan.name, result.compared, len(result.drift))
            else:
                report.complete = True
        finally:
            self._pool.shutdown(wait=True)
        if report.complete:
            report.resolved = self.store.finish(run, self.clock(), resolve=run.errors == 0)
            if self.ledger is not None and self.capability is not None and run.errors == 0:
                stages = self.store.reconciled_changes(plan.name, self.capability, run, self.clock())
                self.ledger.record(stages)
                report.reconciled = len(stages)
        report.compared = run.compared
        report.drifted = group_records(self.store.drift_since(plan.name, run.started_at), plan.key_names,
                                       self.clock())
        report.seconds = time.monotonic() - started
        return report

    def compare_chunk(self, chunk: Chunk) -> ChunkResult | None:
        if self.plan.http is None:
            return self._compare_sql(chunk)
        return self._compare_http(chunk)

    def _both(self, run_legacy: Callable[[], T], run_new: Callable[[], T]) -> tuple[T, T]:
        if self._pool is None:
            return run_legacy(), run_new()
        future = self._pool.submit(run_legacy)
        b = run_new()
        return future.result(), b

    def _compare_sql(self, chunk: Chunk) -> ChunkResult:
        plan, result = self.plan, ChunkResult()
        legacy, new = plan.legacy, plan.new
        if not (isinstance(legacy, SqlStateSide) and isinstance(new, SqlStateSide)):
            raise TypeError("both sides must be SQL")
        with legacy.session(chunk) as a, new.session(chunk) as b:
            limits = [m for m in (a.max_bits, b.max_bits) if m is not None]
            found = find_leaves(a, b, bucket_bits=plan.job.buckets.bit_length() - 1, leaf_rows=plan.job.leaf_rows,
                                max_bits=min([MAX_BITS, *limits]), run_both=self._both)
            result.queries = found.queries
            result.compared = found.equal_rows
            if not found.whole and not found.leaves:
                return result
            result.queries += 2
            if found.whole:  # the whole chunk: streamed, memory bounded by the fetch size
                pairs = merge_sorted(a.rows(None), b.rows(None))
            else:  # a few leaves: read on both sides at once
                left, right = self._both(lambda: list(a.rows(found.leaves)), lambda: list(b.rows(found.leaves)))
                pairs = merge_sorted(left, right)
            for key, x, y in pairs:
                result.compared += 1
                result.read_rows += (x is not None) + (y is not None)
                drift = compare_entity(key, plan.names, x, y, self.authorities)
                if drift is not None:
                    result.drift.append(drift)
        return result

    def _compare_http(self, chunk: Chunk) -> ChunkResult | None:
        plan, result = self.plan, ChunkResult()
        http, sql = plan.http, plan.sql_sides[0]
        if http is None:
            raise TypeError("one side must be HTTP")
        http_is_legacy = plan.http_side == "legacy"
        batch_size = http.config.concurrency * 8
        with sql.session(chunk) as session:
            rows = session.rows(None)
            result.queries += 1

            async def compare_all() -> None:
                async with http.client() as client:
                    while not self.stop.is_set():
                        batch = await asyncio.to_thread(_take, rows, batch_size)
                        if not batch:
                            return
                        reads = await http.read_many(client, [k for k, _ in batch])
                        for (key, values), read in zip(batch, reads, strict=True):
                            result.read_rows += 1
                            if read.error is not None:
                                result.errors.append(f"{key}: {read.error}")
                                continue
                            result.compared += 1
                            legacy_values, new_values = (read.values, values) if http_is_legacy else \
                                (values, read.values)
                            drift = compare_entity(key, plan.names, legacy_values, new_values, self.authorities)
                            if drift is not None:
                                result.drift.append(drift)

            asyncio.run(compare_all())
        return None if self.stop.is_set() else result


def _take(rows: Iterator[tuple[Key, Sequence[str | None]]], n: int) -> list[tuple[Key, Sequence[str | None]]]:
    return list(itertools.islice(rows, n))


def group_records(
    records: Sequence[Mapping[str, Any]], key_names: Sequence[str], now: dt.datetime
) -> list[dict[str, Any]]:
    """Drift records (one per field) grouped into one entry per entity, with first seen and age."""
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        key = dict(zip(key_names, orjson.loads(r["key"]), strict=False))
        entry = out.setdefault(r["entity_key"], {"key": key, "entity_key": r["entity_key"],
                                                  "fields": [], "first_seen": r["first_seen"]})
        entry["first_seen"] = min(entry["first_seen"], r["first_seen"])
        entry["fields"].append({"field": r["field"], "legacy": r["legacy_value"], "new": r["new_value"],
                                "classification": r["classification"], "authority": r["authority"],
                                "first_seen": r["first_seen"], "last_seen": r["last_seen"]})
    for entry in out.values():
        first = dt.datetime.fromisoformat(entry["first_seen"])
        entry["age_seconds"] = round(max(0.0, (now - first).total_seconds()), 3)
        entry["classifications"] = sorted({f["classification"] for f in entry["fields"]})
    return list(out.values())
