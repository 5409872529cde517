"""A SQL side of a reconciliation job (PostgreSQL, MariaDB or MySQL, SQLite; through SQLAlchemy): checksums
and rows, read-only.

Every value is normalised inside the database to the canonical text of normalise.py, so that checksums of
rows that are equal after normalisation are equal; what each database computes is in sql_dialects.py.
Sessions are read-only and each chunk is read in one snapshot (REPEATABLE READ, or SQLite's transaction).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from strangler.reconcile.bisect import Figures, Leaf, Level
from strangler.reconcile.config import SqlSide
from strangler.reconcile.drift import Key
from strangler.reconcile.errors import SideUnavailable
from strangler.reconcile.normalise import ColumnType, FieldKind
from strangler.reconcile.sql_dialects import dialect_for

__all__ = ["Chunk", "SqlChunkSession", "SqlStateSide"]
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


class SqlStateSide:
    """One SQL side: describes its columns, plans chunks, and opens a session per chunk."""

    def __init__(self, config: SqlSide, engine: Engine | None = None, *, portable: bool = False) -> None:
        """`portable`: hash as every database can (a job whose other side is not PostgreSQL)."""
        self.config = config
        url = make_url(config.url)
        self.dialect = dialect_for(url.get_backend_name(), portable)
        self.engine = engine or self.dialect.create_engine(url, config)
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
        quoted = [self._quote(c) for c in columns]
        try:
            with self.engine.connect() as conn:
                result = conn.execute(text(f"SELECT {', '.join(quoted)} FROM {self.source} LIMIT 0"))
                description = list(result.cursor.description) if result.cursor is not None else []
                result.close()
                types = self.dialect.column_types(conn, self.source, self.config.table, quoted, description)
        except SQLAlchemyError as exc:
            raise SideUnavailable(f"{self._where()}: {exc.__class__.__name__}: {_first_line(exc)}") from exc
        return dict(zip(columns, types, strict=True))

    def bind(self, key: Sequence[FieldKind], columns: Sequence[str], kinds: Sequence[FieldKind]) -> None:
        """Fixes the canonical expressions of the key and of the compared columns (in the job's order)."""
        canonical = self.dialect.canonical
        self.key_integer = [k.type == "integer" for k in key]
        self.key_exprs = [canonical(k, self._quote(c)) for k, c in zip(key, self.config.key, strict=True)]
        self.value_exprs = [canonical(k, self._quote(c)) for k, c in zip(kinds, columns, strict=True)]

    @property
    def key_hash(self) -> str:
        integer = self._quote(self.config.key[0]) if len(self.key_exprs) == 1 and self.key_integer[0] else None
        return self.dialect.key_hash(self.key_exprs, integer)

    @property
    def row_hash(self) -> str:
        return self.dialect.row_hash([*self.key_exprs, *self.value_exprs])

    def integer_bounds(self) -> tuple[int, int, int] | None:
        """(min, max, estimated rows) of a single integer key; None for other keys or an empty side."""
        if len(self.key_exprs) != 1 or not self.key_integer[0]:
            return None
        column = self._quote(self.config.key[0])
        bigint = self.dialect.bigint
        row = self._one(f"SELECT {bigint(f'min({column})')}, {bigint(f'max({column})')} FROM {self.source}")
        if row is None or row[0] is None:
            return None
        return int(row[0]), int(row[1]), self.estimate_rows()

    def sample_keys(self, rows: int, wanted: int) -> list[int]:
        """About `wanted` values of a single integer key, from a block sample of a table (empty for a query)."""
        if self.config.table is None or rows <= 0 or self.dialect.name != "postgresql":
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
        if self.config.table is not None and self.dialect.name == "postgresql":
            row = self._one("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(:name)", name=self.source)
            if row is not None and row[0] is not None and row[0] > 0:
                return int(row[0])
        row = self._one(f"SELECT count(*) FROM {self.source}")
        return int(row[0]) if row is not None else 0

    def whole_checksum(self) -> tuple[int, int]:
        """Count and sum of row hashes over the whole side (the floor a comparison is measured against)."""
        row = self._one(f"SELECT count(*), {self.dialect.sum(self.row_hash)} FROM {self.source}")
        return (int(row[0]), int(row[1] or 0)) if row is not None else (0, 0)

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
                conn = conn.execution_options(isolation_level=self.dialect.isolation)
                with conn.begin():
                    self.dialect.begin_chunk(conn)
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
        return ", ".join(e if integer else self.dialect.binary_order(e)
                         for e, integer in zip(self._typed_keys(), self.key_integer, strict=True))

    def _typed_keys(self) -> list[str]:
        return [self.dialect.bigint(self._quote(c)) if integer else e
                for c, e, integer in zip(self.config.key, self.key_exprs, self.key_integer, strict=True)]

    def _where(self) -> str:
        url = make_url(self.config.url)
        if self.dialect.name == "sqlite":
            return f"{url.database} {self.config.table or 'query'}"
        port = url.port or {"postgresql": 5432, "mariadb": 3306}.get(self.dialect.name)
        return f"{url.host or 'localhost'}:{port}/{url.database} {self.config.table or 'query'}"

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
        self.offset = f"({side.dialect.bigint(side._quote(side.config.key[0]))} - {int(chunk.base or 0)})"

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
            return self.side.dialect.in_list(self.bucket(bits), values)
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
                    f"AND {self.side.dialect.in_list(self.bucket(bits), values)}")
        return "(" + " OR ".join(f"({column} >= {lo} AND {column} < {hi})" for lo, hi in ranges) + ")"

    def checksums(self, level: Level) -> Figures:
        s = self.side
        where, params = self.where, dict(self.params)
        if level.parents:
            where += " AND " + self.within(level.parent_bits, level.parents)
        # on PostgreSQL, OFFSET 0 keeps the hashing in the subquery, below the Gather: parallel workers hash
        # the rows, the leader only adds up per bucket
        sql = (f"SELECT bucket, count(*), {s.dialect.sum('h')} FROM (SELECT {self.bucket(level.bits)} AS bucket, "
               f"{s.row_hash} AS h FROM {s.source} WHERE {where} {s.dialect.hashed_subquery}) AS hashed "
               f"GROUP BY bucket")
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


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
