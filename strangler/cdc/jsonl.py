"""The JSON Lines sink: one event per line, `{"topic", "key", "value"}` (key and value as Debezium's JSON, a
tombstone's value null), appended to a file or written to standard output. An event counts as acknowledged
once its line is flushed (and fsynced, with `fsync: true`)."""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Any

import orjson

from strangler.cdc.config import SinkConfig
from strangler.cdc.envelope import Record
from strangler.cdc.errors import SinkError
from strangler.cdc.ports import DeliveryCallback


def format_line(record: Record, heads: dict[str, bytes]) -> bytes:
    """One line; `heads` caches each topic's serialised beginning."""
    topic, key, value, headers = record
    head = heads.get(topic)
    if head is None:
        head = heads.setdefault(topic, b'{"topic":' + orjson.dumps(topic) + b',"key":')
    if headers:
        tail = b',"headers":' + orjson.dumps({name: data.decode() for name, data in headers}) + b"}\n"
    else:
        tail = b"}\n"
    return b"".join((head, key or b"null", b',"value":', value or b"null", tail))


class JsonlSink:
    def __init__(self, config: SinkConfig, stdout: IO[bytes] | None = None) -> None:
        self.config = config
        self._stdout = stdout
        self._file: IO[bytes] | None = None
        self._lines: list[bytes] = []
        self._callbacks: list[DeliveryCallback] = []
        self._problem: tuple[float, str] | None = None
        self._heads: dict[str, bytes] = {}

    def open(self) -> None:
        if self.config.path == "-":
            self._file = self._stdout or sys.stdout.buffer
            return
        try:
            self._file = open(self.config.path, "ab")  # noqa: SIM115 - held open for the session
        except OSError as exc:
            raise SinkError(f"cannot open {self.config.path}: {exc.strerror or exc}") from None

    def send(self, record: Record, on_delivery: DeliveryCallback) -> None:
        self.send_many([record], on_delivery)

    def send_many(self, records: list[Record], on_delivery: DeliveryCallback) -> None:
        heads = self._heads
        self._lines.extend(format_line(record, heads) for record in records)
        self._callbacks.extend([on_delivery] * len(records))
        if len(self._lines) >= 10000:
            self.poll(0)

    def poll(self, timeout: float) -> None:
        if not self._lines:
            return
        lines, callbacks = self._lines, self._callbacks
        self._lines, self._callbacks = [], []
        error: Any = None
        try:
            assert self._file is not None
            self._file.write(b"".join(lines))
            self._file.flush()
            if self.config.fsync and self.config.path != "-":
                os.fsync(self._file.fileno())
        except OSError as exc:
            error = f"cannot write {self.config.path}: {exc.strerror or exc}"
            self._problem = (time.monotonic(), error)
        for callback in callbacks:
            callback(error, None)

    def flush(self, timeout: float) -> int:
        self.poll(0)
        return 0

    def problem(self) -> tuple[float, str] | None:
        return self._problem

    def close(self) -> None:
        self.poll(0)
        if self._file is not None and self.config.path != "-":
            self._file.close()
        self._file = None
