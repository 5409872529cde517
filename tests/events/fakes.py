"""A fake `RecordSink`: keeps what it was sent; acknowledges on `poll`/`flush`, or fails chosen records."""

from __future__ import annotations

from dataclasses import dataclass, field

from strangler.events.errors import SinkUnavailable
from strangler.events.ports import Ack, Headers


@dataclass
class SentRecord:
    topic: str
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]


@dataclass
class FakeSink:
    fail_topics: set[str] = field(default_factory=set)
    fail_keys: set[bytes] = field(default_factory=set)
    hold: bool = False  # keep acknowledgements back until released
    sent: list[SentRecord] = field(default_factory=list)
    waiting: list[tuple[SentRecord, Ack]] = field(default_factory=list)
    closed: bool = False

    def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers, on_ack: Ack) -> None:
        record = SentRecord(topic, key, value, dict(headers))
        self.sent.append(record)
        self.waiting.append((record, on_ack))

    def poll(self, timeout: float) -> None:
        if self.hold:
            return
        waiting, self.waiting = self.waiting, []
        for record, ack in waiting:
            refused = record.topic in self.fail_topics or record.key in self.fail_keys
            ack(SinkUnavailable(f"{record.topic}: refused") if refused else None)

    def flush(self, timeout: float) -> int:
        self.poll(timeout)
        return len(self.waiting)

    def close(self) -> None:
        self.closed = True
