"""Noticing a client that went away while its request waits for the upstream or streams its answer back.

uvicorn tells of a disconnect only a caller of `receive()`, and nobody calls it once the request body is
read: an abandoned request would run on to the upstream's timeout, or for ever behind an endless answer.
A task waiting in `receive()` notices, but creating one costs more than a fast request's own gateway
logic; so a request gets one only when it is still running one or two sweeps (`period` s each) after it
began. Once the client is gone, the request's task is cancelled: the upstream call is abandoned (its
connection closed) and the proxy ends the request quietly.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol


class RequestBody(Protocol):
    @property
    def complete(self) -> bool: ...


class ClientWatch:
    """One request's watch; `stop` it when the request ends."""

    __slots__ = ("_sweeper", "_receive", "_body", "_owner", "_task", "gone", "interrupting")

    def __init__(
        self, sweeper: DisconnectSweeper, receive: Any, body: RequestBody | None, owner: asyncio.Task[Any] | None
    ) -> None:
        self._sweeper = sweeper
        self._receive = receive
        self._body = body
        self._owner = owner
        self._task: asyncio.Task[None] | None = None
        self.gone = False  # the client went away (and the owner was cancelled for it, if `interrupting`)
        self.interrupting = True

    @property
    def ready(self) -> bool:
        """Whether `receive` is free to watch: the request body is read (by its own reader) or there is none."""
        return self._body is None or self._body.complete

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._task = loop.create_task(self._watch())

    def finishing(self) -> None:
        """The response is about to end: uvicorn answers `receive()` with a disconnect from then on."""
        self.interrupting = False

    def stop(self) -> None:
        if self._task is None:
            self._sweeper.forget(self)
        elif not self._task.done():
            self._task.cancel()

    async def _watch(self) -> None:
        receive = self._receive
        while (await receive())["type"] != "http.disconnect":
            pass  # the rest of a body nobody reads any more (the upstream answered early)
        if self.interrupting and self._owner is not None and not self._owner.done():
            self.gone = True
            self._owner.cancel()


class DisconnectSweeper:
    """Per worker: starts the watch of each request that has outlived a whole sweep period."""

    def __init__(self, period: float = 0.25) -> None:
        self.period = period
        self._young: dict[ClientWatch, None] = {}  # began since the last sweep
        self._old: dict[ClientWatch, None] = {}  # began before it: running for a period at least by the next
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def watch(self, receive: Any, body: RequestBody | None) -> ClientWatch:
        """Watch the current task's request (from the next sweep but one)."""
        loop = self._loop
        if self._timer is None or loop is None or not loop.is_running():
            # asking for the running loop costs a system call on Python 3.11 (a fork check): once a sweep
            loop = self._loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.period, self._sweep)
        watch = ClientWatch(self, receive, body, asyncio.current_task(loop))
        self._young[watch] = None
        return watch

    def forget(self, watch: ClientWatch) -> None:
        if watch in self._young:
            del self._young[watch]
        else:
            self._old.pop(watch, None)

    def _sweep(self) -> None:
        self._timer = None
        waiting: dict[ClientWatch, None] = {}
        for watch in self._old:
            if watch.ready and self._loop is not None:
                watch.start(self._loop)
            else:
                waiting[watch] = None  # its body is still being read; that reader hears of a disconnect
        waiting.update(self._young)
        self._old, self._young = waiting, {}
        if self._old and self._loop is not None:
            self._timer = self._loop.call_later(self.period, self._sweep)
