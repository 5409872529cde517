"""The ledger's pure core: a journey's stage, whether it may be trusted, stage lags and stuck counts."""

from __future__ import annotations

import datetime as dt

import pytest

from strangler.maturity.ledger import Journey, Stage, overall_stage, stage_lags

T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
STUCK = dt.timedelta(minutes=30)


def journey(cid: str = "c", reason: str | None = None, **seconds: float) -> Journey:
    stages = {Stage(name): T0 + dt.timedelta(seconds=s) for name, s in seconds.items()}
    return Journey(cid, "42", "profile", stages, reason)


@pytest.mark.parametrize(("stages", "stage", "trusted"), [
    ({}, Stage.ACCEPTED, False),
    ({"accepted": 0}, Stage.ACCEPTED, False),
    ({"accepted": 0, "applied": 1}, Stage.APPLIED, False),
    ({"accepted": 0, "applied": 1, "propagated": 2}, Stage.PROPAGATED, False),
    ({"accepted": 0, "applied": 1, "propagated": 2, "reconciled": 3}, Stage.RECONCILED, True),
    ({"accepted": 0, "applied": 1, "propagated": 2, "reconciled": 3, "exception": 4}, Stage.EXCEPTION, False),
    ({"propagated": 2}, Stage.PROPAGATED, False),  # the gateway's stages not (yet) written
])
def test_the_stage_and_trust_of_a_journey(stages: dict[str, float], stage: Stage, trusted: bool) -> None:
    j = journey(**stages)
    assert (j.stage, j.trusted) == (stage, trusted)
    assert j.as_dict()["stage"] == stage.value and set(j.as_dict()["stages"]) == set(stages)


def test_a_requests_overall_stage_is_its_least_advanced_change_or_an_exception() -> None:
    done = journey(accepted=0, reconciled=5)
    behind = journey(accepted=0, applied=1)
    assert overall_stage([done, behind]) is Stage.APPLIED
    assert overall_stage([done]) is Stage.RECONCILED
    assert overall_stage([done, journey(accepted=0, exception=3)]) is Stage.EXCEPTION


def test_stage_lags_are_percentiles_of_the_time_from_accepted() -> None:
    journeys = [journey(f"c{i}", accepted=0, applied=i / 100, propagated=1 + i, reconciled=2 + i) for i in range(100)]
    lags = stage_lags(journeys, T0 + dt.timedelta(hours=1), STUCK)
    assert lags["changes"] == 100 and lags["exceptions"] == 0
    assert lags["lag_seconds"]["applied"] == {"p50": 0.5, "p99": 0.98, "count": 100}
    assert lags["lag_seconds"]["propagated"] == {"p50": 51.0, "p99": 99.0, "count": 100}
    assert lags["lag_seconds"]["reconciled"] == {"p50": 52.0, "p99": 100.0, "count": 100}


def test_lags_without_an_accepted_time_are_not_counted() -> None:
    lags = stage_lags([journey(propagated=5, reconciled=6)], T0, STUCK)
    assert lags["lag_seconds"]["reconciled"] == {"p50": None, "p99": None, "count": 0}


def test_changes_stuck_in_a_stage_longer_than_the_threshold_are_counted() -> None:
    now = T0 + dt.timedelta(hours=2)
    journeys = [
        journey("old-applied", accepted=0, applied=1),  # applied two hours ago, nothing since: stuck
        journey("recent-applied", accepted=0, applied=2 * 3600 - 60),  # applied a minute ago: not yet
        journey("old-propagated", accepted=0, applied=1, propagated=2),  # stuck in propagated
        journey("old-accepted", accepted=0),  # the authority never answered 2xx
        journey("done", accepted=0, applied=1, propagated=2, reconciled=3),  # never stuck
        journey("failed", accepted=0, applied=1, exception=3),  # an exception is counted apart
    ]
    lags = stage_lags(journeys, now, STUCK)
    assert lags["stuck"] == {"accepted": 1, "applied": 1, "propagated": 1}
    assert lags["exceptions"] == 1 and lags["stuck_after_seconds"] == 1800.0
