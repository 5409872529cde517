"""A SQL side of a reconciliation job (PostgreSQL, through SQLAlchemy): checksums and rows, read-only.

Every value is normalised inside the database to the canonical text of normalise.py, so that checksums of
rows that are equal after normalisation are equal. Sessions are read-only (`default_transaction_read_only`)
and each chunk is read in one REPEATABLE READ snapshot.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from strangler.reconcile.bisect import Figures, Leaf, Level
from strangler.reconcile.config import SqlSide
from strangler.reconcile.drift import Key
from strangler.reconcile.errors import SideUnavailable, UnsupportedSide
from strangler.reconcile.normalise import WHITESPACE, ColumnType, FieldKind

_TYPES = {
    20: "integer", 21: "integer", 23: "integer", 26: "integer", 700: "float", 701: "float", 1700: "decimal",
    16: "boolean", 1082: "date", 1114: "timestamp", 1184: "timestamp",
}
_TRIM = "E'" + WHITESPACE.replace("\t", "\\t").replace("\r", "\\r").replace("\n", "\\n") + "'"
_CHUNK_BITS = 40  # hash chunks use bits above those of the buckets


@dataclass(frozen=True, slots=True)
class Chunk:
    """A part of the key space: an integer key range [lo, hi), or one of `of` hash partitions."""

    index: int
    lo: int | None = None
    hi: int | None = None
    of: int = 1
    base: int | None = None  # integer keys: buckets are key ranges of [base, base + 2**span_bits)
    span_bits: int = 0

    def describe(self) -> str:
        if self.of > 1:
            return f"hash partition {self.index + 1}/{self.of}"
        if self.lo is None and self.hi is None:
            return "all keys"
        return f"keys [{'' if self.lo is None else self.lo}, {'' if self.hi is None else self.hi})"


def canonical_sql(kind: FieldKind, column: str) -> str:
    """The SQL expression of a column's canonical text (the twin of normalise.canonical)."""
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
        expr = f"btrim({expr}, {_TRIM})"
    return f"lower({expr})" if kind.casefold else expr


