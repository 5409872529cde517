"""The ledger's SQL store on SQLite and PostgreSQL: first report wins, journeys, entity adoption, recent."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from strangler.maturity.ledger import Stage, StageEvent, stage_lags
from strangler.maturity.store import SqlLedgerStore
from strangler.store import StoreUnavailable, create_store_engine, upgrade_schema

T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path}/store.db" if request.param == "sqlite" else (
        request.getfixturevalue("pg_database").url())
    upgrade_schema(url)
    engine = create_store_engine(url)
    yield engine
    engine.dispose()


def test_a_journey_is_recorded_stage_by_stage(engine: Engine) -> None:
    store = SqlLedgerStore(engine)
    store.record([StageEvent("req-1", "42", Stage.ACCEPTED, at(0), "profile"),
                  StageEvent("req-1", "42", Stage.APPLIED, at(0.2), "profile")])
    store.record([StageEvent("req-1", "42", Stage.PROPAGATED, at(1.5)),
                  StageEvent("req-1", "42", Stage.RECONCILED, at(3))])
    [j] = store.journeys("req-1")
    assert (j.correlation_id, j.entity_key, j.capability, j.stage, j.trusted) == (
        "req-1", "42", "profile", Stage.RECONCILED, True)
    assert j.stages == {Stage.ACCEPTED: at(0), Stage.APPLIED: at(0.2), Stage.PROPAGATED: at(1.5),
                        Stage.RECONCILED: at(3)}
    assert all(t.tzinfo is not None for t in j.stages.values())
    assert store.journeys("req-unknown") == []


def test_recording_is_idempotent_and_the_first_report_wins(engine: Engine) -> None:
    store = SqlLedgerStore(engine)
    store.record([StageEvent("req-1", "42", Stage.ACCEPTED, at(0), "profile")])
    store.record([StageEvent("req-1", "42", Stage.ACCEPTED, at(50), "other"),  # a replay, later
                  StageEvent("req-1", "42", Stage.EXCEPTION, at(5), detail="first reason"),
                  StageEvent("req-1", "42", Stage.EXCEPTION, at(6), detail="second reason")])
    store.record([StageEvent("req-1", "42", Stage.EXCEPTION, at(7), detail="third reason")])
    [j] = store.journeys("req-1")
    assert j.stages[Stage.ACCEPTED] == at(0) and j.capability == "profile"
    assert j.stages[Stage.EXCEPTION] == at(5) and j.exception_reason == "first reason"
    assert j.stage is Stage.EXCEPTION and not j.trusted


def test_one_request_may_change_several_entities(engine: Engine) -> None:
    store = SqlLedgerStore(engine)
    store.record([StageEvent("req-1", "42", Stage.ACCEPTED, at(0)), StageEvent("req-1", "43", Stage.ACCEPTED, at(0)),
                  StageEvent("req-2", "42", Stage.ACCEPTED, at(1))])
    assert sorted(j.entity_key for j in store.journeys("req-1")) == ["42", "43"]


def test_a_change_accepted_without_its_entity_is_adopted_by_the_first_stage_naming_it(engine: Engine) -> None:
    store = SqlLedgerStore(engine)
    store.record([StageEvent("req-create", "", Stage.ACCEPTED, at(0), "profile"),
                  StageEvent("req-create", "", Stage.APPLIED, at(0.1), "profile")])
    store.record([StageEvent("req-create", "1001", Stage.PROPAGATED, at(1))])
    [j] = store.journeys("req-create")
    assert (j.entity_key, j.capability) == ("1001", "profile")
    assert set(j.stages) == {Stage.ACCEPTED, Stage.APPLIED, Stage.PROPAGATED}


def test_a_stage_without_its_entity_joins_the_rows_that_name_it(engine: Engine) -> None:
    store = SqlLedgerStore(engine)  # the event side wrote first; the gateway's batch arrives later
    store.record([StageEvent("req-create", "1001", Stage.PROPAGATED, at(1))])
    store.record([StageEvent("req-create", "", Stage.ACCEPTED, at(0), "profile")])
    [j] = store.journeys("req-create")
    assert j.entity_key == "1001" and set(j.stages) == {Stage.ACCEPTED, Stage.PROPAGATED}


def test_recent_journeys_feed_the_lag_figures(engine: Engine) -> None:
    store = SqlLedgerStore(engine)
    events = []
    for i in range(20):
        events += [StageEvent(f"req-{i}", "42", Stage.ACCEPTED, at(i)), StageEvent(f"req-{i}", "42", Stage.APPLIED,
                                                                                    at(i + 1))]
        if i % 2 == 0:
            events += [StageEvent(f"req-{i}", "42", Stage.PROPAGATED, at(i + 2)),
                       StageEvent(f"req-{i}", "42", Stage.RECONCILED, at(i + 4))]
    store.record(events)
    store.record([StageEvent("req-old", "1", Stage.ACCEPTED, at(-7200))])
    journeys = store.recent(at(-60))
    assert len(journeys) == 20 and journeys[0].correlation_id == "req-18"  # updated last, at 22 s
    lags = stage_lags(journeys, at(3600), dt.timedelta(minutes=30))
    assert lags["lag_seconds"]["applied"]["p50"] == 1.0 and lags["lag_seconds"]["reconciled"]["p99"] == 4.0
    assert lags["stuck"] == {"accepted": 0, "applied": 10, "propagated": 0}
    assert len(store.recent(at(-60), limit=5)) == 5


def test_an_older_replay_does_not_move_updated_at_back(engine: Engine) -> None:
    store = SqlLedgerStore(engine)
    store.record([StageEvent("req-1", "42", Stage.ACCEPTED, at(100))])
    store.record([StageEvent("req-1", "42", Stage.APPLIED, at(-1000))])  # a clock behind, or a late replay
    assert [j.correlation_id for j in store.recent(at(50))] == ["req-1"]


def test_an_unreachable_store_raises_store_unavailable(tmp_path: Path) -> None:
    store = SqlLedgerStore(create_store_engine(f"sqlite:///{tmp_path}/never-migrated.db"))
    with pytest.raises(StoreUnavailable):
        store.record([StageEvent("req-1", "42", Stage.ACCEPTED, T0)])
    with pytest.raises(StoreUnavailable):
        store.journeys("req-1")
