"""Record sinks: Kafka (idempotent producer, acks=all, delivery callbacks) and a JSON-lines file."""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Mapping
from typing import Any, BinaryIO

import orjson

from strangler.events.errors import SinkUnavailable
from strangler.events.ports import Ack, Headers

# Settings the mapper's guarantees depend on; the configuration refuses weaker ones.
SAFE_PRODUCER = {"enable.idempotence": True, "acks": "all", "max.in.flight.requests.per.connection": 5}
# Overridable: larger, compressed batches cost the producer and the broker less per event (as the CDC sink's).
DEFAULTS = {"linger.ms": 5, "batch.num.messages": 10000, "compression.type": "lz4"}


class KafkaRecordSink:
    def __init__(self, bootstrap_servers: str, settings: Mapping[str, Any] | None = None) -> None:
        from confluent_kafka import Producer

        self._errors: list[str] = []
        self._producer: Any = Producer({
            "bootstrap.servers": bootstrap_servers, **DEFAULTS,
            **(settings or {}), **SAFE_PRODUCER, "error_cb": self._on_error,
        })

    def _on_error(self, error: Any) -> None:
        if error.fatal():  # an idempotent producer that lost its guarantee: nothing more may be sent
            self._errors.append(str(error))

    def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers, on_ack: Ack) -> None:
        if self._errors:
            raise SinkUnavailable(f"the Kafka producer failed: {self._errors[0]}")

        def delivered(error: Any, message: Any) -> None:
            on_ack(None if error is None else SinkUnavailable(f"{topic}: {error}"))

        while True:
            try:
                self._producer.produce(topic, value, key, headers=headers if type(headers) is list else list(headers),
                                       on_delivery=delivered)
                return
            except BufferError:  # the local queue is full: serve acknowledgements, then try again
                self._producer.poll(0.05)

    def poll(self, timeout: float) -> None:
        self._producer.poll(timeout)

    def flush(self, timeout: float) -> int:
        return int(self._producer.flush(timeout))

    def close(self) -> None:
        self._producer.flush(0)
        self._producer = _Closed()  # the client's threads and connections go with the last reference


class _Closed:
    def __getattr__(self, name: str) -> Any:
        raise SinkUnavailable("the Kafka sink is closed")


class JsonlRecordSink:
    """Appends `{"topic", "key", "value", "headers"}` lines (key and value as text when they are UTF-8, else
    base64 under `key_b64`/`value_b64`); a record is acknowledged once written and flushed (and fsync'd
    with `fsync`)."""

    def __init__(self, path: str, *, fsync: bool = False) -> None:
        self.path = path
        self._fsync = fsync
        self._lock = threading.Lock()
        self._file: BinaryIO = open(path, "ab")
        self._pending: list[Ack] = []

    def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers, on_ack: Ack) -> None:
        line: dict[str, Any] = {"topic": topic, "headers": {k: v.decode("utf-8", "replace") for k, v in headers}}
        for name, data in (("key", key), ("value", value)):
            try:
                line[name] = data.decode("utf-8") if data is not None else None
            except UnicodeDecodeError:
                line[name + "_b64"] = base64.b64encode(data or b"").decode()
        with self._lock:
            self._file.write(orjson.dumps(line) + b"\n")
            self._pending.append(on_ack)

    def poll(self, timeout: float) -> None:
        self.flush(timeout)

    def flush(self, timeout: float) -> int:
        with self._lock:
            pending, self._pending = self._pending, []
            error: Exception | None = None
            try:
                self._file.flush()
                if self._fsync:
                    os.fsync(self._file.fileno())
            except OSError as exc:
                error = SinkUnavailable(f"{self.path}: {exc}")
        for ack in pending:
            ack(error)
        return 0

    def close(self) -> None:
        self.flush(0)
        self._file.close()
