from __future__ import annotations

import pytest

from strangler.gateway.errors import BodyTooLarge, ConnectFailed, UpstreamTimeout, UpstreamUnavailable
from strangler.gateway.retry import RetryBudget, call_with_retries, exponential_backoff, is_retryable


@pytest.mark.parametrize(
    ("exc", "method", "body_started", "retryable"),
    [
        (ConnectFailed("refused"), "GET", False, True),
        (ConnectFailed("refused"), "POST", False, True),  # nothing was sent
        (ConnectFailed("refused"), "PATCH", False, True),
        (ConnectFailed("refused"), "POST", True, False),
        (UpstreamUnavailable("reset"), "GET", False, True),
        (UpstreamUnavailable("reset"), "HEAD", False, True),
        (UpstreamUnavailable("reset"), "OPTIONS", False, True),
        (UpstreamUnavailable("reset"), "TRACE", False, True),
        (UpstreamUnavailable("reset"), "PUT", False, True),
        (UpstreamUnavailable("reset"), "DELETE", False, True),
        (UpstreamUnavailable("reset"), "POST", False, False),  # may have reached the upstream
        (UpstreamUnavailable("reset"), "PATCH", False, False),
        (UpstreamUnavailable("reset"), "PUT", True, False),  # the body cannot be read twice
        (UpstreamTimeout("slow"), "GET", False, False),  # a slow upstream is not helped by more load
        (UpstreamTimeout("slow"), "POST", False, False),
        (BodyTooLarge(10), "GET", False, False),
        (ValueError("bug"), "GET", False, False),
    ],
)
def test_is_retryable(exc: BaseException, method: str, body_started: bool, retryable: bool) -> None:
    assert is_retryable(exc, method, body_started) is retryable


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("ratio", [0.1, 0.2, 0.5])
def test_retry_budget_limits_retries_to_about_ratio_of_requests_under_sustained_failure(ratio: float) -> None:
    budget = RetryBudget(ratio, floor_per_second=3.0, capacity=50.0, clock=FakeClock())
    requests = 10_000
    retries = 0
    for _ in range(requests):
        budget.deposit()
        while budget.withdraw():  # every request fails and would retry as often as allowed
            retries += 1
    assert abs(retries - ratio * requests) <= 50 + 1  # the initial capacity is the only excess


def test_retry_budget_floor_refills_with_time() -> None:
    clock = FakeClock()
    budget = RetryBudget(0.2, floor_per_second=3.0, capacity=50.0, clock=clock)
    while budget.withdraw():
        pass
    assert not budget.withdraw()
    clock.now += 1.0
    granted = sum(budget.withdraw() for _ in range(10))
    assert granted == 3
    clock.now += 3600
    assert sum(budget.withdraw() for _ in range(100)) == 50  # never more than the capacity


def test_retry_budget_with_ratio_zero_allows_no_retry() -> None:
    clock = FakeClock()
    budget = RetryBudget(0.0, clock=clock)
    for _ in range(100):
        budget.deposit()
    clock.now += 60
    assert not budget.withdraw()


def test_exponential_backoff_grows_and_is_capped() -> None:
    for retry, ceiling in [(1, 0.01), (2, 0.02), (3, 0.04), (6, 0.2), (30, 0.2)]:
        waits = [exponential_backoff(retry) for _ in range(200)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
    assert len({exponential_backoff(5) for _ in range(20)}) > 1  # jittered


class ScriptedAttempt:
    """An upstream call that raises or returns the scripted outcomes in order."""

    def __init__(self, *outcomes: object) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    async def __call__(self) -> object:
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


async def retried(
    attempt: ScriptedAttempt,
    first_error: BaseException,
    *,
    method: str = "GET",
    attempts: int = 3,
    budget: RetryBudget | None = None,
    body_started: bool = False,
    retries: list[None] | None = None,
) -> object:
    seen = retries if retries is not None else []
    return await call_with_retries(
        attempt,
        first_error,
        method=method,
        body_started=lambda: body_started,
        attempts=attempts,
        budget=budget or RetryBudget(0.2, clock=FakeClock()),
        on_retry=lambda: seen.append(None),
        backoff=lambda retry: 0.0,
    )


async def test_call_with_retries_never_retries_a_post_after_upstream_unavailable() -> None:
    attempt = ScriptedAttempt("ok")
    first = UpstreamUnavailable("reset")
    with pytest.raises(UpstreamUnavailable) as info:
        await retried(attempt, first, method="POST")
    assert info.value is first
    assert attempt.calls == 0


async def test_call_with_retries_retries_connect_failed_even_for_a_post() -> None:
    attempt = ScriptedAttempt("ok")
    retries: list[None] = []
    assert await retried(attempt, ConnectFailed("refused"), method="POST", retries=retries) == "ok"
    assert attempt.calls == 1
    assert len(retries) == 1


async def test_call_with_retries_stops_at_attempts_counting_the_first_call() -> None:
    last = ConnectFailed("refused 3")
    attempt = ScriptedAttempt(ConnectFailed("refused 2"), last, "never reached")
    retries: list[None] = []
    with pytest.raises(ConnectFailed) as info:
        await retried(attempt, ConnectFailed("refused 1"), attempts=3, retries=retries)
    assert info.value is last
    assert attempt.calls == 2  # plus the first call: three in all
    assert len(retries) == 2  # a retry is counted only when it is made


@pytest.mark.parametrize("attempts", [0, 1])
async def test_call_with_retries_with_no_attempts_left_reraises_at_once(attempts: int) -> None:
    attempt = ScriptedAttempt("ok")
    first = ConnectFailed("refused")
    with pytest.raises(ConnectFailed) as info:
        await retried(attempt, first, attempts=attempts)
    assert info.value is first
    assert attempt.calls == 0


async def test_call_with_retries_does_not_spend_budget_on_a_retry_it_does_not_make() -> None:
    clock = FakeClock()
    budget = RetryBudget(0.2, capacity=2.0, clock=clock)
    attempt = ScriptedAttempt(ConnectFailed("2"))
    with pytest.raises(ConnectFailed):
        await retried(attempt, ConnectFailed("1"), attempts=2, budget=budget)
    assert budget.withdraw()  # one token spent on the one retry; the second is still there
    assert not budget.withdraw()


async def test_call_with_retries_stops_when_the_budget_is_spent() -> None:
    budget = RetryBudget(0.2, capacity=1.0, clock=FakeClock())
    attempt = ScriptedAttempt(ConnectFailed("2"), "never reached")
    with pytest.raises(ConnectFailed, match="2"):
        await retried(attempt, ConnectFailed("1"), attempts=5, budget=budget)
    assert attempt.calls == 1


async def test_call_with_retries_stops_at_an_error_that_is_not_retryable() -> None:
    timeout = UpstreamTimeout("slow")
    attempt = ScriptedAttempt(timeout, "never reached")
    with pytest.raises(UpstreamTimeout) as info:
        await retried(attempt, UpstreamUnavailable("reset"), method="GET", attempts=5)
    assert info.value is timeout
    assert attempt.calls == 1


async def test_call_with_retries_does_not_retry_once_the_body_was_read() -> None:
    attempt = ScriptedAttempt("ok")
    with pytest.raises(ConnectFailed):
        await retried(attempt, ConnectFailed("refused"), body_started=True)
    assert attempt.calls == 0


async def test_call_with_retries_returns_the_first_success() -> None:
    attempt = ScriptedAttempt(UpstreamUnavailable("reset"), "ok", "not this")
    assert await retried(attempt, UpstreamUnavailable("reset"), method="PUT", attempts=4) == "ok"
    assert attempt.calls == 2
