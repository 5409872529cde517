"""What a SQL side's database must compute, per database: PostgreSQL, MariaDB (and MySQL), SQLite.

Both sides of a job must hash equal canonical rows to equal numbers. Two PostgreSQL sides use PostgreSQL's
own fast hashes (`hashtextextended`); a job with any other database uses the portable hash on both sides:
the first 60 bits of the MD5 of the canonical row text, which PostgreSQL (`md5`), MariaDB (`MD5`, `CONV`)
and SQLite (a function registered on the connection) all compute alike. The canonical texts are those of
normalise.py: PostgreSQL and MariaDB compute them in SQL, SQLite through `normalise.canonical` itself.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Connection, Engine

from strangler.reconcile.config import SqlSide
from strangler.reconcile.errors import UnsupportedSide
from strangler.reconcile.normalise import WHITESPACE, ColumnType, FieldKind, NotComparable, canonical, zone_named

HASH_HEX = 15  # hex digits of MD5 kept by the portable hash: 60 bits, positive in a signed bigint
_PG_TRIM = "E'" + WHITESPACE.replace("\t", "\\t").replace("\r", "\\r").replace("\n", "\\n") + "'"
_PG_TYPES = {
    20: "integer", 21: "integer", 23: "integer", 26: "integer", 700: "float", 701: "float", 1700: "decimal",
    16: "boolean", 1082: "date", 1114: "timestamp", 1184: "timestamp",
}
# MySQL protocol type codes: DECIMAL, TINY, SHORT, LONG, FLOAT, DOUBLE, TIMESTAMP, LONGLONG, INT24, DATE,
# DATETIME, YEAR, NEWDECIMAL
_MYSQL_TYPES = {0: "decimal", 1: "integer", 2: "integer", 3: "integer", 4: "float", 5: "float", 7: "timestamp",
                8: "integer", 9: "integer", 10: "date", 12: "timestamp", 13: "integer", 246: "decimal"}


class SqlDialect:
    """The SQL one database needs; `portable` chooses the hash both sides of a job share."""

    name = "generic"

    def __init__(self, portable: bool) -> None:
        self.portable = portable

    def create_engine(self, url: URL, config: SqlSide) -> Engine:
        raise NotImplementedError

    def canonical(self, kind: FieldKind, column: str) -> str:
        raise NotImplementedError

    def column_types(self, conn: Connection, source: str, table: str | None, columns: Sequence[str],
                     description: Sequence[Any]) -> list[ColumnType]:
        raise NotImplementedError

    def bigint(self, column: str) -> str:
        return f"CAST({column} AS BIGINT)"

    def row_text(self, exprs: Sequence[str]) -> str:
        """The canonical values as one text: each 'V'+value or 'N' for null, joined by U+001F."""
        raise NotImplementedError

    def hash_text(self, expr: str) -> str:
        raise NotImplementedError

    def row_hash(self, exprs: Sequence[str]) -> str:
        return self.hash_text(self.row_text(exprs))

    def key_hash(self, exprs: Sequence[str], integer_column: str | None) -> str:
        return self.hash_text(exprs[0] if len(exprs) == 1 else self.row_text(exprs))

    def sum(self, expr: str) -> str:
        return f"sum({expr})"

    def in_list(self, expr: str, values: Sequence[int]) -> str:
        return f"{expr} IN ({','.join(str(int(v)) for v in values)})"

    def binary_order(self, expr: str) -> str:
        return expr

    hashed_subquery = ""  # what keeps the hashing below the aggregation (PostgreSQL's parallel workers)
    isolation = "REPEATABLE READ"

    def begin_chunk(self, conn: Connection) -> None:
        """Settings of one chunk's transaction."""


