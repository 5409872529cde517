"""The outcome service: results to the store and the ledger, the HTTP callback, and the SQL outcome store."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from starlette.applications import Starlette

from strangler.maturity.ledger import Stage, StageEvent
from strangler.routing.modes import Mode
from strangler.shadow.outcome_service import OutcomeService, OutcomeStore, outcome_routes
from strangler.shadow.outcomes import OutcomeJoiner, OutcomeResult
from strangler.shadow.store import SqlDivergenceStore, comparisons_table, divergences_table
from strangler.store import create_store_engine, upgrade_schema
from tests.shadow.test_outcomes import T0, WINDOW, event, rules


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


class Harness:
    def __init__(self, serving: str = "legacy", compared: bool = True, mode: Mode = Mode.SHADOW) -> None:
        self.clock = Clock()
        self.recorded: list[tuple[dt.datetime, OutcomeResult]] = []
        self.ledger: list[StageEvent] = []
        joiner = OutcomeJoiner(rules("report", "legacy"), window=WINDOW, modes=lambda: {"profile": mode})
        self.service = OutcomeService(joiner, self.recorded.append, self.ledger.append, self.clock, tick=0.01,
                                      serving=lambda aggregate_type: serving,  # type: ignore[arg-type,return-value]
                                      compared=lambda aggregate_type: compared)

    def stages(self) -> list[tuple[str, str, Stage]]:
        return [(e.correlation_id, e.entity_key, e.stage) for e in self.ledger]


def test_a_match_reconciles_the_change() -> None:
    h = Harness()
    h.service.feed("legacy", event("legacy"))
    h.service.feed("new", event("new"))
    assert h.stages() == [("req-1", "42", Stage.PROPAGATED), ("req-1", "42", Stage.RECONCILED)]
    assert [r.kind for _, r in h.recorded] == ["match"] and h.service.counts["match"] == 1


def test_a_divergence_is_an_exception_naming_field_and_classification() -> None:
    h = Harness()
    h.service.feed("legacy", event("legacy"))
    h.service.feed("new", event("new", zip="0"))
    assert h.ledger[-1].stage is Stage.EXCEPTION
    assert h.ledger[-1].detail == "outcome differs: /zip (conflict)"


def test_the_serving_sides_event_marks_propagation() -> None:
    h = Harness(serving="new")
    h.service.feed("legacy", event("legacy"))
    assert h.ledger == []
    h.service.feed("new", event("new"))
    assert h.stages()[0] == ("req-1", "42", Stage.PROPAGATED)


def test_an_event_without_correlation_id_leaves_the_ledger_alone() -> None:
    h = Harness()
    h.service.feed("legacy", event("legacy", cid=None))
    h.service.feed("new", event("new", cid=None))
    assert h.ledger == [] and [r.kind for _, r in h.recorded] == ["match"]


def test_entities_in_a_mode_that_compares_nothing_only_propagate() -> None:
    h = Harness(compared=False)
    assert h.service.feed("legacy", event("legacy")) == []
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
    async with client(h) as c:
        response = await c.post(path, content=body)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/problem+json")
    assert h.recorded == [] and h.service.joiner.pending() == 0


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
