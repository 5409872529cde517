"""The outcome service: results, their stage events and the joiner's state to the store, the HTTP callback,
and the SQL outcome store."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from starlette.applications import Starlette

from strangler.maturity.ledger import Stage, StageEvent
from strangler.maturity.store import SqlLedgerStore
from strangler.routing.modes import Mode
from strangler.shadow.outcome_api import outcome_routes
from strangler.shadow.outcome_service import OutcomeService
from strangler.shadow.outcome_store import (
    OutcomeBatch,
    OutcomeStore,
    RestoredOutcomes,
    event_key,
    pending_table,
    seen_table,
)
from strangler.shadow.outcomes import OutcomeJoiner, OutcomeResult, Side
from strangler.shadow.store import SqlDivergenceStore, comparisons_table, divergences_table
from strangler.store import StoreUnavailable, create_store_engine, upgrade_schema
from tests.shadow.test_outcomes import T0, WINDOW, event, rules


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


class MemoryJournal:
    """The outcome journal in memory: `failures` are raised by the next writes (nothing written then);
    `state` is what `restore` gives."""

    def __init__(self, state: RestoredOutcomes | None = None) -> None:
        self.batches: list[OutcomeBatch] = []
        self.failures: list[Exception] = []
        self.state = state or RestoredOutcomes([], [], None)

    def write(self, batch: OutcomeBatch) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.batches.append(batch)

    def restore(self, remember: int, origins: Collection[str] | None = None) -> RestoredOutcomes:
        if self.failures:
            raise self.failures.pop(0)
        waiting = [w for w in self.state.waiting if origins is None or w[3] in origins]
        return RestoredOutcomes(waiting, self.state.seen, self.state.last_active)

    def prune_seen(self, keep: dt.timedelta) -> int:
        return 0

    @property
    def results(self) -> list[tuple[dt.datetime, OutcomeResult]]:
        return [r for batch in self.batches for r in batch.results]

    def waiting(self) -> set[tuple[Side, str]]:
        """The waiting events the store holds after the batches written so far."""
        held: set[tuple[Side, str]] = set()
        for batch in self.batches:
            held -= batch.resolved
            held |= set(batch.waiting)
        return held


class Harness:
    def __init__(self, serving: str = "legacy", compared: bool = True, mode: Mode = Mode.SHADOW,
                 journal: MemoryJournal | None = None) -> None:
        self.clock = Clock()
        self.journal = journal or MemoryJournal()
        joiner = OutcomeJoiner(rules("report", "legacy"), window=WINDOW, modes=lambda: {"profile": mode})
        self.service = OutcomeService(joiner, self.journal, self.clock, tick=0.01,
                                      serving=lambda aggregate_type: serving,  # type: ignore[arg-type,return-value]
                                      compared=lambda aggregate_type: compared)

    @property
    def recorded(self) -> list[tuple[dt.datetime, OutcomeResult]]:
        return self.journal.results

    @property
    def ledger(self) -> list[StageEvent]:
        """The stage events written so far."""
        return [e for batch in self.journal.batches for e in batch.stages]

    def stages(self) -> list[tuple[str, str, Stage]]:
        return [(e.correlation_id, e.entity_key, e.stage) for e in self.ledger]


async def test_a_match_reconciles_the_change() -> None:
    h = Harness()
    h.service.feed("legacy", event("legacy"))
    h.service.feed("new", event("new"))
    await h.service.persist()
    assert h.stages() == [("req-1", "42", Stage.PROPAGATED), ("req-1", "42", Stage.RECONCILED)]
    assert [r.kind for _, r in h.recorded] == ["match"] and h.service.counts["match"] == 1


async def test_a_divergence_is_an_exception_naming_field_and_classification() -> None:
    h = Harness()
    h.service.feed("legacy", event("legacy"))
    h.service.feed("new", event("new", zip="0"))
    await h.service.persist()
    assert h.ledger[-1].stage is Stage.EXCEPTION
    assert h.ledger[-1].detail == "outcome differs: /zip (conflict)"


async def test_the_serving_sides_event_marks_propagation() -> None:
    h = Harness(serving="new")
    h.service.feed("legacy", event("legacy"))
    await h.service.persist()
    assert h.ledger == []
    h.service.feed("new", event("new"))
    await h.service.persist()
    assert h.stages()[0] == ("req-1", "42", Stage.PROPAGATED)


async def test_an_event_without_correlation_id_leaves_the_ledger_alone() -> None:
    h = Harness()
    h.service.feed("legacy", event("legacy", cid=None))
    h.service.feed("new", event("new", cid=None))
    await h.service.persist()
    assert h.ledger == [] and [r.kind for _, r in h.recorded] == ["match"]


async def test_entities_in_a_mode_that_compares_nothing_only_propagate() -> None:
    h = Harness(compared=False)
    assert h.service.feed("legacy", event("legacy")) == []
    await h.service.persist()
    assert h.service.joiner.pending() == 0 and h.service.counts["uncompared"] == 1
    assert h.stages() == [("req-1", "42", Stage.PROPAGATED)]


async def test_the_expiry_loop_records_missing_events_as_exceptions() -> None:
    h = Harness()
    await h.service.start()
    try:
        h.service.feed("legacy", event("legacy"))
        h.clock.now = T0 + WINDOW + dt.timedelta(seconds=1)
        for _ in range(100):
            if h.recorded:
                break
            await asyncio.sleep(0.01)
    finally:
        await h.service.stop()
    [(_, result)] = h.recorded
    assert result.kind == "missing"
    assert h.ledger[-1].stage is Stage.EXCEPTION
    assert h.ledger[-1].detail == "new side published no CustomerAddressChanged event"


# -- the HTTP callback -----------------------------------------------------------------------------------


def client(h: Harness) -> httpx.AsyncClient:
    app = Starlette(routes=outcome_routes(h.service))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin")


async def test_post_outcomes_feeds_the_comparison_and_answers_the_results() -> None:
    h = Harness()
    await h.service.restore()
    async with client(h) as c:
        first = await c.post("/outcomes/legacy", content=event("legacy").model_dump_json())
        assert first.status_code == 202 and first.json() == {"accepted": 1, "results": []}
        items = [orjson.loads(event("new", zip="0").model_dump_json())]
        second = await c.post("/outcomes/new", json=items)
    assert second.status_code == 202
    [result] = second.json()["results"]
    assert (result["kind"], result["aggregate_id"], result["correlation_id"]) == ("divergence", "42", "req-1")
    assert result["fields"][0]["path"] == "/zip" and result["fields"][0]["classification"] == "conflict"


@pytest.mark.parametrize(("path", "body", "status"), [
    ("/outcomes/sideways", b"{}", 404),
    ("/outcomes/new", b"{not json", 422),
    ("/outcomes/new", b'{"event_id": "x"}', 422),
])
async def test_post_outcomes_refuses_bad_input(path: str, body: bytes, status: int) -> None:
    h = Harness()
    await h.service.restore()
    async with client(h) as c:
        response = await c.post(path, content=body)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/problem+json")
    assert h.recorded == [] and h.service.joiner.pending() == 0


async def test_post_outcomes_waits_until_the_state_is_restored() -> None:
    h = Harness()
    async with client(h) as c:
        early = await c.post("/outcomes/legacy", content=event("legacy").model_dump_json())
        assert early.status_code == 503 and "not restored" in early.json()["detail"]
        assert h.service.joiner.pending() == 0
        await h.service.restore()
        assert (await c.post("/outcomes/legacy", content=event("legacy").model_dump_json())).status_code == 202


async def test_post_outcomes_answers_503_until_the_store_holds_the_events_and_a_resend_is_harmless() -> None:
    h = Harness()
    await h.service.restore()
    legacy, new = event("legacy"), event("new")
    h.journal.failures.append(StoreUnavailable("outcome store: OperationalError: connection refused"))
    async with client(h) as c:
        refused = await c.post("/outcomes/legacy", content=legacy.model_dump_json())
        assert refused.status_code == 503 and "sending them again is harmless" in refused.json()["detail"]
        assert h.journal.batches == []
        again = await c.post("/outcomes/legacy", content=legacy.model_dump_json())  # the store is back
        assert again.status_code == 202 and again.json() == {"accepted": 1, "results": []}
        paired = await c.post("/outcomes/new", content=new.model_dump_json())
    assert [r["kind"] for r in paired.json()["results"]] == ["match"]
    first, second = h.journal.batches
    assert list(first.waiting) == [("legacy", legacy.event_id)] and set(first.seen) == {("legacy", legacy.event_id)}
    assert second.resolved == {("legacy", legacy.event_id)} and [r.kind for _, r in second.results] == ["match"]
    assert h.service.counts["duplicate"] == 1 and h.journal.waiting() == set()


# -- the service's state in the journal ------------------------------------------------------------------


async def test_a_batch_holds_what_waits_what_stopped_waiting_and_the_results() -> None:
    h = Harness()
    early, late, partner = event("legacy", aggregate_id="1"), event("legacy", aggregate_id="2"), event(
        "new", aggregate_id="1")
    h.service.feed("legacy", early)
    h.service.feed("legacy", late)
    await h.service.persist()
    assert h.journal.waiting() == {("legacy", early.event_id), ("legacy", late.event_id)}
    h.service.feed("new", partner)
    h.clock.now = T0 + WINDOW + dt.timedelta(seconds=1)
    h.service.feed("new", event("new", aggregate_id="3"))  # its arrival expires `late`
    await h.service.persist()
    assert [(r.kind, r.aggregate_id) for _, r in h.recorded] == [("match", "1"), ("missing", "2")]
    assert {key for key, _ in h.journal.waiting()} == {"new"}  # only the last event waits, in the store too


async def test_an_event_that_waits_and_joins_between_two_writes_never_reaches_the_pending_table() -> None:
    h = Harness()
    h.service.feed("legacy", event("legacy"))
    h.service.feed("new", event("new"))
    await h.service.persist()
    [batch] = h.journal.batches
    assert batch.waiting == {} and batch.resolved == set() and len(batch.seen) == 2
    assert [r.kind for _, r in batch.results] == ["match"]


async def test_a_batch_the_store_refused_is_written_with_the_next_one() -> None:
    h = Harness()
    first, second = event("legacy", aggregate_id="1"), event("legacy", aggregate_id="2")
    h.service.feed("legacy", first)
    h.journal.failures.append(StoreUnavailable("outcome store: down"))
    with pytest.raises(StoreUnavailable):
        await h.service.persist()
    h.service.feed("legacy", second)
    h.service.feed("new", event("new", aggregate_id="1"))
    await h.service.persist()
    [batch] = h.journal.batches
    assert batch.waiting.keys() == {("legacy", second.event_id)} and batch.resolved == set()
    assert [r.kind for _, r in batch.results] == ["match"] and len(batch.seen) == 3


async def test_a_restored_event_joins_its_partner_and_a_restored_id_is_a_duplicate() -> None:
    waiting = event("legacy", aggregate_id="1")
    joined_before = event("legacy", aggregate_id="2")
    stopped = T0 + dt.timedelta(seconds=20)
    journal = MemoryJournal(RestoredOutcomes([("legacy", waiting, T0, "")], [  # as the store has them: oldest first
        ("legacy", waiting.event_id), ("legacy", joined_before.event_id)], stopped))
    h = Harness(journal=journal)
    h.clock.now = stopped + dt.timedelta(hours=1)  # a long stop: its window's rest (10 s) is still ahead
    await h.service.restore()
    assert h.service.joiner.pending() == 1
    assert h.service.feed("legacy", joined_before) == []  # re-delivered after the restart: no second outcome
    assert h.service.feed("legacy", waiting) == []
    assert h.service.joiner.expire(h.clock.now + dt.timedelta(seconds=9)) == []
    [result] = h.service.feed("new", event("new", aggregate_id="1"))
    assert result.kind == "match" and result.legacy == waiting
    await h.service.persist()
    [batch] = journal.batches
    assert batch.resolved == {("legacy", waiting.event_id)} and h.service.counts["duplicate"] == 2


async def test_a_restored_event_expires_when_the_rest_of_its_window_ran_out() -> None:
    waiting = event("legacy")
    journal = MemoryJournal(RestoredOutcomes([("legacy", waiting, T0, "")], [], T0 + dt.timedelta(seconds=20)))
    h = Harness(journal=journal)
    h.clock.now = T0 + dt.timedelta(minutes=5)
    await h.service.restore()
    [missing] = h.service.joiner.expire(h.clock.now + dt.timedelta(seconds=11))
    assert missing.kind == "missing" and missing.legacy == waiting


async def test_a_revoked_partitions_waiting_events_are_left_to_the_store_and_taken_back_on_assignment() -> None:
    h = Harness()
    mine, theirs, called = event("legacy", aggregate_id="1"), event("legacy", aggregate_id="2"), event(
        "legacy", aggregate_id="3")
    h.service.feed("legacy", mine, "domain.customer:0")
    h.service.feed("legacy", theirs, "domain.customer:1")
    h.service.feed("legacy", called)  # an HTTP callback's: no partition
    await h.service.persist()
    assert await h.service.release(["domain.customer:1"]) == 1  # revoked: another member reads it now
    assert h.service.joiner.pending() == 2
    assert h.service.feed("new", event("new", aggregate_id="2")) == []  # not paired here any more
    expired = h.service.joiner.expire(T0 + 2 * WINDOW)  # nor reported missing here
    assert {(r.aggregate_id, r.missing_side) for r in expired} == {("1", "new"), ("3", "new"), ("2", "legacy")}
    h.journal.state = RestoredOutcomes([("legacy", theirs, T0, "domain.customer:1"),
                                        ("legacy", mine, T0, "domain.customer:0")], [], T0)
    other = Harness(journal=h.journal)  # the member the partition went to takes its events back
    await other.service.restore(["domain.customer:1"])
    assert other.service.joiner.pending() == 1
    [result] = other.service.feed("new", event("new", aggregate_id="2"))
    assert result.kind == "match" and result.legacy == theirs


async def test_a_waiting_event_not_yet_written_is_forgotten_on_revocation_and_taken_afresh_when_it_comes_again(
) -> None:
    h = Harness()
    written, unwritten = event("legacy", aggregate_id="1"), event("legacy", aggregate_id="2")
    h.service.feed("legacy", written, "domain.customer:0")
    await h.service.persist()
    h.service.feed("legacy", unwritten, "domain.customer:0")  # the store fails before it is written
    assert await h.service.release(["domain.customer:0"]) == 2
    assert h.service.joiner.pending() == 0
    h.service.feed("legacy", written, "domain.customer:0")  # re-delivered: the store has it, a duplicate
    h.service.feed("legacy", unwritten, "domain.customer:0")  # re-delivered: never written, taken afresh
    assert h.service.joiner.pending() == 1 and h.service.counts["duplicate"] == 1
    await h.service.persist()
    assert h.journal.waiting() == {("legacy", written.event_id), ("legacy", unwritten.event_id)}


async def test_the_service_retries_restoring_until_the_store_answers() -> None:
    journal = MemoryJournal(RestoredOutcomes([("legacy", event("legacy"), T0, "")], [], T0))
    journal.failures.extend([StoreUnavailable("down"), StoreUnavailable("down")])
    h = Harness(journal=journal)
    await h.service.start()
    try:
        for _ in range(500):
            if h.service.restored:
                break
            await asyncio.sleep(0.01)
    finally:
        await h.service.stop()
    assert h.service.restored and h.service.joiner.pending() == 1 and journal.failures == []


# -- the SQL outcome store -------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path}/store.db" if request.param == "sqlite" else (
        request.getfixturevalue("pg_database").url())
    upgrade_schema(url)
    engine = create_store_engine(url)
    yield engine
    engine.dispose()


def results() -> list[OutcomeResult]:
    j = OutcomeJoiner(rules("authority-wins", "legacy"), window=WINDOW, modes=lambda: {})
    j.add("legacy", event("legacy", cid="req-m"), T0)
    match = j.add("new", event("new", cid="req-m"), T0)
    j.add("legacy", event("legacy", cid="req-d", ssn="123-45-6789"), T0)
    divergence = j.add("new", event("new", cid="req-d", zip="0", ssn="999-99-9999"), T0)
    long_id = "customer-" + "x" * 100  # longer than the classification column: must not be put there
    j.add("legacy", event("legacy", cid="req-x", aggregate_id=long_id, event_id="legacy-event-x"), T0)
    missing = j.expire(T0 + 2 * WINDOW)
    return match + divergence + missing


def rows(engine: Engine, table: Any) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(table).order_by(table.c.id)).mappings()]


@pytest.mark.parametrize("serving", ["legacy", "new"])
def test_the_store_writes_comparisons_and_divergences_with_the_serving_side_first(
    engine: Engine, serving: str
) -> None:
    store = OutcomeStore(engine, lambda aggregate_type: "profile", serving_of=lambda a: serving,  # type: ignore
                         redact=["/ssn"])
    store.record([(T0, r) for r in results()])
    comparisons = rows(engine, comparisons_table)
    assert [(c["kind"], c["outcome"], c["correlation_id"], c["serving"]) for c in comparisons] == [
        ("outcome", "match", "req-m", serving), ("outcome", "divergence", "req-d", serving),
        ("outcome", "missing", "req-x", serving)]
    assert [orjson.loads(c["fields"]) for c in comparisons] == [[], ["/ssn", "/zip"], ["<missing:new>"]]
    divergences = rows(engine, divergences_table)
    by_field = {d["field"]: d for d in divergences}
    assert {d["source"] for d in divergences} == {"outcome"}
    assert orjson.loads(by_field["/ssn"]["primary_value"]) == "***"  # redacted before it is stored
    assert by_field["/zip"]["classification"] == "regression"
    legacy_first = ("12345", "0") if serving == "legacy" else ("0", "12345")
    assert (orjson.loads(by_field["/zip"]["primary_value"]), orjson.loads(by_field["/zip"]["other_value"])) == (
        legacy_first)
    missing = by_field["<missing:new>"]
    assert missing["classification"] == "missing"
    present = {"aggregate_id": "customer-" + "x" * 100, "event_id": "legacy-event-x"}
    stored = (orjson.loads(missing["primary_value"]), orjson.loads(missing["other_value"]))
    assert stored == ((present, None) if serving == "legacy" else (None, present))


def test_outcomes_count_in_the_capabilitys_evidence(engine: Engine) -> None:
    OutcomeStore(engine, lambda aggregate_type: "profile").record([(T0, r) for r in results()])
    rows_ = SqlDivergenceStore(engine).comparisons("profile", T0 - dt.timedelta(minutes=1))
    assert sorted(r.outcome for r in rows_ if r.kind == "outcome") == ["divergence", "match", "missing"]


def state_of(engine: Engine) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    with engine.connect() as conn:
        pending = conn.execute(select(pending_table.c.side, pending_table.c.event_key).order_by(
            pending_table.c.arrived)).all()
        seen = conn.execute(select(seen_table.c.side, seen_table.c.event_id).order_by(seen_table.c.at)).all()
    return [tuple(r) for r in pending], [tuple(r) for r in seen]


def test_the_store_keeps_waiting_events_and_seen_ids_and_gives_them_back(engine: Engine) -> None:
    store = OutcomeStore(engine, lambda aggregate_type: "profile")
    long_id = "legacy-" + "y" * 400  # longer than the key column: keyed by its hash, given back whole
    first, second = event("legacy", event_id=long_id, zip="0"), event("legacy", aggregate_id="43")
    batch = OutcomeBatch()
    for i, (e, origin) in enumerate(((first, "domain.customer:0"), (second, ""))):
        batch.see("legacy", e.event_id, T0 + dt.timedelta(seconds=i))
        batch.wait("legacy", e, T0 + dt.timedelta(seconds=i), origin)
    store.write(batch)
    restored = store.restore(10)
    assert restored.waiting == [("legacy", first, T0, "domain.customer:0"),
                                ("legacy", second, T0 + dt.timedelta(seconds=1), "")]
    assert store.restore(10, ["domain.customer:0"]).waiting == [("legacy", first, T0, "domain.customer:0")]
    assert store.restore(10, ["domain.customer:1"]).waiting == []
    assert restored.seen == [("legacy", long_id), ("legacy", second.event_id)]
    assert restored.last_active == T0 + dt.timedelta(seconds=1)
    assert store.restore(1).seen == [("legacy", second.event_id)]  # the newest
    # joined and expired: gone from the pending table in the same transaction as their results
    j = OutcomeJoiner(rules(), window=WINDOW, modes=lambda: {})
    j.restore("legacy", first, T0)
    [match] = j.add("new", event("new", zip="0"), T0)
    done = OutcomeBatch(results=[(T0, match)])
    done.resolve("legacy", long_id)
    done.see("new", "new-x", T0 + dt.timedelta(seconds=2))
    done.see("legacy", second.event_id, T0 + dt.timedelta(seconds=2))  # seen again: harmless
    store.write(done)
    assert state_of(engine) == ([("legacy", second.event_id)], [
        ("legacy", long_id), ("legacy", second.event_id), ("new", "new-x")])
    assert [c["outcome"] for c in rows(engine, comparisons_table)] == ["match"]
    assert event_key(long_id).startswith("sha256:") and len(event_key(long_id)) <= 100


def test_a_batch_is_written_whole_or_not_at_all(engine: Engine) -> None:
    store = OutcomeStore(engine, lambda aggregate_type: "profile")
    batch = OutcomeBatch(results=[(T0, r) for r in results()])
    batch.stages.append(StageEvent("req-m", "42", Stage.RECONCILED, T0))
    batch.wait("legacy", event("legacy"), T0)
    batch.see("legacy", "legacy-a", T0)
    batch.results.append((T0, None))  # type: ignore[arg-type]  # a row that cannot be built: nothing is written
    with pytest.raises(AttributeError):
        store.write(batch)
    assert state_of(engine) == ([], []) and rows(engine, comparisons_table) == []
    assert SqlLedgerStore(engine).journeys("req-m") == []
    batch.results.pop()
    store.write(batch)
    store.write(batch)  # again, as after a commit whose answer was lost: the waiting event is there once
    assert len(state_of(engine)[0]) == 1 and len(state_of(engine)[1]) == 1
    [journey] = SqlLedgerStore(engine).journeys("req-m")  # the ledger moved with the results
    assert (journey.entity_key, journey.stage) == ("42", Stage.RECONCILED)


def test_seen_ids_are_forgotten_by_age_before_the_newest_not_by_the_clock(engine: Engine) -> None:
    store = OutcomeStore(engine, lambda aggregate_type: "profile")
    batch = OutcomeBatch()
    for minutes in (0, 50, 70, 130):
        batch.see("new", f"n-{minutes}", T0 + dt.timedelta(minutes=minutes))
    store.write(batch)
    assert store.prune_seen(dt.timedelta(hours=1)) == 2
    assert state_of(engine)[1] == [("new", "n-70"), ("new", "n-130")]
    assert store.prune_seen(dt.timedelta(hours=1)) == 0


def test_an_unreachable_store_is_store_unavailable(tmp_path: Path) -> None:
    store = OutcomeStore(create_store_engine(f"sqlite:///{tmp_path}/no-tables.db"), lambda aggregate_type: "p")
    with pytest.raises(StoreUnavailable, match="outcome store"):
        store.restore(10)
    with pytest.raises(StoreUnavailable, match="outcome store"):
        store.write(OutcomeBatch(seen={("legacy", "x"): T0}))
