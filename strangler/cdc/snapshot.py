"""The initial snapshot: every captured row once, as `op: r`, read inside a snapshot exported by a replication
slot so that streaming from the slot continues with no gap and no overlap.

Resumable: progress (the last acknowledged key of each table) is kept in the connector state. A resumed
snapshot reads the rest inside a newer exported snapshot (from a temporary slot at LSN L2); streamed changes
to keys read that way are dropped when they committed before L2, since the rows already include them. Keys
whose order PostgreSQL and Python agree on (integers, uuid, dates, timestamps, C-collated text) resume where
they stopped; other tables start over.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.adapt import Loader

from strangler.cdc.envelope import Envelope, Record
from strangler.cdc.errors import SourceError
from strangler.cdc.pgcatalog import TableInfo
from strangler.cdc.ports import Checkpoint
from strangler.cdc.tables import CapturedTable, render_row
from strangler.cdc.translator import SnapshotCoverage
from strangler.cdc.values import PgType


class _RawText(Loader):
    def load(self, data: Any) -> bytes:
        return bytes(data)


@dataclass(frozen=True, slots=True)
class SnapshotProgress:
    table: str
    key_text: list[str] | None  # the last key emitted, as PostgreSQL's text (the resume point)
    key: list[Any] | None  # the same key as rendered (for coverage)
    rows: int  # rows of this table emitted so far
    table_done: bool


def new_progress(tables: list[TableInfo], lsn: int) -> dict[str, Any]:
    """The state of a snapshot about to start at `lsn`."""
    return {
        "status": "running",
        "tables": [
            {"name": t.full_name, "done": False, "rows": 0, "key_text": None, "key": None, "sent": None,
             "spans": [], "lsn": lsn}
            for t in tables
        ],
    }


def resume_progress(progress: dict[str, Any], tables: dict[str, CapturedTable], lsn: int) -> None:
    """Prepare unfinished tables to be read on from a newer snapshot at `lsn` (in place).

    Reading resumes after the last acknowledged key. Keys up to the last key *sent* may already be with the
    consumer as read by the older snapshot, so their streamed changes are never dropped (the stream alone
    brings them up to date); only keys beyond it are covered by the newer snapshot."""
    for entry in progress["tables"]:
        if entry["done"]:
            continue
        table = tables.get(entry["name"])
        seen = entry.get("sent") if entry.get("sent") is not None else entry["key"]
        if seen is not None and table is not None and table.key_orderable:
            spans = entry["spans"]
            if not spans or tuple(seen) > tuple(spans[-1][0]):
                spans.append([seen, entry["lsn"]])
        elif seen is not None:
            # cannot resume inside this table: read it all again, and drop nothing of what the stream brings
            entry.update(spans=[], key=None, key_text=None, rows=0, sent=None)
            continue
        entry["lsn"] = lsn
        entry["sent"] = None


def record_sent(progress: dict[str, Any], sent: dict[str, list[Any]]) -> None:
    """Remember the last key handed to the sink per table, before the sink has it."""
    for entry in progress["tables"]:
        if entry["name"] in sent:
            entry["sent"] = sent[entry["name"]]


def acknowledge_progress(progress: dict[str, Any], done: SnapshotProgress) -> None:
    for entry in progress["tables"]:
        if entry["name"] == done.table:
            entry.update(key_text=done.key_text, key=done.key, rows=done.rows, done=done.table_done)
    if all(entry["done"] for entry in progress["tables"]):
        progress["status"] = "done"


def coverage_of(progress: dict[str, Any], table_ids: dict[str, int]) -> SnapshotCoverage:
    ranges: dict[int, list[tuple[tuple[Any, ...] | None, int]]] = {}
    for entry in progress["tables"]:
        if entry["name"] not in table_ids:
            continue
        spans = [(tuple(key), lsn) for key, lsn in entry["spans"]]
        ranges[table_ids[entry["name"]]] = [*spans, (None, entry["lsn"])]
    return SnapshotCoverage(ranges)


class SnapshotReader:
    """Reads the unfinished tables of `progress` inside an exported snapshot, yielding records and
    checkpoints; marks the first record `first` and the last `last`, as Debezium does."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        snapshot_name: str,
        lsn: int,
        tables: list[tuple[TableInfo, CapturedTable]],
        progress: dict[str, Any],
        envelope: Envelope,
        fetch_size: int,
        now_us: int,
        types: dict[int, PgType],
    ) -> None:
        self.conn = conn
        self.types = types
        self.lsn = lsn
        self.tables = tables
        self.progress = progress
        self.envelope = envelope
        self.fetch_size = fetch_size
        self.now_us = now_us
        self.rows_read = 0
        self.counts: dict[tuple[str, str], int] = {}  # (table, "r") -> rows emitted
        self.current_table: str | None = None
        self.sent: dict[str, list[Any]] = {}  # table -> the last key yielded
        conn.autocommit = False
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        try:
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_name)))
        except psycopg.Error as exc:
            raise SourceError(f"cannot import the exported snapshot {snapshot_name!r}: {exc}".strip()) from exc

    def items(self) -> Iterator[Record | Checkpoint]:
        entries = {e["name"]: e for e in self.progress["tables"]}
        todo = [(info, table) for info, table in self.tables if not entries[info.full_name]["done"]]
        last_table = next((info.full_name for info, _ in reversed(todo) if self._has_rows(info)), None)
        first = True
        for info, table in todo:
            entry = entries[info.full_name]
            self.current_table = info.full_name
            rows = entry["rows"]
            last_text, last_key = entry["key_text"], entry["key"]
            positions = [_position(info, k) for k in table.key]
            for values, final in _with_last(self._rows(info, table, last_text)):
                row = render_row(table, values)
                marker = "last" if final and info.full_name == last_table else "first" if first else "true"
                yield self._record(table, row, marker)
                first = False
                rows += 1
                self.rows_read += 1
                self.counts[(info.full_name, "r")] = self.counts.get((info.full_name, "r"), 0) + 1
                if table.key:
                    last_key = [row[k] for k in table.key]
                    last_text = [values[i].decode() for i in positions]
                    self.sent[info.full_name] = last_key
                if rows % self.fetch_size == 0:
                    yield Checkpoint(SnapshotProgress(info.full_name, last_text, last_key, rows, False))
            yield Checkpoint(SnapshotProgress(info.full_name, last_text, last_key, rows, True))
        self.conn.rollback()

    def _has_rows(self, info: TableInfo) -> bool:
        query = sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(info.schema, info.name))
        row = self.conn.execute(query).fetchone()
        return bool(row and row[0])

    def _oids(self, info: TableInfo) -> set[int]:
        oids = set()
        for column in info.columns:
            oids.add(column.type_oid)
            resolved = self.types.get(column.type_oid)
            if resolved is not None:
                oids.add(resolved.oid)  # a domain's column may be described as its base type
        return oids

    def _record(self, table: CapturedTable, row: dict[str, Any], marker: str) -> Record:
        env = self.envelope
        source = env.postgres_source(table, marker, self.now_us, None, self.lsn, f'[null,"{self.lsn}"]')
        return env.change(table, "r", None, row, source, self.now_us, env.key(table, row))

    def _rows(self, info: TableInfo, table: CapturedTable, after: list[str] | None) -> Iterator[list[Any]]:
        # the values in PostgreSQL's text output (a cast to text would differ: bool, bpchar, inet), as pgoutput
        # sends them: each column type's loader hands over the raw bytes
        columns = sql.SQL(", ").join(sql.Identifier(c.name) for c in info.columns)
        query = sql.SQL("SELECT {} FROM {}").format(columns, sql.Identifier(info.schema, info.name))
        params: list[str] = []
        if table.key_orderable:
            keys = sql.SQL(", ").join(sql.Identifier(k) for k in table.key)
            if after is not None:
                marks = sql.SQL(", ").join(sql.Placeholder() for _ in table.key)
                query += sql.SQL(" WHERE ({}) > ({})").format(keys, marks)
                params = list(after)
            query += sql.SQL(" ORDER BY {}").format(keys)
        try:
            with self.conn.cursor(name="strangler_snapshot") as cursor:
                for oid in self._oids(info):
                    cursor.adapters.register_loader(oid, _RawText)
                cursor.itersize = self.fetch_size
                cursor.execute(query, params or None)
                while batch := cursor.fetchmany(self.fetch_size):
                    yield from batch
        except psycopg.Error as exc:
            raise SourceError(f"snapshot of {info.full_name} failed: {exc}".strip()) from exc


def _with_last(rows: Iterator[list[Any]]) -> Iterator[tuple[list[Any], bool]]:
    previous = None
    for row in rows:
        if previous is not None:
            yield previous, False
        previous = row
    if previous is not None:
        yield previous, True


def _position(info: TableInfo, column: str) -> int:
    return next(i for i, c in enumerate(info.columns) if c.name == column)
