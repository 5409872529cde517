"""The PostgreSQL source: a logical replication slot read with pgoutput through psycopg2's replication
protocol, after an optional consistent snapshot.

The slot's confirmed flush LSN is the durable position: it is advanced (`confirm`) only to the end of
transactions whose every event the sink acknowledged, so a restart re-reads at most the unacknowledged tail.
"""

from __future__ import annotations

import logging
import select
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import psycopg2
import psycopg2.extras

from strangler.cdc.config import SourceConfig
from strangler.cdc.envelope import Envelope, Record
from strangler.cdc.errors import SlotLost, SourceError, SourceMisconfigured
from strangler.cdc.pgcatalog import (
    SESSION_OPTIONS,
    TableInfo,
    captured_tables,
    check_server,
    connect,
    describe_table,
    ensure_publication,
    format_lsn,
    load_types,
    parse_lsn,
    server_lag_bytes,
    slot_info,
)
from strangler.cdc.pgoutput import Relation
from strangler.cdc.ports import Checkpoint, SourceStatus
from strangler.cdc.snapshot import (
    SnapshotProgress,
    SnapshotReader,
    acknowledge_progress,
    coverage_of,
    new_progress,
    record_sent,
    resume_progress,
)
from strangler.cdc.state import StateFile
from strangler.cdc.tables import CapturedTable, CaptureRules, ColumnFacts, capture_table
from strangler.cdc.translator import ChangeTranslator, StreamPosition
from strangler.cdc.values import PgType

log = logging.getLogger("strangler.cdc")
_MARK_SAVE_INTERVAL = 0.1  # seconds between saves of the acknowledged mark (it only counts duplicates)


def plan_start(mode: str, slot_exists: bool, state: dict[str, Any]) -> str:
    """What a start does, from the snapshot mode, the slot and the local state (pure; see README)."""
    snapshot = state.get("snapshot")
    ever_read = bool(state.get("streaming") or snapshot)
    if mode == "initial_only":
        if snapshot and snapshot["status"] == "done":
            return "done"
        return "resume_snapshot_only" if snapshot else "snapshot_only"
    if not slot_exists:
        if ever_read and mode != "when_needed":
            raise SlotLost(
                "the replication slot is gone but this connector read from it before: changes since then may be "
                "lost. Use snapshot: when_needed to take a new snapshot, or remove the connector state to start over"
            )
        return "create_slot" if mode == "never" else "create_slot_with_snapshot"
    if mode == "never" or (snapshot and snapshot["status"] == "done") or state.get("streaming"):
        return "stream"
    if snapshot:
        return "resume_snapshot"
    return "snapshot_then_stream"


