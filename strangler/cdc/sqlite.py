"""The embedded SQLite source: triggers on the captured tables write every change into a changelog table in
the same transaction; the connector reads the changelog in id order and emits the same envelope as for
PostgreSQL (`source.connector: "sqlite"`). The position is the changelog id, kept in an offsets table; rows
every connector has confirmed are pruned.

`install` creates the changelog and the triggers; with snapshot `initial`, it also copies the existing rows
into the changelog as `op: r` in the same transaction, so the snapshot and the stream meet exactly.
"""

from __future__ import annotations

import base64
import sqlite3
import time
from typing import Any

import orjson

from strangler.cdc.config import SourceConfig
from strangler.cdc.envelope import Envelope, Record
from strangler.cdc.errors import SourceError, SourceMisconfigured
from strangler.cdc.ports import Checkpoint, SourceStatus
from strangler.cdc.state import StateFile
from strangler.cdc.tables import CapturedColumn, CapturedTable, CaptureRules
from strangler.cdc.values import Renderer

_NOW_US = "CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)"
_VERSION = 1


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _json_value(ref: str) -> str:
    # json_object() cannot hold a BLOB: carry it as {"$hex": ...}; text is quoted so it is never read as JSON
    return (f"json(CASE typeof({ref}) WHEN 'blob' THEN json_object('$hex', hex({ref})) "
            f"WHEN 'text' THEN json_quote({ref}) WHEN 'null' THEN 'null' ELSE {ref} END)")


def _row_json(columns: list[str], alias: str) -> str:
    return "json_object(" + ", ".join(f"'{c.replace(chr(39), chr(39) * 2)}', {_json_value(f'{alias}.{_q(c)}')}"
                                      for c in columns) + ")"


def table_columns(conn: sqlite3.Connection, table: str) -> list[tuple[str, str, bool, int]]:
    """(name, declared type, not null, position in the primary key or 0) per column."""
    return [(r[1], r[2] or "", bool(r[3]), r[5]) for r in conn.execute(f"PRAGMA table_info({_q(table)})")]


def captured_tables(conn: sqlite3.Connection, rules: CaptureRules, changelog: str) -> list[str]:
    names = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
        "AND name NOT LIKE '\\_strangler\\_%' ESCAPE '\\' ORDER BY name")]
    return [n for n in names if n != changelog and rules.captures("main", n)]


def install(conn: sqlite3.Connection, config: SourceConfig, rules: CaptureRules, *, remove: bool = False) -> list[str]:
    """Create (or with `remove`, drop) the changelog, offsets and triggers; returns the tables concerned."""
    changelog = _q(config.changelog_table)
    conn.execute("BEGIN IMMEDIATE")
    try:
        tables = captured_tables(conn, rules, config.changelog_table)
        existing = conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE "
                                "'\\_strangler\\_cdc\\_%' ESCAPE '\\'").fetchall()
        for (trigger,) in existing:
            conn.execute(f"DROP TRIGGER {_q(trigger)}")
        if remove:
            conn.execute(f"DROP TABLE IF EXISTS {changelog}")
            conn.execute("DROP TABLE IF EXISTS _strangler_capture")
            conn.execute("DROP TABLE IF EXISTS _strangler_offsets")
            conn.execute("COMMIT")
            return tables
        fresh = conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (config.changelog_table,)).fetchone() is None
        conn.execute(f"CREATE TABLE IF NOT EXISTS {changelog} (id INTEGER PRIMARY KEY AUTOINCREMENT, tbl TEXT NOT "
                     "NULL, op TEXT NOT NULL, before TEXT, after TEXT, ts_us INTEGER NOT NULL, snap TEXT)")
        conn.execute("CREATE TABLE IF NOT EXISTS _strangler_offsets (connector TEXT PRIMARY KEY, position INTEGER)")
        conn.execute("CREATE TABLE IF NOT EXISTS _strangler_capture (tbl TEXT PRIMARY KEY, columns TEXT, version INT)")
        conn.execute("DELETE FROM _strangler_capture")
        for table in tables:
            columns = [c[0] for c in table_columns(conn, table)]
            new, old = _row_json(columns, "NEW"), _row_json(columns, "OLD")
            name = table.replace("'", "''")
            for suffix, event, op, before, after in (("ai", "INSERT", "c", "NULL", new),
                                                     ("au", "UPDATE", "u", old, new),
                                                     ("ad", "DELETE", "d", old, "NULL")):
                conn.execute(
                    f"CREATE TRIGGER {_q(f'_strangler_cdc_{table}_{suffix}')} AFTER {event} ON {_q(table)} BEGIN "
                    f"INSERT INTO {changelog} (tbl, op, before, after, ts_us) "
                    f"VALUES ('{name}', '{op}', {before}, {after}, {_NOW_US}); END")
            conn.execute("INSERT INTO _strangler_capture VALUES (?, ?, ?)", (table, orjson.dumps(columns).decode(),
                                                                             _VERSION))
            if fresh and config.snapshot == "initial":
                conn.execute(f"INSERT INTO {changelog} (tbl, op, before, after, ts_us, snap) SELECT '{name}', 'r', "
                             f"NULL, {_row_json(columns, 'T')}, {_NOW_US}, 'true' FROM {_q(table)} AS T")
        if fresh and config.snapshot == "initial":
            conn.execute(f"UPDATE {changelog} SET snap = 'first' WHERE id = (SELECT min(id) FROM {changelog})")
            conn.execute(f"UPDATE {changelog} SET snap = 'last' WHERE id = (SELECT max(id) FROM {changelog})")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return tables