class PostgresDialect(SqlDialect):
    name = "postgresql"
    hashed_subquery = "OFFSET 0"

    def create_engine(self, url: URL, config: SqlSide) -> Engine:
        options = f"-c TimeZone={config.timezone} -c DateStyle=ISO,YMD -c default_transaction_read_only=on"
        return create_engine(url, pool_size=2, max_overflow=2,  # a session per chunk: reuse the connections
                             connect_args={"options": options, "application_name": "strangler-reconcile"})

    def canonical(self, kind: FieldKind, column: str) -> str:
        return canonical_sql(kind, column)

    def column_types(self, conn: Connection, source: str, table: str | None, columns: Sequence[str],
                     description: Sequence[Any]) -> list[ColumnType]:
        out = []
        for item in description:
            oid, declared_scale = item[1], item[5]  # type_code is the type's OID
            kind = _PG_TYPES.get(oid, "text")
            out.append(_reported(kind, declared_scale))
        return out

    def bigint(self, column: str) -> str:
        return f"({column})::bigint"

    def row_text(self, exprs: Sequence[str]) -> str:
        values = ", ".join(f"coalesce('V' || {e}, 'N')" for e in exprs)
        return f"concat_ws(chr(31), {values})"

    def hash_text(self, expr: str) -> str:
        return f"('x' || substr(md5({expr}), 1, {HASH_HEX}))::bit({HASH_HEX * 4})::bigint"

    def row_hash(self, exprs: Sequence[str]) -> str:
        if self.portable:
            return super().row_hash(exprs)
        return f"hashtextextended(row({', '.join(exprs)})::text, 0)"

    def key_hash(self, exprs: Sequence[str], integer_column: str | None) -> str:
        if self.portable:
            return super().key_hash(exprs, integer_column)
        if integer_column is not None:  # no text conversion for the common integer key
            return f"hashint8extended(({integer_column})::bigint, 0)"
        joined = exprs[0] if len(exprs) == 1 else f"concat_ws(chr(31), {', '.join(exprs)})"
        return f"hashtextextended({joined}, 0)"

    def in_list(self, expr: str, values: Sequence[int]) -> str:
        # a constant array: PostgreSQL hashes a constant `= ANY(...)` list once, not per row
        return f"{expr} = ANY('{{{','.join(str(int(v)) for v in values)}}}'::bigint[])"

    def binary_order(self, expr: str) -> str:
        return f'{expr} COLLATE "C"'

    def begin_chunk(self, conn: Connection) -> None:
        # enough memory to aggregate the buckets in a hash table rather than by sorting the rows, and
        # parallel workers for a chunk as PostgreSQL uses them for a scan of the whole table
        conn.execute(text("SET LOCAL work_mem = '64MB'"))
        conn.execute(text("SET LOCAL parallel_setup_cost = 10"))
        conn.execute(text("SET LOCAL parallel_tuple_cost = 0.001"))


def canonical_sql(kind: FieldKind, column: str) -> str:
    """PostgreSQL's expression of a column's canonical text (the twin of normalise.canonical)."""
    if kind.type == "integer":
        return f"({column})::bigint::text"
    if kind.type in ("decimal", "float"):
        if kind.scale is None:
            return f"trim_scale(({column})::numeric)::text"
        return f"round(({column})::numeric, {int(kind.scale)})::text"
    if kind.type == "boolean":
        return f"({column})::boolean::text"
    if kind.type == "date":
        return f"({column})::date::text"
    if kind.type == "timestamp":
        utc = f"(({column})::timestamptz at time zone 'UTC')"
        unit = {"s": "second", "ms": "milliseconds"}.get(kind.precision)
        return f"date_trunc('{unit}', {utc})::text" if unit else f"{utc}::text"
    expr = f"({column})::text"
    if kind.trim:
        expr = f"btrim({expr}, {_PG_TRIM})"
    return f"lower({expr})" if kind.casefold else expr


