"""A loop that runs beside a process's server: started and stopped with it (the `Lifecycle` the proxy and
the admin listener run)."""

from __future__ import annotations

import asyncio
import contextlib


class BackgroundTask:
    """Runs `_run()` as one asyncio task from `start()` until `stop()` cancels it."""

    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        raise NotImplementedError
