"""The per-database pieces of a SQL side that need no database: declared SQLite types, the SQLite canonical
function (normalise.canonical itself), the portable hash and the choice of dialect."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from strangler.reconcile.errors import UnsupportedSide
from strangler.reconcile.normalise import ColumnType, FieldKind, canonical
from strangler.reconcile.sql_dialects import (
    MariaDbDialect,
    PostgresDialect,
    SqliteDialect,
    _sqlite_canonical,
    _sqlite_declared,
    dialect_for,
    portable_hash,
)


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        ("INTEGER", ColumnType("integer", 0)),
        ("bigint", ColumnType("integer", 0)),
        ("VARCHAR(20)", ColumnType("text")),
        ("TEXT", ColumnType("text")),
        ("DECIMAL(12,2)", ColumnType("decimal", 2)),
        ("NUMERIC(16, 4)", ColumnType("decimal", 4)),
        ("NUMERIC", ColumnType("decimal", None)),
        ("REAL", ColumnType("float")),
        ("DOUBLE PRECISION", ColumnType("float")),
        ("BOOLEAN", ColumnType("boolean")),
        ("TIMESTAMP", ColumnType("timestamp")),
        ("DATETIME", ColumnType("timestamp")),
        ("DATE", ColumnType("date")),
        ("", ColumnType("text")),
        ("BLOB", ColumnType("text")),
    ],
)
def test_sqlite_declared_types_follow_its_affinity_rules(declared: str, expected: ColumnType) -> None:
    assert _sqlite_declared(declared) == expected


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        (FieldKind("decimal", 2), 10.5),
        (FieldKind("decimal", 2), "10.505"),
        (FieldKind("integer", 0), 42),
        (FieldKind("boolean"), 1),
        (FieldKind("text", trim=True, casefold=True), "  Maria \t"),
        (FieldKind("timestamp", precision="ms"), "2024-01-01 10:00:00.123456"),
        (FieldKind("date"), "2024-02-29"),
    ],
)
def test_the_sqlite_function_is_normalise_canonical(kind: FieldKind, value: object) -> None:
    spec = SqliteDialect(True).canonical(kind, '"c"')
    inner = spec.split("'")[1]
    berlin = dt.timezone(dt.timedelta(hours=1))
    assert _sqlite_canonical(berlin, inner, value) == canonical(kind, value, berlin)


def test_an_unreadable_sqlite_value_never_equals_a_canonical_one() -> None:
    assert _sqlite_canonical(dt.UTC, "integer|0|us|0|0", "forty-two") == "!forty-two"
    assert _sqlite_canonical(dt.UTC, "integer|0|us|0|0", None) is None


def test_the_portable_hash_is_the_first_sixty_bits_of_md5() -> None:
    digest = hashlib.md5("ä".encode()).hexdigest()
    assert portable_hash("ä") == int(digest[:15], 16) < 2**60
    assert portable_hash(None) is None


@pytest.mark.parametrize(
    ("backend", "portable", "kind", "hashing"),
    [
        ("postgresql", False, PostgresDialect, "hashtextextended"),
        ("postgresql", True, PostgresDialect, "md5"),
        ("mysql", False, MariaDbDialect, "MD5"),
        ("mariadb", False, MariaDbDialect, "MD5"),
        ("sqlite", False, SqliteDialect, "strangler_hash"),
    ],
)
def test_postgresql_hashes_natively_only_when_both_sides_are_postgresql(
    backend: str, portable: bool, kind: type, hashing: str
) -> None:
    dialect = dialect_for(backend, portable)
    assert isinstance(dialect, kind)
    assert hashing in dialect.row_hash(["a", "b"])


def test_other_databases_are_refused_by_name() -> None:
    with pytest.raises(UnsupportedSide, match="mssql sides are not supported"):
        dialect_for("mssql", True)
