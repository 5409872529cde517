"""What the PostgreSQL catalog says about the captured tables, and the publication and slot they need.

psycopg 3 on an ordinary connection; the replication connection lives in postgres.py. Every session runs with
the settings values.py relies on (ISO dates, UTC, hex bytea, round-trip floats).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from strangler.cdc.errors import SourceError, SourceMisconfigured
from strangler.cdc.tables import CaptureRules, ColumnFacts
from strangler.cdc.values import PgType

SESSION_OPTIONS = (
    "-c DateStyle=ISO -c TimeZone=UTC -c IntervalStyle=postgres -c bytea_output=hex -c extra_float_digits=3"
)
_FIRST_USER_OID = 16384
_TEXT_TYPES = {"text", "varchar", "bpchar"}


@dataclass(frozen=True)
class TableInfo:
    oid: int
    schema: str
    name: str
    columns: tuple[ColumnFacts, ...]
    primary_key: tuple[str, ...]
    replica_identity: str
    estimated_rows: int
    c_ordered: frozenset[str]  # text columns whose collation orders like Python's str (C, POSIX)

    @property
    def full_name(self) -> str:
        return f"{self.schema}.{self.name}"


def connect(dsn: str, **kwargs: Any) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(dsn, options=SESSION_OPTIONS, autocommit=True, connect_timeout=10, **kwargs)
    except psycopg.Error as exc:
        raise SourceError(f"cannot connect to the source database: {exc}".strip()) from exc


def check_server(conn: psycopg.Connection[Any]) -> str:
    """The database's name; SourceMisconfigured unless the server can do logical decoding in UTF-8."""
    row = conn.execute("SELECT current_setting('wal_level'), current_database(), current_setting('server_encoding')"
                       ).fetchone()
    assert row is not None
    if row[0] != "logical":
        raise SourceMisconfigured(f"wal_level is {row[0]!r}; logical decoding needs wal_level = logical and a restart")
    if row[2] not in ("UTF8", "SQL_ASCII"):
        raise SourceMisconfigured(f"the database encoding is {row[2]}; the connector reads UTF8 databases only")
    return str(row[1])


def captured_tables(conn: psycopg.Connection[Any], rules: CaptureRules) -> list[TableInfo]:
    """The ordinary and partitioned tables the rules capture, in schema and name order."""
    rows = conn.execute(
        """SELECT c.oid, n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
             AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
           ORDER BY n.nspname, c.relname"""
    ).fetchall()
    return [describe_table(conn, oid) for oid, schema, name in rows if rules.captures(schema, name)]


def describe_table(conn: psycopg.Connection[Any], oid: int) -> TableInfo:
    head = conn.execute(
        """SELECT n.nspname, c.relname, c.relreplident, greatest(c.reltuples, 0)::bigint
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = %s""",
        (oid,),
    ).fetchone()
    if head is None:
        raise SourceError(f"table with oid {oid} no longer exists")
    columns = conn.execute(
        """SELECT a.attname, a.atttypid, a.atttypmod, NOT a.attnotnull,
                  coalesce(nullif(co.collname, 'default'), d.datcollate)
           FROM pg_attribute a
           LEFT JOIN pg_collation co ON co.oid = a.attcollation
           CROSS JOIN (SELECT datcollate FROM pg_database WHERE datname = current_database()) d
           WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum""",
        (oid,),
    ).fetchall()
    key = conn.execute(
        """SELECT a.attname FROM pg_index i
           JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
           WHERE i.indrelid = %s AND i.indisprimary ORDER BY k.ord""",
        (oid,),
    ).fetchall()
    c_ordered = frozenset(name for name, _, _, _, coll in columns if coll in ("C", "POSIX"))
    return TableInfo(
        oid=oid,
        schema=head[0],
        name=head[1],
        columns=tuple(ColumnFacts(name, typ, mod, optional) for name, typ, mod, optional, _ in columns),
        primary_key=tuple(r[0] for r in key),
        replica_identity=head[2],
        estimated_rows=int(head[3]),
        c_ordered=c_ordered,
    )


