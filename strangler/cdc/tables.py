"""Which tables and columns are captured, and how each captured column is rendered.

Debezium's include and exclude lists are regular expressions matched, case-insensitively, against the whole
`schema.table` (or `schema.table.column`); so are ours.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from strangler.cdc.errors import UnmappableColumn, UnrenderableValue
from strangler.cdc.pgoutput import UNCHANGED, Value
from strangler.cdc.values import DecimalMode, PgType, Renderer, UnsupportedType, renderer_for


@dataclass(frozen=True, slots=True)
class ColumnFacts:
    """A column as the catalog (or a Relation message) describes it."""

    name: str
    type_oid: int
    modifier: int = -1
    optional: bool = True


@dataclass(frozen=True, slots=True)
class CapturedColumn:
    name: str
    index: int  # position in the row as the source sends it
    type_name: str
    renderer: Renderer
    optional: bool
    modifier: int = -1


@dataclass(frozen=True, slots=True)
class CapturedTable:
    table_id: int
    schema: str
    name: str
    topic: str
    columns: tuple[CapturedColumn, ...]
    key: tuple[str, ...]  # the primary key's columns; empty: events have a null key
    replica_identity: str = "d"
    # (name, index, render, unavailable) per column: the row-rendering loop reads this
    plan: tuple[tuple[str, int, Callable[[bytes], Any], Any], ...] = ()
    key_orderable: bool = False

    @property
    def full_name(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class CaptureRules:
    topic_prefix: str
    table_include: Sequence[str] = ()
    table_exclude: Sequence[str] = ()
    column_exclude: Sequence[str] = ()
    decimal_mode: DecimalMode = "precise"

    def __post_init__(self) -> None:
        object.__setattr__(self, "_include", [re.compile(p, re.IGNORECASE) for p in self.table_include])
        object.__setattr__(self, "_exclude", [re.compile(p, re.IGNORECASE) for p in self.table_exclude])
        object.__setattr__(self, "_columns", [re.compile(p, re.IGNORECASE) for p in self.column_exclude])

    def captures(self, schema: str, table: str) -> bool:
        full = f"{schema}.{table}"
        include: list[re.Pattern[str]] = self._include  # type: ignore[attr-defined]
        exclude: list[re.Pattern[str]] = self._exclude  # type: ignore[attr-defined]
        if include and not any(p.fullmatch(full) for p in include):
            return False
        return not any(p.fullmatch(full) for p in exclude)

    def excludes_column(self, schema: str, table: str, column: str) -> bool:
        full = f"{schema}.{table}.{column}"
        return any(p.fullmatch(full) for p in self._columns)  # type: ignore[attr-defined]


def capture_table(
    table_id: int,
    schema: str,
    name: str,
    columns: Sequence[ColumnFacts],
    primary_key: Sequence[str],
    types: Mapping[int, PgType],
    rules: CaptureRules,
    replica_identity: str = "d",
    c_ordered: frozenset[str] = frozenset(),
) -> CapturedTable:
    """The captured shape of a table; UnmappableColumn names the first column that cannot be rendered."""
    captured = []
    for index, column in enumerate(columns):
        if rules.excludes_column(schema, name, column.name):
            continue
        pgtype = types.get(column.type_oid)
        if pgtype is None:
            raise UnmappableColumn(f"{schema}.{name}", column.name, f"oid {column.type_oid}", "unknown type")
        modifier = column.modifier if column.modifier >= 0 else pgtype.modifier
        try:
            renderer = renderer_for(pgtype, modifier, rules.decimal_mode)
        except UnsupportedType as exc:
            raise UnmappableColumn(f"{schema}.{name}", column.name, pgtype.name, str(exc)) from None
        captured.append(CapturedColumn(column.name, index, pgtype.name, renderer, column.optional, modifier))
    names = {c.name for c in captured}
    missing = [k for k in primary_key if k not in names]
    if missing:
        raise UnmappableColumn(f"{schema}.{name}", missing[0], "primary key", "a key column cannot be excluded")
    plan = tuple((c.name, c.index, c.renderer.render, c.renderer.unavailable) for c in captured)
    by_name = {c.name: c for c in captured}
    return CapturedTable(
        table_id=table_id,
        schema=schema,
        name=name,
        topic=f"{rules.topic_prefix}.{schema}.{name}",
        columns=tuple(captured),
        key=tuple(primary_key),
        replica_identity=replica_identity,
        plan=plan,
        key_orderable=bool(primary_key) and all(_orders_like_python(by_name[k], c_ordered) for k in primary_key),
    )


def _orders_like_python(column: CapturedColumn, c_ordered: frozenset[str]) -> bool:
    if not column.renderer.orderable:
        return False
    return column.type_name not in ("text", "varchar") or column.name in c_ordered


def render_row(table: CapturedTable, values: Sequence[Value]) -> dict[str, Any]:
    """A row as Debezium renders it: column name -> JSON value, unchanged TOAST as the placeholder."""
    row: dict[str, Any] = {}
    try:
        for name, index, render, unavailable in table.plan:
            value = values[index]
            if value is None:
                row[name] = None
            elif value is UNCHANGED:
                row[name] = unavailable
            else:
                row[name] = render(value)  # type: ignore[arg-type]
    except (ValueError, IndexError) as exc:
        raise UnrenderableValue(table.full_name, _failing_column(table, values), str(exc)) from None
    return row


def _failing_column(table: CapturedTable, values: Sequence[Value]) -> str:
    for name, index, render, _ in table.plan:
        if index >= len(values):
            return name
        value = values[index]
        if value is None or value is UNCHANGED:
            continue
        try:
            render(value)  # type: ignore[arg-type]
        except ValueError:
            return name
    return "?"