class SqlStateSide:
    """One SQL side: describes its columns, plans chunks, and opens a session per chunk."""

    def __init__(self, config: SqlSide, engine: Engine | None = None) -> None:
        self.config = config
        url = make_url(config.url)
        if url.get_backend_name() != "postgresql":
            raise UnsupportedSide(f"{url.get_backend_name()} sides are not supported yet (PostgreSQL only)")
        options = f"-c TimeZone={config.timezone} -c DateStyle=ISO,YMD -c default_transaction_read_only=on"
        self.engine = engine or create_engine(
            url, pool_size=2, max_overflow=2,  # a session per chunk: reuse the connections
            connect_args={"options": options, "application_name": "strangler-reconcile"}
        )
        prepare = self.engine.dialect.identifier_preparer
        if config.table is not None:
            self.source = ".".join(prepare.quote(part) for part in config.table.split("."))
        else:
            self.source = f"({config.query}) AS _source"
        self._quote = prepare.quote
        self.key_exprs: list[str] = []
        self.value_exprs: list[str] = []
        self.key_integer: list[bool] = []

    def describe(self, columns: Sequence[str]) -> dict[str, ColumnType]:
        """The type of each named column, as the database reports it (UnsupportedSide if one is unknown)."""
        select = ", ".join(self._quote(c) for c in columns)
        try:
            with self.engine.connect() as conn:
                result = conn.execute(text(f"SELECT {select} FROM {self.source} LIMIT 0"))
                description = result.cursor.description if result.cursor is not None else []
        except SQLAlchemyError as exc:
            raise SideUnavailable(f"{self._where()}: {exc.__class__.__name__}: {_first_line(exc)}") from exc
        out = {}
        for column, item in zip(columns, description, strict=True):
            oid, declared_scale = cast(int, item[1]), item[5]  # type_code is the type's OID
            kind = _TYPES.get(oid, "text")
            scale = 0 if kind == "integer" else (declared_scale if kind == "decimal" else None)
            out[column] = ColumnType(kind, scale)
        return out

    def bind(self, key: Sequence[FieldKind], columns: Sequence[str], kinds: Sequence[FieldKind]) -> None:
        """Fixes the canonical expressions of the key and of the compared columns (in the job's order)."""
        self.key_integer = [k.type == "integer" for k in key]
        self.key_exprs = [canonical_sql(k, self._quote(c)) for k, c in zip(key, self.config.key, strict=True)]
        self.value_exprs = [canonical_sql(k, self._quote(c)) for k, c in zip(kinds, columns, strict=True)]

    @property
    def key_hash(self) -> str:
        if len(self.key_exprs) == 1 and self.key_integer[0]:  # no text conversion for the common integer key
            return f"hashint8extended(({self._quote(self.config.key[0])})::bigint, 0)"
        joined = self.key_exprs[0] if len(self.key_exprs) == 1 else f"concat_ws(chr(31), {', '.join(self.key_exprs)})"
        return f"hashtextextended({joined}, 0)"

    @property
    def row_hash(self) -> str:
        return f"hashtextextended(row({', '.join([*self.key_exprs, *self.value_exprs])})::text, 0)"

    def integer_bounds(self) -> tuple[int, int, int] | None:
        """(min, max, estimated rows) of a single integer key; None for other keys or an empty side."""
        if len(self.key_exprs) != 1 or not self.key_integer[0]:
            return None
        column = self._quote(self.config.key[0])
        row = self._one(f"SELECT min({column})::bigint, max({column})::bigint FROM {self.source}")
        if row is None or row[0] is None:
            return None
        return int(row[0]), int(row[1]), self.estimate_rows()

    def sample_keys(self, rows: int, wanted: int) -> list[int]:
        """About `wanted` values of a single integer key, from a block sample of a table (empty for a query)."""
        if self.config.table is None or rows <= 0:
            return []
        # whole pages are sampled: take enough of them that clustered keys still give fair quantiles
        percent = min(100.0, max(100.0 * wanted / rows, 2.0))
        column = self._quote(self.config.key[0])
        try:
            with self.engine.connect() as conn:
                result = conn.execute(text(f"SELECT ({column})::bigint FROM {self.source} "
                                           f"TABLESAMPLE SYSTEM ({percent:.6f}) REPEATABLE (0)"))
                return [int(k) for (k,) in result]
        except SQLAlchemyError as exc:
            raise SideUnavailable(f"{self._where()}: {exc.__class__.__name__}: {_first_line(exc)}") from exc

    def estimate_rows(self) -> int:
        """The planner's row estimate of a table (no scan), else an exact count."""
        if self.config.table is not None:
            row = self._one("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(:name)", name=self.source)
            if row is not None and row[0] is not None and row[0] > 0:
                return int(row[0])
        row = self._one(f"SELECT count(*) FROM {self.source}")
        return int(row[0]) if row is not None else 0

    def whole_checksum(self) -> tuple[int, int]:
        """Count and sum of row hashes over the whole side (the floor a comparison is measured against)."""
        row = self._one(f"SELECT count(*), coalesce(sum({self.row_hash}), 0) FROM {self.source}")
        return (int(row[0]), int(row[1])) if row is not None else (0, 0)

    def _one(self, sql: str, **params: Any) -> Any:
        try:
            with self.engine.connect() as conn:
                return conn.execute(text(sql), params).first()
        except SQLAlchemyError as exc:
            raise SideUnavailable(f"{self._where()}: {exc.__class__.__name__}: {_first_line(exc)}") from exc

    @contextlib.contextmanager
    def session(self, chunk: Chunk) -> Iterator[SqlChunkSession]:
        try:
            with self.engine.connect() as conn:
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
                with conn.begin():
                    # enough memory to aggregate the buckets in a hash table rather than by sorting the rows,
                    # and parallel workers for a chunk as PostgreSQL uses them for a scan of the whole table
                    conn.execute(text("SET LOCAL work_mem = '64MB'"))
                    conn.execute(text("SET LOCAL parallel_setup_cost = 10"))
                    conn.execute(text("SET LOCAL parallel_tuple_cost = 0.001"))
                    yield SqlChunkSession(self, conn, chunk)
        except SQLAlchemyError as exc:
            raise SideUnavailable(f"{self._where()}: {exc.__class__.__name__}: {_first_line(exc)}") from exc

    def chunk_filter(self, chunk: Chunk) -> tuple[str, dict[str, Any]]:
        parts, params = ["TRUE"], {}
        if chunk.of > 1:
            parts.append(f"(({self.key_hash} >> {_CHUNK_BITS}) & 65535) % {chunk.of} = {chunk.index}")
        column = self._quote(self.config.key[0])
        if chunk.lo is not None:
            parts.append(f"{column} >= :lo")
            params["lo"] = chunk.lo
        if chunk.hi is not None:
            parts.append(f"{column} < :hi")
            params["hi"] = chunk.hi
        return " AND ".join(parts), params

    def order_by(self) -> str:
        return ", ".join(e if integer else f"{e} COLLATE \"C\""
                         for e, integer in zip(self._typed_keys(), self.key_integer, strict=True))

    def _typed_keys(self) -> list[str]:
        return [f"({self._quote(c)})::bigint" if integer else e
                for c, e, integer in zip(self.config.key, self.key_exprs, self.key_integer, strict=True)]

    def _where(self) -> str:
        url = make_url(self.config.url)
        return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database} {self.config.table or 'query'}"

    def close(self) -> None:
        self.engine.dispose()