class MariaDbDialect(SqlDialect):
    """MariaDB and MySQL (a `mysql+pymysql://` or `mariadb+pymysql://` URL). Timestamps without a zone are read
    in the side's `timezone`: a zone name needs the server's time zone tables."""

    name = "mariadb"

    def create_engine(self, url: URL, config: SqlSide) -> Engine:
        engine = create_engine(url.update_query_dict({"charset": "utf8mb4"}), pool_size=2, max_overflow=2,
                               pool_pre_ping=True)
        zone = "+00:00" if config.timezone.upper() == "UTC" else config.timezone

        @event.listens_for(engine, "connect")
        def _session(dbapi_connection: Any, record: Any) -> None:
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SET SESSION TRANSACTION READ ONLY")
                cursor.execute("SET SESSION time_zone = %s", (zone,))
                cursor.execute("SET SESSION group_concat_max_len = 1048576")

        return engine

    def canonical(self, kind: FieldKind, column: str) -> str:
        if kind.type == "integer":
            return f"CAST(CAST({column} AS SIGNED) AS CHAR)"
        if kind.type in ("decimal", "float"):
            if kind.scale is not None:
                return f"CAST(CAST({column} AS DECIMAL(65, {int(kind.scale)})) AS CHAR)"
            plain = f"CAST({column} AS CHAR)"
            return f"IF(LOCATE('.', {plain}) > 0, TRIM(TRAILING '.' FROM TRIM(TRAILING '0' FROM {plain})), {plain})"
        if kind.type == "boolean":
            word = f"LOWER(TRIM(CAST({column} AS CHAR)))"
            return (f"CASE WHEN {word} IN ('t', 'true', 'y', 'yes', 'on', '1') THEN 'true' "
                    f"WHEN {word} IN ('f', 'false', 'n', 'no', 'off', '0') THEN 'false' ELSE {word} END")
        if kind.type == "date":
            return f"DATE_FORMAT({column}, '%Y-%m-%d')"
        if kind.type == "timestamp":
            utc = f"CONVERT_TZ({column}, @@session.time_zone, '+00:00')"
            if kind.precision == "s":
                return f"DATE_FORMAT({utc}, '%Y-%m-%d %H:%i:%s')"
            micro = f"MICROSECOND({utc})" if kind.precision == "us" else f"(MICROSECOND({utc}) DIV 1000 * 1000)"
            return (f"CONCAT(DATE_FORMAT({utc}, '%Y-%m-%d %H:%i:%s'), IF({micro} = 0, '', "
                    f"CONCAT('.', TRIM(TRAILING '0' FROM LPAD({micro}, 6, '0')))))")
        expr = f"CAST({column} AS CHAR)"
        if kind.trim:
            expr = f"REGEXP_REPLACE({expr}, '^[ \\t\\r\\n]+|[ \\t\\r\\n]+$', '')"
        return f"LOWER({expr})" if kind.casefold else expr

    def column_types(self, conn: Connection, source: str, table: str | None, columns: Sequence[str],
                     description: Sequence[Any]) -> list[ColumnType]:
        out = []
        for item in description:
            code, length, scale = item[1], item[3], item[5]
            kind = _MYSQL_TYPES.get(code, "text")
            if code == 1 and length == 1:  # tinyint(1): how MariaDB spells BOOLEAN
                kind = "boolean"
            out.append(_reported(kind, scale))
        return out

    def bigint(self, column: str) -> str:
        return f"CAST({column} AS SIGNED)"

    def row_text(self, exprs: Sequence[str]) -> str:
        values = ", ".join(f"COALESCE(CONCAT('V', {e}), 'N')" for e in exprs)
        return f"CONCAT_WS(CHAR(31 USING utf8mb4), {values})"

    def hash_text(self, expr: str) -> str:
        return f"CAST(CONV(SUBSTRING(MD5({expr}), 1, {HASH_HEX}), 16, 10) AS UNSIGNED)"

    def binary_order(self, expr: str) -> str:
        return f"CAST({expr} AS BINARY)"



