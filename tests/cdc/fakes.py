"""Fakes of the connector's ports: a source over an in-memory log, a sink that acknowledges on poll."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from strangler.cdc.errors import SinkError, SourceError
from strangler.cdc.ports import Checkpoint, DeliveryCallback, SourceStatus


class FakeDatabase:
    """What survives a session: the change log and the confirmed position."""

    def __init__(self, changes: int, per_txn: int = 3) -> None:
        self.log = [(i // per_txn, i) for i in range(changes)]  # (transaction, change)
        self.per_txn = per_txn
        self.confirmed = -1  # the last transaction confirmed
        self.acknowledged: list[int] = []
        self.fail_start = 0


def change_value(change: int) -> bytes:
    """A change event of ours (an insert into public.t) for change number `change`."""
    source = {"connector": "postgresql", "schema": "public", "table": "t", "ts_us": 1_700_000_000_000_000,
              "lsn": 1000 + change}
    return orjson.dumps({"before": None, "after": {"id": change}, "source": source, "op": "c"})


class FakeSource:
    def __init__(self, db: FakeDatabase, value: Callable[[int], bytes] = lambda change: b"{}") -> None:
        self.db = db
        self.value = value
        self.position = 0
        self._status = SourceStatus(phase="streaming")

    def start(self) -> None:
        if self.db.fail_start > 0:
            self.db.fail_start -= 1
            raise SourceError("database is starting up")
        self.position = next((i for i, (txn, _) in enumerate(self.db.log) if txn > self.db.confirmed), len(self.db.log))

    def read(self, max_items: int, timeout: float) -> list[Any]:
        out: list[Any] = []
        log = self.db.log
        while self.position < len(log) and len(out) < max_items:
            txn, change = log[self.position]
            out.append(("t", str(change).encode(), self.value(change), None))
            self.position += 1
            if self.position == len(log) or log[self.position][0] != txn:
                out.append(Checkpoint(txn))
        if not out:
            time.sleep(min(timeout, 0.01))
        return out

    def acknowledge(self, checkpoint: Checkpoint) -> None:
        self.db.acknowledged.append(checkpoint.position)
        self._acked = checkpoint.position

    def confirm(self) -> None:
        if hasattr(self, "_acked"):
            self.db.confirmed = self._acked

    def heartbeat(self, now_us: int) -> list[Any]:
        return []

    @property
    def finished(self) -> bool:
        return False

    @property
    def status(self) -> SourceStatus:
        return self._status

    def close(self) -> None:
        pass


class FakeSink:
    """Acknowledges on poll; `down` makes deliveries wait, `fail_next` makes the next n fail."""

    def __init__(self) -> None:
        self.delivered: list[bytes] = []
        self.pending: list[tuple[bytes, DeliveryCallback]] = []
        self.down = False
        self.fail_next = 0
        self.opened = 0
        self.problem_at: tuple[float, str] | None = None

    def open(self) -> None:
        self.opened += 1
        self.pending = []

    def send(self, record: Any, on_delivery: DeliveryCallback) -> None:
        self.pending.append((record[1], on_delivery))

    def send_many(self, records: list[Any], on_delivery: DeliveryCallback) -> None:
        for record in records:
            self.send(record, on_delivery)

    def poll(self, timeout: float) -> None:
        if self.down:
            self.problem_at = (time.monotonic(), "broker down")
            time.sleep(min(timeout, 0.01))
            return
        pending, self.pending = self.pending, []
        for key, callback in pending:
            if self.fail_next > 0:
                self.fail_next -= 1
                callback("delivery failed", None)
            else:
                self.delivered.append(key)
                callback(None, None)

    def flush(self, timeout: float) -> int:
        self.poll(0)
        return len(self.pending)

    def problem(self) -> tuple[float, str] | None:
        return self.problem_at

    def close(self) -> None:
        self.pending = []


def must_not_fail() -> None:
    raise SinkError("unused")
