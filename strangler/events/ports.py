"""The port the mapper publishes through: a record sink with acknowledgements."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

Ack = Callable[[Exception | None], None]
Headers = Sequence[tuple[str, bytes]]


class RecordSink(Protocol):
    def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers, on_ack: Ack) -> None:
        """Send one record to `topic`. `on_ack(None)` is called once the record is durably acknowledged
        (Kafka: by all in-sync replicas), `on_ack(error)` once it never will be; exactly one call per
        record, from `send`, `poll` or `flush` on the calling thread. Blocks (serving acknowledgements)
        while the sink's buffer is full rather than failing."""
        ...

    def poll(self, timeout: float) -> None:
        """Serve acknowledgements that have arrived, waiting up to `timeout` seconds for one."""
        ...

    def flush(self, timeout: float) -> int:
        """Wait up to `timeout` seconds for every sent record's acknowledgement; the number still waiting."""
        ...

    def close(self) -> None:
        """Release the sink (after `flush`); records not acknowledged by then are not acknowledged."""
        ...
