from __future__ import annotations

import pytest

from strangler.routing.modes import Mode, RoutingDecision, RoutingFlag, decide


@pytest.mark.parametrize(
    ("mode", "bucket", "expected"),
    [
        (Mode.LEGACY, 0, RoutingDecision("old", None, "legacy")),
        (Mode.SHADOW, 0, RoutingDecision("old", "svc", "legacy")),
        (Mode.CANARY, 0, RoutingDecision("svc", "old", "new")),
        (Mode.CANARY, 2499, RoutingDecision("svc", "old", "new")),
        (Mode.CANARY, 2500, RoutingDecision("old", "svc", "legacy")),
        (Mode.CANARY, None, RoutingDecision("old", "svc", "legacy")),
        (Mode.NEW, None, RoutingDecision("svc", "old", "new")),
        (Mode.NEW_ONLY, None, RoutingDecision("svc", None, "new")),
    ],
)
def test_decide_follows_the_mode_table(mode: Mode, bucket: int | None, expected: RoutingDecision) -> None:
    assert decide("old", "svc", RoutingFlag(mode, percent=25.0), bucket) == expected


@pytest.mark.parametrize("mode", list(Mode))
def test_decide_without_a_new_upstream_always_serves_legacy_alone(mode: Mode) -> None:
    assert decide("old", None, RoutingFlag(mode, percent=100.0), 0) == RoutingDecision("old", None, "legacy")


@pytest.mark.parametrize(
    ("percent", "buckets_to_new"),
    [(0.0, 0), (0.01, 1), (0.29, 29), (0.57, 57), (1.15, 115), (12.5, 1250), (100.0, 10000)],
)
def test_canary_sends_exactly_percent_of_buckets_to_new(percent: float, buckets_to_new: int) -> None:
    flag = RoutingFlag(Mode.CANARY, percent=percent)
    served_by_new = sum(decide("old", "svc", flag, bucket).target == "new" for bucket in range(10_000))
    assert served_by_new == buckets_to_new


def test_raising_canary_percent_only_moves_buckets_from_legacy_to_new() -> None:
    buckets = [0, 1, 28, 29, 56, 57, 114, 1249, 3332, 5000, 9998, 9999]
    previous: set[int] = set()
    for hundredths in range(0, 10_001):
        flag = RoutingFlag(Mode.CANARY, percent=hundredths / 100)
        on_new = {b for b in buckets if decide("old", "svc", flag, b).target == "new"}
        assert previous <= on_new
        previous = on_new
    assert previous == set(buckets)


def test_modes_rank_in_migration_order() -> None:
    ranked = sorted(Mode, key=lambda m: m.rank)
    assert ranked == [Mode.LEGACY, Mode.SHADOW, Mode.CANARY, Mode.NEW, Mode.NEW_ONLY]
    assert Mode("new-only") is Mode.NEW_ONLY
