"""Coarse deadlines: calls that outlast their timeout end with TimeoutError, the others are left alone."""

from __future__ import annotations

import asyncio

import pytest

from strangler.shadow.deadlines import CoarseDeadlines


async def wait_within(deadlines: CoarseDeadlines, timeout: float, event: asyncio.Event) -> str:
    try:
        with deadlines.within(timeout):
            await event.wait()
    except TimeoutError:
        return "timeout"
    return "done"


async def test_calls_that_outlast_their_timeout_end_with_timeout_error() -> None:
    deadlines = CoarseDeadlines(step=0.01)
    never = asyncio.Event()
    assert await asyncio.gather(*(wait_within(deadlines, 0.02, never) for _ in range(50))) == ["timeout"] * 50


async def test_calls_that_end_in_time_are_not_cancelled_later() -> None:
    deadlines = CoarseDeadlines(step=0.01)
    ready = asyncio.Event()
    ready.set()

    async def call_then_wait() -> tuple[str, int]:
        outcome = await wait_within(deadlines, 0.02, ready)
        await asyncio.sleep(0.05)  # past the deadline: a cancellation now would end this task
        task = asyncio.current_task()
        assert task is not None
        return outcome, task.cancelling()

    assert await asyncio.gather(*(call_then_wait() for _ in range(20))) == [("done", 0)] * 20


async def test_the_task_goes_on_normally_after_a_timeout() -> None:
    deadlines = CoarseDeadlines(step=0.01)
    assert await wait_within(deadlines, 0.01, asyncio.Event()) == "timeout"
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    async with asyncio.timeout(5):  # another timeout in the same task still works
        await asyncio.sleep(0)


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    deadlines = CoarseDeadlines(step=0.01)
    task = asyncio.create_task(wait_within(deadlines, 60, asyncio.Event()))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_within_needs_a_task() -> None:
    deadlines = CoarseDeadlines()
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()
    loop.call_soon(lambda: future.set_exception(_outside_a_task(deadlines)))
    with pytest.raises(RuntimeError, match="running task"):
        await future


def _outside_a_task(deadlines: CoarseDeadlines) -> BaseException:
    try:
        deadlines.within(1)
    except RuntimeError as exc:
        return exc
    return AssertionError("within() outside a task did not fail")
