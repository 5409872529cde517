"""Debezium change events: key, value, topic, tombstones, optionally in the JSON-with-schema form.

A record is `(topic, key, value, headers)` with key and value already serialised (JSON bytes, or None for a
null key or a tombstone's value). The value is `{before, after, source, op, ts_ms, ts_us, transaction}`.
"""

from __future__ import annotations

from typing import Any

import orjson

from strangler import __version__
from strangler.cdc.schemas import key_schema, value_schema
from strangler.cdc.tables import CapturedTable

Headers = list[tuple[str, bytes]]
Record = tuple[str, bytes | None, bytes | None, Headers | None]
VERSION = f"{__version__}.Strangler"

_dumps = orjson.dumps


class Envelope:
    """Builds the records of one connector (`name` is Debezium's topic prefix and `source.name`)."""

    def __init__(
        self, *, name: str, connector: str, db: str, tombstones: bool = True, schemas: bool = False
    ) -> None:
        self.name = name
        self.connector = connector
        self.db = db
        self.tombstones = tombstones
        self.schemas = schemas
        self._schema_cache: dict[int, tuple[CapturedTable, bytes, bytes]] = {}

    # -- source blocks ------------------------------------------------------------------------------

    def postgres_source(
        self, table: CapturedTable, snapshot: str, ts_us: int, txid: int | None, lsn: int | None, sequence: str
    ) -> dict[str, Any]:
        return {
            "version": VERSION, "connector": "postgresql", "name": self.name, "ts_ms": ts_us // 1000,
            "ts_us": ts_us, "snapshot": snapshot, "db": self.db, "sequence": sequence, "schema": table.schema,
            "table": table.name, "txId": txid, "lsn": lsn, "xmin": None,
        }

    def sqlite_source(self, table: CapturedTable, snapshot: str, ts_us: int, changelog_id: int) -> dict[str, Any]:
        return {
            "version": VERSION, "connector": "sqlite", "name": self.name, "ts_ms": ts_us // 1000, "ts_us": ts_us,
            "snapshot": snapshot, "db": self.db, "sequence": str(changelog_id), "schema": table.schema,
            "table": table.name, "txId": None, "changelog_id": changelog_id,
        }

    # -- records ------------------------------------------------------------------------------------

    def key(self, table: CapturedTable, row: dict[str, Any]) -> bytes | None:
        if not table.key:
            return None
        key = {k: row[k] for k in table.key}
        if self.schemas:
            return b'{"schema":' + self._schemas(table)[0] + b',"payload":' + _dumps(key) + b"}"
        return _dumps(key)

    def change(
        self,
        table: CapturedTable,
        op: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        source: dict[str, Any],
        now_us: int,
        key: bytes | None,
        headers: Headers | None = None,
    ) -> Record:
        value = {
            "before": before, "after": after, "source": source, "op": op, "ts_ms": now_us // 1000,
            "ts_us": now_us, "transaction": None,
        }
        if self.schemas:
            data = b'{"schema":' + self._schemas(table)[1] + b',"payload":' + _dumps(value) + b"}"
        else:
            data = _dumps(value)
        return (table.topic, key, data, headers)

    def tombstone(self, table: CapturedTable, key: bytes | None) -> Record:
        return (table.topic, key, None, None)

    def deletion(
        self, table: CapturedTable, before: dict[str, Any], source: dict[str, Any], now_us: int,
        headers: Headers | None = None,
    ) -> list[Record]:
        """A delete event, then its tombstone unless tombstones are off."""
        key = self.key(table, before)
        records = [self.change(table, "d", before, None, source, now_us, key, headers)]
        if self.tombstones:
            records.append((table.topic, key, None, None))
        return records

    def update(
        self,
        table: CapturedTable,
        before: dict[str, Any] | None,
        after: dict[str, Any],
        old_key_row: dict[str, Any] | None,
        source: dict[str, Any],
        now_us: int,
    ) -> list[Record]:
        """An update; a changed primary key becomes delete + tombstone + create, as Debezium emits it.

        `old_key_row` is whatever old image the source has (the old key or the whole old row), or None when
        the key did not change."""
        new_key = self.key(table, after)
        if old_key_row is not None and table.key:
            old_key = self.key(table, old_key_row)
            if old_key != new_key:
                old = before if before is not None else old_key_row
                records = self.deletion(table, old, source, now_us,
                                        headers=[("__debezium.newkey", new_key or b"null")])
                records.append(self.change(table, "c", None, after, source, now_us, new_key,
                                           headers=[("__debezium.oldkey", old_key or b"null")]))
                return records
        return [self.change(table, "u", before, after, source, now_us, new_key)]

    # -- the same records, spliced from bytes (the streaming hot path) ---------------------------------

    def stream_template(self, table: CapturedTable, ts_us: int, txid: int, last_commit: int | None) -> StreamTemplate:
        """Pre-serialised parts of every streamed event of `table` in one transaction."""
        head = _dumps({"version": VERSION, "connector": "postgresql", "name": self.name, "ts_ms": ts_us // 1000,
                       "ts_us": ts_us, "snapshot": "false", "db": self.db})[:-1]
        last = b"null" if last_commit is None else b'\\"%d\\"' % last_commit
        middle = b',"schema":' + _dumps(table.schema) + b',"table":' + _dumps(table.name) + b',"txId":%d' % txid
        schema = b'{"schema":' + self._schemas(table)[1] + b',"payload":' if self.schemas else b""
        key_schema = b'{"schema":' + self._schemas(table)[0] + b',"payload":' if self.schemas and table.key else b""
        return StreamTemplate(head + b',"sequence":"[' + last + b',\\"', middle + b',"lsn":', schema, key_schema)

    @staticmethod
    def now_tail(now_us: int) -> bytes:
        """The end of every value produced at `now_us`."""
        return b',"ts_ms":%d,"ts_us":%d,"transaction":null}' % (now_us // 1000, now_us)

    def heartbeat(self, topic_prefix: str, now_ms: int) -> Record:
        """Debezium's heartbeat record: topic `<prefix>.<name>`, key {serverName}, value {ts_ms}."""
        return (f"{topic_prefix}.{self.name}", _dumps({"serverName": self.name}), _dumps({"ts_ms": now_ms}), None)

    def _schemas(self, table: CapturedTable) -> tuple[bytes, bytes]:
        cached = self._schema_cache.get(id(table))
        if cached is None or cached[0] is not table:
            cached = (table, _dumps(key_schema(table, self.name)),
                      _dumps(value_schema(table, self.name, self.connector)))
            self._schema_cache[id(table)] = cached
        return cached[1], cached[2]


class StreamTemplate:
    """`value()` joins an event's value from its parts; equal, once parsed, to `Envelope.change`."""

    __slots__ = ("sequence_head", "lsn_head", "schema", "key_schema")

    def __init__(self, sequence_head: bytes, lsn_head: bytes, schema: bytes, key_schema: bytes) -> None:
        self.sequence_head = sequence_head
        self.lsn_head = lsn_head
        self.schema = schema
        self.key_schema = key_schema

    def value(self, before: bytes, after: bytes, op: bytes, lsn: int, now_tail: bytes) -> bytes:
        lsn_text = b"%d" % lsn
        value = b"".join((b'{"before":', before, b',"after":', after, b',"source":', self.sequence_head, lsn_text,
                          b'\\"]"', self.lsn_head, lsn_text, b',"xmin":null},"op":"', op, b'"', now_tail))
        return self.schema + value + b"}" if self.schema else value

    def key(self, key: bytes | None) -> bytes | None:
        if key is None or not self.key_schema:
            return key
        return self.key_schema + key + b"}"
