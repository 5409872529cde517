"""pgoutput messages -> Debezium records and checkpoints: the pure heart of the PostgreSQL source.

Stateful like a protocol layer (the current transaction, the known relations) but free of I/O: the adapter
feeds it the messages' bytes and supplies `describe`, which turns a Relation message into a captured table
(or None when the table is not captured). Inserts, updates and deletes are read straight from their bytes by
each table's generated encoder (rowcodec); everything else goes through the pgoutput decoder.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from strangler.cdc.envelope import Envelope, Record, StreamTemplate
from strangler.cdc.pgoutput import Begin, Commit, Relation, Truncate, decode
from strangler.cdc.ports import Checkpoint
from strangler.cdc.rowcodec import compile_encoder
from strangler.cdc.tables import CapturedTable

Mark = tuple[int, int]  # (commit LSN of the transaction, index of the change in it): orders every change


@dataclass(frozen=True, slots=True)
class StreamPosition:
    mark: Mark
    confirm_lsn: int | None  # set at a commit: the LSN to confirm to the slot


class SnapshotCoverage:
    """Key ranges a resumed snapshot read after the slot's start: streamed changes to those keys that
    committed before the range was read are already in the snapshot and are dropped.

    `ranges[table_id]` is a list of (upper bound key or None for no bound, snapshot LSN), in key order."""

    def __init__(self, ranges: dict[int, list[tuple[tuple[Any, ...] | None, int]]]) -> None:
        self.ranges = ranges
        self.until = max((lsn for spans in ranges.values() for _, lsn in spans), default=0)

    def read_after(self, table_id: int, commit_lsn: int) -> bool:
        """Whether every part of the table was read after `commit_lsn`."""
        spans = self.ranges.get(table_id) or []
        return bool(spans) and all(commit_lsn < lsn for _, lsn in spans)

    def covers(self, table_id: int, key: tuple[Any, ...], commit_lsn: int) -> bool:
        for upper, lsn in self.ranges.get(table_id, ()):
            if upper is None or key <= upper:
                return commit_lsn < lsn
        return False


class _Codec:
    """A captured table with its generated encoder and its event counts."""

    __slots__ = ("table", "table_id", "topic", "encode", "counts")

    def __init__(self, table: CapturedTable, width: int, counts: list[int]) -> None:
        self.table = table
        self.table_id = table.table_id
        self.topic = table.topic
        self.encode = compile_encoder(table, width)
        self.counts = counts  # c, u, d, t


_OPS = ("c", "u", "d", "t")
_OP_NAMES = (b"c", b"u", b"d", b"t")
_U32 = struct.Struct(">I").unpack_from


class ChangeTranslator:
    def __init__(
        self,
        envelope: Envelope,
        describe: Callable[[Relation], CapturedTable | None],
        *,
        skipped_operations: frozenset[str] = frozenset(),
        acked_mark: Mark | None = None,
        coverage: SnapshotCoverage | None = None,
        unit_size: int = 1000,
    ) -> None:
        self.envelope = envelope
        self.describe = describe
        self.skipped = skipped_operations
        self.acked_mark = acked_mark
        self.coverage = coverage
        self.unit_size = unit_size
        self._plain_inserts = not ({"c", "u"} & skipped_operations) and coverage is None
        self._fast = False  # decided at each Begin
        self.codecs: dict[int, _Codec | None] = {}
        self.duplicates = 0  # changes re-emitted that the sink had acknowledged before a restart
        self.suppressed = 0
        self.last_commit_lsn: int | None = None
        self._counts: dict[str, list[int]] = {}
        self._templates: dict[int, StreamTemplate] = {}
        self._now_tail = b""
        self._now_us = 0
        self._final_lsn = 0
        self._commit_us = 0
        self._xid = 0
        self._index = 0
        self._since_checkpoint = 0

    @property
    def now_us(self) -> int:
        return self._now_us

    @now_us.setter
    def now_us(self, value: int) -> None:
        """The processing time stamped on the events that follow (`ts_ms`, `ts_us`)."""
        self._now_us = value
        self._now_tail = Envelope.now_tail(value)

    @property
    def counts(self) -> dict[tuple[str, str], int]:
        return {(name, op): n for name, ops in self._counts.items() for op, n in zip(_OPS, ops, strict=True) if n}

    def feed_messages(self, messages: Iterable[Any], out: list[Record | Checkpoint]) -> None:
        """`feed` for a batch of messages with `payload` and `data_start` (psycopg2's), with plain inserts (no
        skipped operations, no snapshot coverage, no duplicates to count) translated inline."""
        append = out.append
        codecs = self.codecs
        unit = self.unit_size
        for message in messages:
            data = message.payload
            kind = data[0]
            # inserts, and updates that carry no old image (the key did not change, REPLICA IDENTITY DEFAULT)
            if not (kind == 73 or (kind == 85 and data[5] == 78)) or not self._fast:
                self.feed(data, message.data_start, out)
                continue
            self._index += 1
            codec = codecs.get(_U32(data, 1)[0])
            if codec is not None:
                key, row, _ = codec.encode(data, 6)
                template = self._templates.get(codec.table_id) or self._template(codec)
                op = 0 if kind == 73 else 1
                append((codec.topic, template.key(key) if template.key_schema else key,
                        template.value(b"null", row, _OP_NAMES[op], message.data_start, self._now_tail), None))
                codec.counts[op] += 1
            self._since_checkpoint += 1
            if self._since_checkpoint >= unit:
                append(Checkpoint(StreamPosition((self._final_lsn, self._index), None), self._commit_us))
                self._since_checkpoint = 0

    def feed(self, data: bytes, lsn: int, out: list[Record | Checkpoint]) -> None:
        """Translate one pgoutput message (`lsn`: where the server says it starts) into `out`."""
        kind = data[0]
        if kind == 73 or kind == 85 or kind == 68:  # I U D: the hot path, straight from the bytes
            self._index += 1
            if self.acked_mark is not None and (self._final_lsn, self._index) <= self.acked_mark:
                self.duplicates += 1
            codec = self.codecs.get(_U32(data, 1)[0])
            if codec is not None:
                if kind == 73:
                    self._insert(codec, data, lsn, out)  # plain inserts go the inline way in feed_messages
                elif kind == 85:
                    self._update(codec, data, lsn, out)
                else:
                    self._delete(codec, data, lsn, out)
            self._since_checkpoint += 1
            if self._since_checkpoint >= self.unit_size:
                out.append(Checkpoint(StreamPosition((self._final_lsn, self._index), None), self._commit_us))
                self._since_checkpoint = 0
            return
        message = decode(data)
        if type(message) is Begin:
            self._final_lsn = message.final_lsn
            self._commit_us = message.commit_time_us
            self._xid = message.xid
            self._index = self._since_checkpoint = 0
            self._templates = {}
            if self.coverage is not None and self._final_lsn >= self.coverage.until:
                self.coverage = None  # past every resumed snapshot: nothing more to drop
                self._plain_inserts = not ({"c", "u"} & self.skipped)
            counting = self.acked_mark is not None and self._final_lsn <= self.acked_mark[0]
            self._fast = self._plain_inserts and not counting
        elif type(message) is Commit:
            out.append(Checkpoint(StreamPosition((self._final_lsn, self._index), message.end_lsn), self._commit_us))
            self.last_commit_lsn = message.commit_lsn
            self._since_checkpoint = 0
        elif type(message) is Relation:
            table = self.describe(message)
            if table is None:
                self.codecs[message.relation_id] = None
            else:
                counts = self._counts.setdefault(table.full_name, [0, 0, 0, 0])
                self.codecs[message.relation_id] = _Codec(table, len(message.columns), counts)
            self._templates.pop(message.relation_id, None)
        elif type(message) is Truncate:
            self._index += 1
            self._truncate(message, lsn, out)
            self._step(out)
        # Origin, Type and logical decoding messages carry nothing a change event needs

    def _step(self, out: list[Record | Checkpoint]) -> None:
        self._since_checkpoint += 1
        if self._since_checkpoint >= self.unit_size:
            out.append(Checkpoint(StreamPosition((self._final_lsn, self._index), None), self._commit_us))
            self._since_checkpoint = 0

    def _template(self, codec: _Codec) -> StreamTemplate:
        template = self._templates.get(codec.table.table_id)
        if template is None:
            template = self.envelope.stream_template(codec.table, self._commit_us, self._xid, self.last_commit_lsn)
            self._templates[codec.table.table_id] = template
        return template

    def _covered(self, table: CapturedTable, key: bytes | None) -> bool:
        coverage = self.coverage
        if coverage is None or key is None or self._final_lsn >= coverage.until:
            return False
        values = orjson.loads(key)
        if coverage.covers(table.table_id, tuple(values[k] for k in table.key), self._final_lsn):
            self.suppressed += 1
            return True
        return False

    # -- changes ------------------------------------------------------------------------------------

    def _insert(self, codec: _Codec, data: bytes, lsn: int, out: list[Record | Checkpoint]) -> None:
        if "c" in self.skipped:
            return
        key, row, _ = codec.encode(data, 6)
        if self.coverage is not None and self._covered(codec.table, key):
            return
        template = self._template(codec)
        out.append((codec.table.topic, template.key(key), template.value(b"null", row, b"c", lsn, self._now_tail),
                    None))
        codec.counts[0] += 1

    def _update(self, codec: _Codec, data: bytes, lsn: int, out: list[Record | Checkpoint]) -> None:
        table = codec.table
        old_key = old_row = None
        pos = 6
        if data[5] != 78:  # K (the old key) or O (the old row) before the new tuple
            old_key, old_row, pos = codec.encode(data, 6)
            pos += 1
        key, row, _ = codec.encode(data, pos)
        template = self._template(codec)
        tail = self._now_tail
        if old_key is None or old_key == key or not table.key:
            if "u" in self.skipped or (self.coverage is not None and self._covered(table, key)):
                return
            out.append((table.topic, template.key(key), template.value(old_row or b"null", row, b"u", lsn, tail),
                        None))
            codec.counts[1] += 1
            return
        # the primary key changed: delete (+ tombstone) of the old key, create of the new one, as Debezium does
        if "d" not in self.skipped and not (self.coverage is not None and self._covered(table, old_key)):
            value = template.value(old_row or b"null", b"null", b"d", lsn, tail)
            out.append((table.topic, template.key(old_key), value, [("__debezium.newkey", key or b"null")]))
            if self.envelope.tombstones:
                out.append((table.topic, template.key(old_key), None, None))
            codec.counts[2] += 1
        if "c" not in self.skipped and not (self.coverage is not None and self._covered(table, key)):
            out.append((table.topic, template.key(key), template.value(b"null", row, b"c", lsn, tail),
                        [("__debezium.oldkey", old_key)]))
            codec.counts[0] += 1

    def _delete(self, codec: _Codec, data: bytes, lsn: int, out: list[Record | Checkpoint]) -> None:
        if "d" in self.skipped:
            return
        key, row, _ = codec.encode(data, 6)
        if self.coverage is not None and self._covered(codec.table, key):
            return
        template = self._template(codec)
        key = template.key(key)
        out.append((codec.table.topic, key, template.value(row, b"null", b"d", lsn, self._now_tail), None))
        if self.envelope.tombstones:
            out.append((codec.table.topic, key, None, None))
        codec.counts[2] += 1

    def _truncate(self, message: Truncate, lsn: int, out: list[Record | Checkpoint]) -> None:
        if "t" in self.skipped:
            return
        for relation_id in message.relation_ids:
            codec = self.codecs.get(relation_id)
            if codec is None:
                continue
            if self.coverage is not None and self.coverage.read_after(codec.table.table_id, self._final_lsn):
                continue  # every row of the table was read after this truncate
            value = self._template(codec).value(b"null", b"null", b"t", lsn, self._now_tail)
            out.append((codec.table.topic, None, value, None))
            codec.counts[3] += 1