def open_database(path: str) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 30000")
        return conn
    except sqlite3.Error as exc:
        raise SourceError(f"cannot open the SQLite database {path}: {exc}") from exc


def _blob(value: Any) -> Any:
    if isinstance(value, dict) and len(value) == 1 and "$hex" in value:
        return base64.b64encode(bytes.fromhex(value["$hex"])).decode()
    return value


def _schema(declared: str) -> dict[str, Any]:
    kind = declared.upper()
    if "INT" in kind:
        return {"type": "int64"}
    if any(word in kind for word in ("REAL", "FLOA", "DOUB")):
        return {"type": "double"}
    if "BLOB" in kind:
        return {"type": "bytes"}
    return {"type": "string"}


class SqliteSource:
    def __init__(self, config: SourceConfig, *, name: str, connector: str, schemas: bool, state: StateFile) -> None:
        self.config = config
        self.name = name
        self.connector = connector
        self.state_store = state
        self.rules = CaptureRules(name, config.table_include, config.table_exclude, config.column_exclude)
        self.envelope = Envelope(name=name, connector="sqlite", db=str(config.path), schemas=schemas,
                                 tombstones=config.tombstones_on_delete)
        self._conn: sqlite3.Connection | None = None
        self._tables: dict[str, CapturedTable] = {}
        self._position = 0
        self._acked = 0
        self._confirmed = 0
        self._acked_before = 0  # acknowledged before this session started (for counting duplicates)
        self._status = SourceStatus()
        self._last_save = 0.0

    def start(self) -> None:
        self._conn = conn = open_database(str(self.config.path))
        try:
            installed = {r[0]: orjson.loads(r[1]) for r in conn.execute("SELECT tbl, columns FROM _strangler_capture")}
        except sqlite3.OperationalError:
            installed = None
        try:
            tables = captured_tables(conn, self.rules, self.config.changelog_table)
            current = {t: [c[0] for c in table_columns(conn, t)] for t in tables}
            if installed != current:
                if not self.config.install_triggers:
                    raise SourceMisconfigured(f"the change triggers on {self.config.path} are missing or out of date: "
                                              f"run `strangler cdc install -c FILE {self.connector}`")
                install(conn, self.config, self.rules)
            for table in tables:
                self._tables[table] = self._capture(conn, table)
            row = conn.execute("SELECT position FROM _strangler_offsets WHERE connector = ?",
                               (self.connector,)).fetchone()
        except sqlite3.Error as exc:
            raise SourceError(f"cannot prepare the SQLite source {self.config.path}: {exc}") from exc
        self._position = self._acked = self._confirmed = int(row[0]) if row else 0
        self._acked_before = int(self.state_store.load().get("acked_mark") or 0)
        self._status.phase = "streaming"
        self._status.confirmed = str(self._confirmed)

    def _capture(self, conn: sqlite3.Connection, table: str) -> CapturedTable:
        columns = [c for c in table_columns(conn, table) if not self.rules.excludes_column("main", table, c[0])]
        captured = tuple(CapturedColumn(name, i, declared or "", Renderer(_blob, _schema(declared)), not notnull)
                         for i, (name, declared, notnull, _) in enumerate(columns))
        key = tuple(name for name, _, _, pk in sorted(columns, key=lambda c: c[3]) if pk)
        return CapturedTable(0, "main", table, f"{self.name}.main.{table}", captured, key)

    def _row(self, table: CapturedTable, data: str | None) -> dict[str, Any] | None:
        if data is None:
            return None
        values = orjson.loads(data)
        return {c.name: _blob(values.get(c.name)) for c in table.columns}

    def read(self, max_items: int, timeout: float) -> list[Record | Checkpoint]:
        assert self._conn is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                rows = self._conn.execute(
                    f"SELECT id, tbl, op, before, after, ts_us, snap FROM {_q(self.config.changelog_table)} "
                    "WHERE id > ? ORDER BY id LIMIT ?", (self._position, max_items)).fetchall()
            except sqlite3.Error as exc:
                raise SourceError(f"cannot read the changelog: {exc}") from exc
            if rows or time.monotonic() >= deadline:
                break
            time.sleep(min(self.config.poll_interval, max(0.0, deadline - time.monotonic())))
        out: list[Record | Checkpoint] = []
        now_us = time.time_ns() // 1000
        env, skipped, counts = self.envelope, set(self.config.skipped_operations), self._status.counts
        for change_id, name, op, before_json, after_json, ts_us, snap in rows:
            table = self._tables.get(name)
            if change_id <= self._acked_before:
                self._status.duplicates += 1
            if table is None or op in skipped:
                continue
            source = env.sqlite_source(table, snap or "false", ts_us, change_id)
            before, after = self._row(table, before_json), self._row(table, after_json)
            if op in ("c", "r"):
                out.append(env.change(table, op, None, after, source, now_us, env.key(table, after or {})))
            elif op == "u":
                out.extend(env.update(table, before, after or {}, before, source, now_us))
            else:
                out.extend(env.deletion(table, before or {}, source, now_us))
            counts[(table.full_name, op)] = counts.get((table.full_name, op), 0) + 1
        if rows:
            self._position = rows[-1][0]
            out.append(Checkpoint(self._position, rows[-1][5]))
        return out

    def acknowledge(self, checkpoint: Checkpoint) -> None:
        self._acked = max(self._acked, int(checkpoint.position))
        if time.monotonic() - self._last_save >= 0.02:
            self._save(durable=False)

    def _save(self, durable: bool = True) -> None:
        self.state_store.save({"acked_mark": max(self._acked, self._acked_before)}, durable)
        self._last_save = time.monotonic()

    def confirm(self) -> None:
        if self._acked <= self._confirmed or self._conn is None:
            return
        self._save()
        changelog = _q(self.config.changelog_table)
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute("INSERT INTO _strangler_offsets VALUES (?, ?) ON CONFLICT (connector) DO UPDATE "
                               "SET position = excluded.position", (self.connector, self._acked))
            self._conn.execute(f"DELETE FROM {changelog} WHERE id <= (SELECT min(position) FROM _strangler_offsets)")
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise SourceError(f"cannot record the position in {self.config.path}: {exc}") from exc
        self._confirmed = self._acked
        self._status.confirmed = str(self._confirmed)

    def heartbeat(self, now_us: int) -> list[Record | Checkpoint]:
        return []

    @property
    def finished(self) -> bool:
        return False

    @property
    def status(self) -> SourceStatus:
        return self._status

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
