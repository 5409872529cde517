"""Gates: the pure rule that lets a flag move forward only on evidence, and backward always."""

from __future__ import annotations

import pytest

from strangler.routing.config import GateConfig
from strangler.routing.gate import Evidence, NoEvidence, is_forward, is_gated, judge_change
from strangler.routing.modes import Mode, RoutingFlag

GATE = GateConfig(min_samples=200, max_divergence_rate=0.01)
ORDER = [Mode.LEGACY, Mode.SHADOW, Mode.CANARY, Mode.NEW, Mode.NEW_ONLY]


def flag(mode: Mode, percent: float = 0.0) -> RoutingFlag:
    return RoutingFlag(mode, percent, 3)


@pytest.mark.parametrize("i", range(len(ORDER)))
@pytest.mark.parametrize("j", range(len(ORDER)))
def test_forward_means_later_in_the_migration_order(i: int, j: int) -> None:
    assert is_forward(flag(ORDER[i]), ORDER[j], 0.0) is (j > i)


@pytest.mark.parametrize(
    ("current", "percent", "forward"), [(5.0, 25.0, True), (25.0, 25.0, False), (25.0, 5.0, False), (0.0, 0.01, True)]
)
def test_a_larger_canary_share_is_forward(current: float, percent: float, forward: bool) -> None:
    assert is_forward(flag(Mode.CANARY, current), Mode.CANARY, percent) is forward


@pytest.mark.parametrize(
    ("evidence", "allowed"),
    [
        (Evidence(200, 2), True),  # exactly at both thresholds
        (Evidence(199, 0), False),  # one sample short
        (Evidence(200, 3), False),  # rate 0.015
        (Evidence(10_000, 100), True),  # rate 0.01
        (Evidence(0, 0), False),
    ],
)
def test_a_forward_move_needs_enough_samples_and_a_low_enough_rate(evidence: Evidence, allowed: bool) -> None:
    decision = judge_change(flag(Mode.SHADOW), Mode.CANARY, 5.0, GATE, evidence, force=False)
    assert decision.allowed is allowed
    assert decision.forward is True and decision.forced is False
    assert (decision.samples, decision.divergent, decision.rate) == (evidence.samples, evidence.divergent,
                                                                     evidence.rate)
    assert (decision.min_samples, decision.max_divergence_rate) == (200, 0.01)
    assert decision.explanation.startswith("gate met" if allowed else "gate not met")


def test_the_refusal_explains_each_unmet_threshold() -> None:
    decision = judge_change(flag(Mode.SHADOW), Mode.CANARY, 5.0, GATE, Evidence(50, 5), force=False)
    assert decision.explanation == "gate not met: 50 samples < 200 required; divergence rate 0.1000 > 0.01"
    assert decision.as_dict()["rate"] == 0.1


def test_force_overrides_an_unmet_gate_and_says_so() -> None:
    decision = judge_change(flag(Mode.LEGACY), Mode.NEW_ONLY, 0.0, GATE, Evidence(0, 0), force=True)
    assert (decision.allowed, decision.forced) == (True, True)
    assert decision.explanation.endswith("(forced)")


def test_force_on_a_met_gate_is_not_recorded_as_forced() -> None:
    decision = judge_change(flag(Mode.SHADOW), Mode.NEW, 0.0, GATE, Evidence(500, 0), force=True)
    assert (decision.allowed, decision.forced) == (True, False)


@pytest.mark.parametrize(
    ("current", "mode", "percent"),
    [
        (flag(Mode.NEW_ONLY), Mode.LEGACY, 0.0),
        (flag(Mode.NEW), Mode.SHADOW, 0.0),
        (flag(Mode.CANARY, 50.0), Mode.CANARY, 5.0),
        (flag(Mode.CANARY, 50.0), Mode.CANARY, 50.0),
        (flag(Mode.SHADOW), Mode.SHADOW, 0.0),
    ],
)
def test_moving_back_or_staying_is_always_allowed(current: RoutingFlag, mode: Mode, percent: float) -> None:
    terrible = Evidence(1000, 900)
    decision = judge_change(current, mode, percent, GATE, terrible, force=False)
    assert (decision.allowed, decision.forward, decision.forced) == (True, False, False)


def test_without_comparisons_no_forward_move_passes() -> None:
    evidence = NoEvidence().evidence("anything")
    assert evidence == Evidence(0, 0) and evidence.rate == 0.0
    assert not judge_change(flag(Mode.SHADOW), Mode.CANARY, 5.0, GATE, evidence, force=False).allowed
    zero_gate = GateConfig(min_samples=0, max_divergence_rate=0.0)
    assert judge_change(flag(Mode.SHADOW), Mode.CANARY, 5.0, zero_gate, evidence, force=False).allowed


@pytest.mark.parametrize("force", [False, True])
def test_entering_shadow_from_legacy_is_not_gated(force: bool) -> None:
    terrible = Evidence(1000, 900)
    decision = judge_change(flag(Mode.LEGACY), Mode.SHADOW, 0.0, GATE, terrible, force=force)
    assert (decision.allowed, decision.forward, decision.forced) == (True, True, False)
    assert decision.explanation.startswith("entering shadow is not gated")
    assert (decision.min_samples, decision.max_divergence_rate) == (200, 0.01)  # the audit row still shows the gate


@pytest.mark.parametrize(
    ("current", "mode", "percent", "gated"),
    [
        (flag(Mode.LEGACY), Mode.SHADOW, 0.0, False),
        (flag(Mode.LEGACY), Mode.CANARY, 5.0, True),  # skipping shadow skips the evidence: gated
        (flag(Mode.LEGACY), Mode.NEW, 0.0, True),
        (flag(Mode.LEGACY), Mode.NEW_ONLY, 0.0, True),
        (flag(Mode.SHADOW), Mode.CANARY, 5.0, True),
        (flag(Mode.CANARY, 5.0), Mode.CANARY, 25.0, True),
        (flag(Mode.NEW), Mode.NEW_ONLY, 0.0, True),
        (flag(Mode.NEW_ONLY), Mode.SHADOW, 0.0, False),
        (flag(Mode.CANARY, 50.0), Mode.LEGACY, 0.0, False),
        (flag(Mode.SHADOW), Mode.LEGACY, 0.0, False),
        (flag(Mode.LEGACY), Mode.LEGACY, 0.0, False),
    ],
)
def test_only_forward_moves_past_shadow_are_gated(current: RoutingFlag, mode: Mode, percent: float,
                                                  gated: bool) -> None:
    assert is_gated(current, mode, percent) is gated
    refused = judge_change(current, mode, percent, GATE, Evidence(0, 0), force=False)
    assert refused.allowed is not gated