class PostgresSource:
    def __init__(self, config: SourceConfig, *, name: str, schemas: bool, state: StateFile) -> None:
        self.config = config
        self.name = name
        self.schemas = schemas
        self.state_store = state
        self.rules = CaptureRules(name, config.table_include, config.table_exclude, config.column_exclude,
                                  config.decimal_handling_mode)
        self._status = SourceStatus()
        self._state: dict[str, Any] = {}
        self._catalog: psycopg.Connection[Any] | None = None
        self._replication: Any = None
        self._cursor: Any = None
        self._snapshot_conn: psycopg.Connection[Any] | None = None
        self._snapshot: Iterator[Record | Checkpoint] | None = None
        self._reader: SnapshotReader | None = None
        self._translator: ChangeTranslator | None = None
        self._types: dict[int, PgType] = {}
        self._confirmable = 0
        self._confirmed = 0
        self._last_save = 0.0
        self._last_feedback = time.monotonic()
        self._finished = False
        self._stream_after_snapshot = True

    # -- start ----------------------------------------------------------------------------------------

    def start(self) -> None:
        cfg = self.config
        self._catalog = catalog = connect(str(cfg.dsn))
        try:
            db = check_server(catalog)
            self.envelope = Envelope(name=self.name, connector="postgresql", db=db,
                                     tombstones=cfg.tombstones_on_delete, schemas=self.schemas)
            infos = captured_tables(catalog, self.rules)
            self._types = load_types(catalog, {c.type_oid for info in infos for c in info.columns})
            captured = [(info, self._capture(info)) for info in infos]  # UnmappableColumn stops the start here
            self._state = self.state_store.load()
            slot = slot_info(catalog, cfg.slot)
            if slot is not None and (slot.plugin != "pgoutput" or slot.database != db):
                raise SourceMisconfigured(f"slot {cfg.slot!r} exists for plugin {slot.plugin!r} on database "
                                          f"{slot.database!r}; expected pgoutput on {db!r}")
            if slot is not None and slot.active:
                raise SourceError(f"slot {cfg.slot!r} is in use by another connection (one connector per slot)")
            plan = plan_start(cfg.snapshot, slot is not None, self._state)
            if cfg.snapshot != "initial_only":
                ensure_publication(catalog, cfg.publication, infos, cfg.publication_autocreate)
        except psycopg.Error as exc:
            raise SourceError(f"cannot read the source's catalog: {exc}".strip()) from exc
        log.info("cdc %s: %s (slot %s, %d tables)", self.name, plan.replace("_", " "), cfg.slot, len(infos))
        self._status.snapshot_total = sum(info.estimated_rows for info, _ in captured)
        if plan == "done":
            self._finished = True
            self._status.phase = "done"
            return
        if plan == "create_slot":
            self._create_slot(export=False)
            self._state = {"streaming": True}
            self._save()
            self._start_streaming()
            return
        if plan == "stream":
            self._start_streaming()
            return
        self._stream_after_snapshot = plan not in ("snapshot_only", "resume_snapshot_only")
        self._begin_snapshot(plan, captured)

    def _capture(self, info: TableInfo) -> CapturedTable:
        return capture_table(info.oid, info.schema, info.name, info.columns, info.primary_key, self._types,
                             self.rules, info.replica_identity, info.c_ordered)

    def _begin_snapshot(self, plan: str, captured: list[tuple[TableInfo, CapturedTable]]) -> None:
        if plan == "create_slot_with_snapshot":
            lsn, snapshot_name, exporter = self._create_slot(export=True)
            self._state = {"snapshot": new_progress([info for info, _ in captured], lsn)}
        else:  # a snapshot beside an existing slot, or the rest of an interrupted one: a newer exported snapshot
            lsn, snapshot_name, exporter = self._create_slot(export=True, temporary=True)
            progress = self._state.get("snapshot")
            if progress is None:
                progress = new_progress([info for info, _ in captured], lsn)
            else:
                resume_progress(progress, {info.full_name: table for info, table in captured}, lsn)
            self._state["snapshot"] = progress
        self._save()
        self._snapshot_conn = connect(str(self.config.dsn))
        try:
            self._reader = SnapshotReader(self._snapshot_conn, snapshot_name, lsn, captured, self._state["snapshot"],
                                          self.envelope, self.config.snapshot_fetch_size, time.time_ns() // 1000,
                                          self._types)
        finally:
            exporter.close()  # the snapshot is imported; a temporary slot goes with its connection
        self._snapshot = self._reader.items()
        self._status.phase = "snapshot"
        self._status.snapshot_rows = sum(e["rows"] for e in self._state["snapshot"]["tables"])

    def _create_slot(self, *, export: bool, temporary: bool = False) -> tuple[int, str, Any]:
        conn = self._replication_connection()
        slot = f"{self.config.slot}_snap_{int(time.time())}" if temporary else self.config.slot
        words = ["CREATE_REPLICATION_SLOT", f'"{slot}"', "TEMPORARY" if temporary else "", "LOGICAL", "pgoutput",
                 "EXPORT_SNAPSHOT" if export else "NOEXPORT_SNAPSHOT"]
        try:
            cursor = conn.cursor()
            cursor.execute(" ".join(w for w in words if w))
            row = cursor.fetchone()
        except psycopg2.Error as exc:
            conn.close()
            raise SourceError(f"cannot create replication slot {slot!r}: {exc}".strip()) from exc
        if not export:
            conn.close()
        return parse_lsn(row[1]), row[2] or "", conn

    def _replication_connection(self) -> Any:
        try:
            return psycopg2.connect(str(self.config.dsn), options=SESSION_OPTIONS, connect_timeout=10,
                                    connection_factory=psycopg2.extras.LogicalReplicationConnection)
        except psycopg2.Error as exc:
            raise SourceError(f"cannot open a replication connection: {exc}".strip()) from exc

    def _start_streaming(self) -> None:
        if not self._stream_after_snapshot:
            self._finished = True
            self._status.phase = "done"
            return
        cfg = self.config
        progress = self._state.get("snapshot")
        coverage = None
        if progress is not None:
            tables = {f"{t.schema}.{t.name}": t.oid for t in captured_tables(self._catalog_conn(), self.rules)}
            coverage = coverage_of(progress, tables)
        mark = self._state.get("acked_mark")
        self._translator = ChangeTranslator(
            self.envelope, self._describe, skipped_operations=frozenset(cfg.skipped_operations),
            acked_mark=(int(mark[0]), int(mark[1])) if mark else None, coverage=coverage,
        )
        self._replication = self._replication_connection()
        self._cursor = self._replication.cursor()
        try:
            self._cursor.start_replication(
                slot_name=cfg.slot, decode=False, status_interval=cfg.status_interval,
                options={"proto_version": "1", "publication_names": cfg.publication},
            )
        except psycopg2.Error as exc:
            raise SourceError(f"cannot start replication from slot {cfg.slot!r}: {exc}".strip()) from exc
        slot = slot_info(self._catalog_conn(), cfg.slot)
        self._confirmed = self._confirmable = slot.confirmed_flush if slot else 0
        self._status.confirmed = format_lsn(self._confirmed)
        self._status.phase = "streaming"
        if not self._state.get("streaming"):
            self._state["streaming"] = True
            self._save()

    def _catalog_conn(self) -> psycopg.Connection[Any]:
        if self._catalog is None or self._catalog.closed:
            self._catalog = connect(str(self.config.dsn))
        return self._catalog

    def _describe(self, relation: Relation) -> CapturedTable | None:
        if not self.rules.captures(relation.namespace, relation.name):
            return None
        conn = self._catalog_conn()
        try:
            info: TableInfo | None = describe_table(conn, relation.relation_id)
        except SourceError:
            info = None  # dropped since: the message is all we know
        optional = {c.name: c.optional for c in info.columns} if info else {}
        columns = [ColumnFacts(c.name, c.type_oid, c.type_modifier, optional.get(c.name, True))
                   for c in relation.columns]
        missing = {c.type_oid for c in columns} - set(self._types)
        if missing:
            self._types.update(load_types(conn, missing))
        if info is not None:
            key, c_ordered = info.primary_key, info.c_ordered
        else:
            key = tuple(c.name for c in relation.columns if c.part_of_identity) if relation.replica_identity == "d" \
                else ()
            c_ordered = frozenset()
        return capture_table(relation.relation_id, relation.namespace, relation.name, columns, key, self._types,
                             self.rules, relation.replica_identity, c_ordered)

    # -- reading --------------------------------------------------------------------------------------

    def read(self, max_items: int, timeout: float) -> list[Record | Checkpoint]:
        if self._snapshot is not None:
            return self._read_snapshot(max_items)
        if self._finished:
            time.sleep(min(timeout, 0.1))
            return []
        out: list[Record | Checkpoint] = []
        cursor, translator = self._cursor, self._translator
        assert translator is not None
        translator.now_us = time.time_ns() // 1000
        read_message = cursor.read_message
        messages: list[Any] = []
        deadline = 0.0
        try:
            while len(messages) < max_items:
                message = read_message()
                if message is None:
                    if messages:
                        break
                    now = time.monotonic()
                    if not deadline:
                        deadline = now + timeout
                    elif now >= deadline:
                        break
                    select.select([self._replication], [], [], deadline - now)
                    translator.now_us = time.time_ns() // 1000
                    continue
                messages.append(message)
        except psycopg2.Error as exc:
            raise SourceError(f"the replication stream failed: {exc}".strip()) from exc
        translator.feed_messages(messages, out)
        return out

    def _read_snapshot(self, max_items: int) -> list[Record | Checkpoint]:
        assert self._snapshot is not None and self._reader is not None
        out: list[Record | Checkpoint] = []
        for item in self._snapshot:
            out.append(item)
            if len(out) >= max_items:
                break
        else:
            self._snapshot = None
            if self._snapshot_conn is not None:
                self._snapshot_conn.close()
            self._start_streaming()
        if self._reader.sent:
            record_sent(self._state["snapshot"], self._reader.sent)
            self._reader.sent = {}
            self._save()  # before the sink has them: a resumed snapshot must know what the consumer may have
        self._status.snapshot_table = self._reader.current_table
        return out

    # -- positions ------------------------------------------------------------------------------------

    def acknowledge(self, checkpoint: Checkpoint) -> None:
        position = checkpoint.position
        if type(position) is StreamPosition:
            self._state["acked_mark"] = list(position.mark)
            if position.confirm_lsn is not None and position.confirm_lsn > self._confirmable:
                self._confirmable = position.confirm_lsn
            if time.monotonic() - self._last_save >= _MARK_SAVE_INTERVAL:
                self._save(durable=False)
        elif isinstance(position, SnapshotProgress):
            acknowledge_progress(self._state["snapshot"], position)
            self._status.snapshot_rows = sum(e["rows"] for e in self._state["snapshot"]["tables"])
            self._save()
            if self._state["snapshot"]["status"] == "done" and not self._stream_after_snapshot:
                self._status.phase = "done"

    def confirm(self) -> None:
        if self._cursor is None:
            return
        if self._confirmable <= self._confirmed:
            self._keep_alive()
            return
        self._save()  # the state (what the sink has) always runs ahead of the slot
        try:
            self._cursor.send_feedback(flush_lsn=self._confirmable, force=True)
        except psycopg2.Error as exc:
            raise SourceError(f"cannot confirm to the slot: {exc}".strip()) from exc
        self._confirmed = self._confirmable
        self._last_feedback = time.monotonic()
        self._status.confirmed = format_lsn(self._confirmed)

    def _keep_alive(self) -> None:
        """Feedback now and then even when the sink holds everything back, or the server would end the
        replication connection after wal_sender_timeout: the read loop (which sends it) may not be running."""
        now = time.monotonic()
        if now - self._last_feedback >= self.config.status_interval:
            try:
                self._cursor.send_feedback(force=True)
            except psycopg2.Error as exc:
                raise SourceError(f"cannot send feedback to the slot: {exc}".strip()) from exc
            self._last_feedback = now

    def _save(self, durable: bool = True) -> None:
        self.state_store.save(self._state, durable)
        self._last_save = time.monotonic()

    def heartbeat(self, now_us: int) -> list[Record | Checkpoint]:
        conn = self._catalog_conn()
        try:
            if self.config.heartbeat_action_query:
                conn.execute(self.config.heartbeat_action_query.encode())
            self._status.lag_bytes = server_lag_bytes(conn, self.config.slot)
        except psycopg.Error as exc:
            raise SourceError(f"heartbeat failed: {exc}".strip()) from exc
        return []

    @property
    def finished(self) -> bool:
        return self._finished and self._snapshot is None

    @property
    def status(self) -> SourceStatus:
        translator = self._translator
        counts = dict(self._reader.counts) if self._reader is not None else {}
        if translator is not None:
            self._status.duplicates = translator.duplicates
            counts.update(translator.counts)
        self._status.counts = counts
        return self._status

    def close(self) -> None:
        for conn in (self._replication, self._snapshot_conn, self._catalog):
            try:
                if conn is not None:
                    conn.close()
            except Exception:  # noqa: BLE001 - closing after a failure must not hide it
                pass
        self._replication = self._cursor = self._snapshot = None