class SqliteDialect(SqlDialect):
    """SQLite: the canonical texts and the hash are Python functions registered on each connection, so they
    are `normalise.canonical` itself; the connection is read-only (`PRAGMA query_only`)."""

    name = "sqlite"
    isolation = "SERIALIZABLE"

    def create_engine(self, url: URL, config: SqlSide) -> Engine:
        engine = create_engine(url, connect_args={"check_same_thread": False})
        zone = zone_named(config.timezone)

        @event.listens_for(engine, "connect")
        def _functions(dbapi_connection: Any, record: Any) -> None:
            dbapi_connection.create_function("strangler_canonical", 2, functools.partial(_sqlite_canonical, zone),
                                             deterministic=True)
            dbapi_connection.create_function("strangler_hash", 1, portable_hash, deterministic=True)
            dbapi_connection.create_aggregate("strangler_sum", 1, _ExactSum)
            dbapi_connection.execute("PRAGMA query_only = ON")

        return engine

    def canonical(self, kind: FieldKind, column: str) -> str:
        spec = f"{kind.type}|{'' if kind.scale is None else kind.scale}|{kind.precision}|{int(kind.trim)}|" \
               f"{int(kind.casefold)}"
        return f"strangler_canonical('{spec}', {column})"

    def column_types(self, conn: Connection, source: str, table: str | None, columns: Sequence[str],
                     description: Sequence[Any]) -> list[ColumnType]:
        declared: dict[str, str] = {}
        if table is not None:
            schema, _, name = table.rpartition(".")
            pragma = f"PRAGMA {schema + '.' if schema else ''}table_info('{name.replace(chr(39), '')}')"
            declared = {str(row[1]).lower(): str(row[2] or "") for row in conn.execute(text(pragma))}
        first = conn.execute(text(f"SELECT {', '.join(columns)} FROM {source} LIMIT 1")).first()
        out = []
        for i, column in enumerate(columns):
            name = column.strip('"').lower()
            if name in declared:
                out.append(_sqlite_declared(declared[name]))
            else:  # a query's column: what its first value is
                value = first[i] if first is not None else None
                out.append(ColumnType("integer", 0) if isinstance(value, int) else
                           ColumnType("float") if isinstance(value, float) else ColumnType("text"))
        return out

    def row_text(self, exprs: Sequence[str]) -> str:
        return " || char(31) || ".join(f"coalesce('V' || {e}, 'N')" for e in exprs)

    def hash_text(self, expr: str) -> str:
        return f"strangler_hash({expr})"

    def sum(self, expr: str) -> str:
        return f"strangler_sum({expr})"  # exact: SQLite's sum() stops at an integer overflow


def _reported(kind: str, scale: Any) -> ColumnType:
    """A column's type from the kind its driver reports: integers have scale 0, only decimals keep theirs."""
    return ColumnType(kind, 0 if kind == "integer" else (scale if kind == "decimal" else None))


def portable_hash(value: str | None) -> int | None:
    """The portable hash of a text: its MD5's first 60 bits (as PostgreSQL and MariaDB compute it in SQL)."""
    if value is None:
        return None
    return int(hashlib.md5(value.encode("utf-8")).hexdigest()[:HASH_HEX], 16)


class _ExactSum:
    def __init__(self) -> None:
        self.total = 0

    def step(self, value: int | None) -> None:
        if value is not None:
            self.total += int(value)

    def finalize(self) -> str:
        return str(self.total)


@functools.lru_cache(maxsize=256)
def _kind(spec: str) -> FieldKind:
    kind, scale, precision, trim, casefold = spec.split("|")
    return FieldKind(kind, int(scale) if scale else None, precision, trim == "1", casefold == "1")


def _sqlite_canonical(zone: Any, spec: str, value: Any) -> str | None:
    try:
        return canonical(_kind(spec), value.decode("utf-8", "replace") if isinstance(value, bytes) else value, zone)
    except NotComparable:
        return "!" + str(value)  # not readable as the field's type: never equal to a canonical value


_DECIMAL = re.compile(r"\(\s*\d+\s*,\s*(\d+)\s*\)")


def _sqlite_declared(declared: str) -> ColumnType:
    """A column's type from its declared type, by SQLite's affinity rules plus the names that say more."""
    upper = declared.upper()
    if "BOOL" in upper:
        return ColumnType("boolean")
    if "INT" in upper:
        return ColumnType("integer", 0)
    if "TIMESTAMP" in upper or "DATETIME" in upper:
        return ColumnType("timestamp")
    if "DATE" in upper:
        return ColumnType("date")
    if any(word in upper for word in ("CHAR", "CLOB", "TEXT")):
        return ColumnType("text")
    if any(word in upper for word in ("REAL", "FLOA", "DOUB")):
        return ColumnType("float")
    if "DEC" in upper or "NUMERIC" in upper:
        match = _DECIMAL.search(upper)
        return ColumnType("decimal", int(match.group(1)) if match else None)
    return ColumnType("text")


def dialect_for(backend: str, portable: bool) -> SqlDialect:
    """The dialect of a SQLAlchemy backend name (UnsupportedSide for others)."""
    if backend == "postgresql":
        return PostgresDialect(portable)
    if backend in ("mysql", "mariadb"):
        return MariaDbDialect(True)
    if backend == "sqlite":
        return SqliteDialect(True)
    raise UnsupportedSide(f"{backend} sides are not supported (PostgreSQL, MariaDB or MySQL, SQLite)")
