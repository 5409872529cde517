"""Each process's in-memory view of the flags, kept fresh from the store without touching the request path.

`FlagCache` is the router's `FlagSource`: a dict swap, no I/O. `FlagRefresher` polls the store's change
counter every `refresh_interval` (one cheap query) and reloads on change; on PostgreSQL a LISTEN thread
wakes it at once. If the store cannot be reached the cache keeps its last flags, never flips by itself,
and says so through `status()` and the `strangler_flag_store_up` / `strangler_flags_age_seconds` gauges.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import make_url

from strangler.lifecycle import BackgroundTask
from strangler.routing.modes import RoutingFlag
from strangler.routing.store import NOTIFY_CHANNEL, FlagStore, StoredFlag
from strangler.store import StoreUnavailable

log = logging.getLogger("strangler.flags")


class FlagCache:
    def __init__(self, initial: Mapping[str, RoutingFlag]) -> None:
        self._initial = dict(initial)
        self._flags = dict(initial)
        self.counter: int | None = None  # the store's change counter at the last load; None: never loaded
        self.store_up = False
        self.loaded_at: float | None = None  # monotonic time of the last successful refresh
        self.last_error: str | None = None
        # the stored rows behind the flags (who changed them, when, why), for listing them while the store is away
        self.records: dict[str, StoredFlag] = {}

    def flag(self, capability: str) -> RoutingFlag:
        return self._flags[capability]

    def replace(self, stored: Mapping[str, RoutingFlag], counter: int, now: float,
                records: Mapping[str, StoredFlag] | None = None) -> None:
        flags = dict(self._initial)
        flags.update({name: flag for name, flag in stored.items() if name in flags})
        self._flags = flags  # one reference swap: readers never see a half-applied update
        self.records = {name: record for name, record in (records or {}).items() if name in flags}
        self.counter = counter
        self.store_up = True
        self.loaded_at = now
        self.last_error = None

    def status(self, now: float) -> dict[str, Any]:
        return {
            "flag_store": "up" if self.store_up else "unreachable",
            "flags_source": "store" if self.counter is not None else "configured initial modes",
            "flags_age_seconds": round(now - self.loaded_at, 3) if self.loaded_at is not None else None,
            "flag_store_error": self.last_error,
        }


class FlagRefresher(BackgroundTask):
    """Keeps a `FlagCache` in step with a `FlagStore`; `start()`/`stop()` in the process's event loop."""

    def __init__(
        self,
        store: FlagStore,
        cache: FlagCache,
        interval: float,
        *,
        store_url: str | None = None,
        metrics: Any | None = None,
    ) -> None:
        self.store = store
        self.cache = cache
        self.interval = interval
        self._store_url = store_url
        self._metrics = metrics
        self._wake = asyncio.Event()
        self._listener: threading.Thread | None = None
        self._stopping = threading.Event()

    async def start(self) -> None:
        await self.refresh()
        if not self.cache.store_up:
            log.warning("flag store unreachable at start-up (%s): routing by the configured initial modes",
                        self.cache.last_error)
        await super().start()
        if self._store_url and make_url(self._store_url).get_backend_name() == "postgresql":
            loop = asyncio.get_running_loop()
            self._listener = threading.Thread(target=self._listen, args=(loop,), daemon=True, name="flag-listen")
            self._listener.start()

    async def stop(self) -> None:
        self._stopping.set()
        await super().stop()

    def wake(self) -> None:
        self._wake.set()

    async def refresh(self) -> None:
        now = time.monotonic()
        try:
            counter = await asyncio.to_thread(self.store.change_counter)
            if counter != self.cache.counter:
                stored = await asyncio.to_thread(self.store.load)
                self.cache.replace({n: f.routing for n, f in stored.items()}, counter, now, stored)
                log.info("flags loaded (change counter %d)", counter)
            else:
                self.cache.store_up = True
                self.cache.loaded_at = now
                self.cache.last_error = None
        except StoreUnavailable as exc:
            if self.cache.store_up:
                log.warning("flag store unreachable, keeping the last known flags: %s", exc)
            self.cache.store_up = False
            self.cache.last_error = str(exc).splitlines()[0][:300]
        except Exception as exc:  # e.g. a mode a newer version stored: an escape would end the polling task
            if self.cache.store_up:
                log.exception("cannot read the stored flags, keeping the last known flags")
            self.cache.store_up = False
            self.cache.last_error = f"cannot read the stored flags: {exc.__class__.__name__}: {exc}"[:300]
        self._report(now)

    def _report(self, now: float) -> None:
        if self._metrics is None:
            return
        self._metrics.store_up.set(1 if self.cache.store_up else 0)
        age = now - self.cache.loaded_at if self.cache.loaded_at is not None else float("inf")
        self._metrics.flags_age.set(age if age != float("inf") else -1)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            await self.refresh()

    def _listen(self, loop: asyncio.AbstractEventLoop) -> None:
        """LISTEN for flag changes on PostgreSQL; reconnects quietly (polling covers the gaps)."""
        import psycopg

        if self._store_url is None:
            return
        url = make_url(self._store_url).set(drivername="postgresql")
        dsn = url.render_as_string(hide_password=False)
        while not self._stopping.is_set():
            try:
                with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    while not self._stopping.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            loop.call_soon_threadsafe(self._wake.set)
            except Exception as exc:  # any failure: wait and reconnect; polling still runs meanwhile
                log.debug("flag LISTEN connection failed: %s", exc)
                self._stopping.wait(self.interval)