def load_types(conn: psycopg.Connection[Any], oids: Iterable[int]) -> dict[int, PgType]:
    """PgType per oid: domains resolved to their base type (with the domain's modifier), arrays to their
    element, enums with their labels."""
    wanted = sorted(set(oids))
    rows = conn.execute(
        """WITH RECURSIVE t(oid, root, modifier, depth) AS (
               SELECT oid, oid, -1, 0 FROM pg_type WHERE oid = ANY(%s)
               UNION ALL
               SELECT bt.oid, t.root, CASE WHEN t.modifier >= 0 THEN t.modifier ELSE ty.typtypmod END, t.depth + 1
               FROM t JOIN pg_type ty ON ty.oid = t.oid JOIN pg_type bt ON bt.oid = ty.typbasetype
               WHERE ty.typtype = 'd' AND t.depth < 10)
           SELECT DISTINCT ON (t.root) t.root, ty.oid, ty.typname, ty.typtype, ty.typelem, ty.typcategory, t.modifier,
                  ARRAY(SELECT enumlabel::text FROM pg_enum WHERE enumtypid = coalesce(
                        nullif(CASE WHEN ty.typcategory = 'A' THEN ty.typelem ELSE 0 END, 0), ty.oid)
                        ORDER BY enumsortorder)
           FROM t JOIN pg_type ty ON ty.oid = t.oid ORDER BY t.root, t.depth DESC""",
        (wanted,),
    ).fetchall()
    types: dict[int, PgType] = {}
    elements = {row[4] for row in rows if row[5] == "A" and row[4]}
    element_types = load_types(conn, elements - set(wanted)) if elements - set(wanted) else {}
    plain: dict[int, PgType] = {}
    for root, oid, name, kind, elem, category, modifier, labels in rows:
        if category == "A" and elem:
            continue
        plain[root] = PgType(oid, name, "enum" if kind == "e" else "base", enum_values=tuple(labels),
                             builtin=oid < _FIRST_USER_OID, modifier=modifier)
    types.update(plain)
    for root, oid, name, _kind, elem, category, modifier, _labels in rows:
        if category == "A" and elem:
            element = plain.get(elem) or element_types.get(elem)
            types[root] = PgType(oid, name, "array", element=element, builtin=oid < _FIRST_USER_OID,
                                 modifier=modifier)
    return types


def ensure_publication(
    conn: psycopg.Connection[Any], name: str, tables: Sequence[TableInfo], mode: str
) -> None:
    """Create the publication if missing (`filtered`: exactly the captured tables; `all_tables`), and add
    captured tables a filtered publication lacks. `disabled`: it must already exist."""
    row = conn.execute("SELECT puballtables FROM pg_publication WHERE pubname = %s", (name,)).fetchone()
    identifiers = [sql.Identifier(t.schema, t.name) for t in tables]
    try:
        if row is None:
            if mode == "disabled":
                raise SourceError(f"publication {name!r} does not exist and publication_autocreate is disabled")
            if mode == "all_tables":
                conn.execute(sql.SQL("CREATE PUBLICATION {} FOR ALL TABLES").format(sql.Identifier(name)))
            elif not identifiers:
                raise SourceMisconfigured("no table matches table_include: nothing to capture")
            else:
                conn.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
                    sql.Identifier(name), sql.SQL(", ").join(identifiers)))
            return
        if row[0] or mode != "filtered":
            return
        present = {
            (r[0], r[1])
            for r in conn.execute("SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s",
                                  (name,))
        }
        missing = [sql.Identifier(t.schema, t.name) for t in tables if (t.schema, t.name) not in present]
        if missing:
            conn.execute(sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                sql.Identifier(name), sql.SQL(", ").join(missing)))
    except psycopg.Error as exc:
        raise SourceError(f"cannot create or update publication {name!r}: {exc}".strip()) from exc


@dataclass(frozen=True)
class SlotInfo:
    plugin: str
    database: str
    confirmed_flush: int
    active: bool


def slot_info(conn: psycopg.Connection[Any], slot: str) -> SlotInfo | None:
    row = conn.execute(
        """SELECT plugin, database, (confirmed_flush_lsn - '0/0')::bigint, active
           FROM pg_replication_slots WHERE slot_name = %s""",
        (slot,),
    ).fetchone()
    return None if row is None else SlotInfo(row[0] or "", row[1] or "", int(row[2] or 0), bool(row[3]))


def server_lag_bytes(conn: psycopg.Connection[Any], slot: str) -> int | None:
    row = conn.execute(
        "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = %s",
        (slot,),
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)
