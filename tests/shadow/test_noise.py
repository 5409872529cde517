"""Diffy's rule: a field diverges only when it differs clearly more often than the serving side differs
from itself: relative difference |d - n| / (d + n) > 20% and absolute difference d - n > 0.03% of samples."""

from __future__ import annotations

import pytest

from strangler.shadow.noise import classify_fields, is_divergent, is_real


@pytest.mark.parametrize(
    ("rate", "noise_rate", "real"),
    [
        (1.0, 0.0, True),  # always differs, never noisy: a divergence
        (0.0, 0.0, False),
        (0.0004, 0.0, True),  # 0.04% > 0.03% absolute, 100% relative
        (0.0003, 0.0, False),  # absolute difference not above 0.03%
        (0.0002, 0.0, False),
        (1.0, 1.0, False),  # differs every time, and from itself every time: noise
        (0.5, 0.5, False),
        (0.5, 0.4, False),  # 0.1 / 0.9 = 11% relative: within noise
        (0.55, 0.45, False),  # 10% relative
        (0.6, 0.4, False),  # exactly 20% relative is not above it
        (0.61, 0.4, True),  # 0.21 / 1.01 = 20.8%
        (0.7, 0.4, True),  # 27%
        (1.0, 0.5, True),  # 33%
        (0.3, 0.5, False),  # differs less often than the noise: never a divergence
        (0.0, 1.0, False),
        (0.01, 0.004, True),  # 43% relative, 0.6% absolute
        (0.0008, 0.0004, True),  # 33% relative, 0.04% absolute
        (0.0006, 0.0004, False),  # 20% relative: not above
        (0.0012, 0.001, False),  # 9% relative
    ],
)
def test_diffy_rule_truth_table(rate: float, noise_rate: float, real: bool) -> None:
    assert is_real(rate, noise_rate) is real


@pytest.mark.parametrize(
    ("relative", "absolute", "real"),
    [(0.2, 0.0003, True), (0.5, 0.0003, False), (0.2, 0.2, False), (0.0, 0.0, True)],
)
def test_thresholds_are_parameters(relative: float, absolute: float, real: bool) -> None:
    # rate 0.3, noise 0.1: relative 50%, absolute 20%
    assert is_real(0.3, 0.1, relative, absolute) is real


def test_classify_fields_uses_counts_over_their_own_sample_sizes() -> None:
    verdicts = classify_fields(
        compared=1000,
        differed={"/price": 1000, "/request_id": 1000, "/rare": 1, "/clock": 300},
        noise_samples=100,
        noise_differed={"/request_id": 100, "/clock": 25, "/only_noise": 3},
    )
    assert {name: v.noise for name, v in verdicts.items()} == {
        "/price": False,  # 100% vs 0% noise
        "/request_id": True,  # 100% vs 100%
        "/rare": False,  # 0.1% vs 0%: above 0.03%
        "/clock": True,  # 30% vs 25%: 9% relative
        "/only_noise": True,
    }
    rare = verdicts["/rare"]
    assert (rare.differed, rare.compared, rare.rate) == (1, 1000, 0.001)
    clock = verdicts["/clock"]
    assert (clock.noise_differed, clock.noise_samples, clock.noise_rate) == (25, 100, 0.25)


def test_a_field_seen_once_in_ten_thousand_is_within_the_absolute_threshold() -> None:
    verdicts = classify_fields(10_000, {"/x": 3}, 0, {})
    assert verdicts["/x"].noise  # 0.03% is not above 0.03%
    assert not classify_fields(10_000, {"/x": 4}, 0, {})["/x"].noise


def test_without_noise_samples_every_difference_above_the_threshold_is_real() -> None:
    verdicts = classify_fields(10, {"/a": 10, "/b": 1}, 0, {})
    assert not verdicts["/a"].noise and not verdicts["/b"].noise
    assert verdicts["/a"].noise_rate == 0.0


def test_a_status_mismatch_is_never_noise() -> None:
    verdicts = classify_fields(100, {"status": 50}, 100, {"status": 50})
    assert verdicts["status"].noise is False


def test_no_comparisons_no_rates() -> None:
    verdicts = classify_fields(0, {}, 10, {"/a": 10})
    assert verdicts["/a"].rate == 0.0 and verdicts["/a"].noise


@pytest.mark.parametrize(
    ("fields", "noise", "divergent"),
    [((), set(), False), (("/a",), {"/a"}, False), (("/a", "/b"), {"/a"}, True), (("status",), set(), True)],
)
def test_a_comparison_diverges_when_one_of_its_fields_is_not_noise(
    fields: tuple[str, ...], noise: set[str], divergent: bool
) -> None:
    assert is_divergent(fields, noise) is divergent
