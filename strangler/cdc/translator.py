"""pgoutput messages -> Debezium records and checkpoints: the pure heart of the PostgreSQL source.

Stateful like a protocol layer (the current transaction, the known relations) but free of I/O: the adapter
feeds it decoded messages and supplies `describe`, which turns a Relation message into a captured table
(or None when the table is not captured).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from strangler.cdc.envelope import Envelope, Record
from strangler.cdc.pgoutput import Begin, Commit, Delete, Insert, Message, Relation, Truncate, Update
from strangler.cdc.ports import Checkpoint
from strangler.cdc.tables import CapturedTable, render_row

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

    def covers(self, table_id: int, key: tuple[Any, ...], commit_lsn: int) -> bool:
        for upper, lsn in self.ranges.get(table_id, ()):
            if upper is None or key <= upper:
                return commit_lsn < lsn
        return False


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
        self.tables: dict[int, CapturedTable | None] = {}
        self.now_us = 0
        self.duplicates = 0  # changes re-emitted that the sink had acknowledged before a restart
        self.suppressed = 0
        self.counts: dict[tuple[str, str], int] = {}
        self.last_commit_lsn: int | None = None
        self._final_lsn = 0
        self._commit_us = 0
        self._xid = 0
        self._index = 0
        self._since_checkpoint = 0

    def feed(self, message: Message, lsn: int, out: list[Record | Checkpoint]) -> None:
        """Translate one message (`lsn`: where the server says it starts) into `out`."""
        kind = type(message)
        if kind is Insert or kind is Update or kind is Delete or kind is Truncate:
            self._index += 1
            if self.acked_mark is not None and (self._final_lsn, self._index) <= self.acked_mark:
                self.duplicates += 1
            table = self.tables.get(message.relation_id) if kind is not Truncate else None  # type: ignore[union-attr]
            if kind is Insert:
                if table is not None:
                    self._insert(table, message, lsn, out)  # type: ignore[arg-type]
            elif kind is Update:
                if table is not None:
                    self._update(table, message, lsn, out)  # type: ignore[arg-type]
            elif kind is Delete:
                if table is not None:
                    self._delete(table, message, lsn, out)  # type: ignore[arg-type]
            else:
                self._truncate(message, lsn, out)  # type: ignore[arg-type]
            self._since_checkpoint += 1
            if self._since_checkpoint >= self.unit_size:
                out.append(Checkpoint(StreamPosition((self._final_lsn, self._index), None), self._commit_us))
                self._since_checkpoint = 0
        elif kind is Begin:
            self._final_lsn = message.final_lsn  # type: ignore[union-attr]
            self._commit_us = message.commit_time_us  # type: ignore[union-attr]
            self._xid = message.xid  # type: ignore[union-attr]
            self._index = 0
            self._since_checkpoint = 0
        elif kind is Commit:
            out.append(Checkpoint(StreamPosition((self._final_lsn, self._index), message.end_lsn),  # type: ignore[union-attr]
                                  self._commit_us))
            self.last_commit_lsn = message.commit_lsn  # type: ignore[union-attr]
            self._since_checkpoint = 0
        elif kind is Relation:
            self.tables[message.relation_id] = self.describe(message)  # type: ignore[union-attr,arg-type]
        # Origin, Type and logical decoding messages carry nothing a change event needs

    # -- changes ------------------------------------------------------------------------------------

    def _source(self, table: CapturedTable, lsn: int) -> dict[str, Any]:
        last = "null" if self.last_commit_lsn is None else f'"{self.last_commit_lsn}"'
        return self.envelope.postgres_source(table, "false", self._commit_us, self._xid, lsn, f'[{last},"{lsn}"]')

    def _count(self, table: CapturedTable, op: str, n: int = 1) -> None:
        key = (table.full_name, op)
        self.counts[key] = self.counts.get(key, 0) + n

    def _covered(self, table: CapturedTable, row: dict[str, Any]) -> bool:
        coverage = self.coverage
        if coverage is None or self._final_lsn >= coverage.until or not table.key:
            return False
        if coverage.covers(table.table_id, tuple(row[k] for k in table.key), self._final_lsn):
            self.suppressed += 1
            return True
        return False

    def _insert(self, table: CapturedTable, message: Insert, lsn: int, out: list[Record | Checkpoint]) -> None:
        if "c" in self.skipped:
            return
        after = render_row(table, message.new)
        if self.coverage is not None and self._covered(table, after):
            return
        env = self.envelope
        out.append(env.change(table, "c", None, after, self._source(table, lsn), self.now_us, env.key(table, after)))
        self._count(table, "c")

    def _update(self, table: CapturedTable, message: Update, lsn: int, out: list[Record | Checkpoint]) -> None:
        after = render_row(table, message.new)
        # FULL identity sends the whole old row; DEFAULT sends the old key only when it changed
        old = render_row(table, message.old) if message.old is not None else None
        records = self.envelope.update(table, old, after, old, self._source(table, lsn), self.now_us)
        if len(records) == 1:
            if "u" in self.skipped or (self.coverage is not None and self._covered(table, after)):
                return
            out.append(records[0])
            self._count(table, "u")
            return
        # a key change: delete (+ tombstone) of the old key, create of the new one
        if "d" not in self.skipped and not (self.coverage is not None and self._covered(table, old or {})):
            out.extend(records[:-1])
            self._count(table, "d")
        if "c" not in self.skipped and not (self.coverage is not None and self._covered(table, after)):
            out.append(records[-1])
            self._count(table, "c")

    def _delete(self, table: CapturedTable, message: Delete, lsn: int, out: list[Record | Checkpoint]) -> None:
        if "d" in self.skipped:
            return
        before = render_row(table, message.old)
        if self.coverage is not None and self._covered(table, before):
            return
        out.extend(self.envelope.deletion(table, before, self._source(table, lsn), self.now_us))
        self._count(table, "d")

    def _truncate(self, message: Truncate, lsn: int, out: list[Record | Checkpoint]) -> None:
        if "t" in self.skipped:
            return
        for relation_id in message.relation_ids:
            table = self.tables.get(relation_id)
            if table is None:
                continue
            out.append(self.envelope.change(table, "t", None, None, self._source(table, lsn), self.now_us, None))
            self._count(table, "t")