class SqlChunkSession:
    """One side of one chunk. Buckets are key ranges for integer-key chunks (so leaves are read through the
    key's index), else the low bits of the key's hash."""

    def __init__(self, side: SqlStateSide, conn: Connection, chunk: Chunk) -> None:
        self.side = side
        self.conn = conn
        self.where, self.params = side.chunk_filter(chunk)
        self.base = chunk.base if chunk.base is not None and len(side.key_exprs) == 1 else None
        self.span_bits = chunk.span_bits
        self.offset = f"(({side._quote(side.config.key[0])})::bigint - {int(chunk.base or 0)})"

    @property
    def max_bits(self) -> int | None:
        """Beyond this resolution a range bucket holds one key (None: hash buckets, no such limit)."""
        return self.span_bits if self.base is not None else None

    def bucket(self, bits: int) -> str:
        if self.base is not None:
            return f"({self.offset} >> {self.span_bits - bits})"
        return f"({self.side.key_hash} & {(1 << bits) - 1})"

    def within(self, bits: int, values: Sequence[int]) -> str:
        """A predicate for the rows in the buckets `values` at resolution `bits`."""
        if self.base is None:
            return f"{self.bucket(bits)} = ANY({_int_array(values)})"
        shift, column = self.span_bits - bits, self.side._quote(self.side.config.key[0])
        ranges: list[list[int]] = []
        for v in sorted(values):  # adjacent buckets become one range
            lo, hi = self.base + (v << shift), self.base + ((v + 1) << shift)
            if ranges and ranges[-1][1] == lo:
                ranges[-1][1] = hi
            else:
                ranges.append([lo, hi])
        if len(ranges) > 256:  # too many ranges for the planner: filter by bucket within their span
            return (f"{column} >= {ranges[0][0]} AND {column} < {ranges[-1][1]} "
                    f"AND {self.bucket(bits)} = ANY({_int_array(values)})")
        return "(" + " OR ".join(f"({column} >= {lo} AND {column} < {hi})" for lo, hi in ranges) + ")"

    def checksums(self, level: Level) -> Figures:
        s = self.side
        where, params = self.where, dict(self.params)
        if level.parents:
            where += " AND " + self.within(level.parent_bits, level.parents)
        # OFFSET 0 keeps the hashing in the subquery, below the Gather: parallel workers hash the rows,
        # the leader only adds up per bucket
        sql = (f"SELECT bucket, count(*), sum(h) FROM (SELECT {self.bucket(level.bits)} AS bucket, "
               f"{s.row_hash} AS h FROM {s.source} WHERE {where} OFFSET 0) AS hashed GROUP BY 1")
        return {int(b): (int(n), int(h)) for b, n, h in self.conn.execute(text(sql), params)}

    def rows(self, leaves: Sequence[Leaf] | None) -> Iterator[tuple[Key, Sequence[str | None]]]:
        s = self.side
        where, params = self.where, dict(self.params)
        if leaves is not None:
            by_bits: dict[int, list[int]] = {}
            for leaf in leaves:
                by_bits.setdefault(leaf.bits, []).append(leaf.value)
            terms = [self.within(bits, values) for bits, values in sorted(by_bits.items())]
            where += " AND (" + " OR ".join(terms) + ")"
        keys = len(s.key_exprs)
        sql = f"SELECT {', '.join([*s._typed_keys(), *s.value_exprs])} FROM {s.source} WHERE {where}"
        if leaves is not None:  # a few rows: unordered (a parallel scan may serve it), sorted here
            rows = [(tuple(row[:keys]), tuple(row[keys:])) for row in self.conn.execute(text(sql), params)]
            rows.sort(key=lambda item: item[0])
            yield from rows
            return
        # the whole chunk: streamed in key order (text keys in byte order on both sides, as Python orders str)
        result = self.conn.execution_options(yield_per=s.config.fetch_size).execute(
            text(f"{sql} ORDER BY {s.order_by()}"), params)
        for row in result:
            yield tuple(row[:keys]), tuple(row[keys:])


def _int_array(values: Sequence[int]) -> str:
    """A constant array literal: PostgreSQL hashes a constant `= ANY(...)` list once, not per row."""
    return "'{" + ",".join(str(int(v)) for v in values) + "}'::bigint[]"


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
