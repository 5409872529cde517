"""Column values as Debezium's PostgreSQL connector renders them in JSON, from PostgreSQL's text output.

The replication and snapshot sessions run with `DateStyle=ISO`, `TimeZone=UTC`, `IntervalStyle=postgres`,
`bytea_output=hex` and `extra_float_digits=3`, so the text this module reads is always in those formats.
Temporal precision follows Debezium's default `time.precision.mode=adaptive`: a column declared with 0-3
fractional digits is rendered in milliseconds, otherwise in microseconds.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from strangler.cdc.pgtime import (
    date_days,
    interval_micros,
    time_micros,
    timestamp_micros,
    timestamptz_iso,
    timetz_iso,
)

DecimalMode = Literal["precise", "string", "double"]
UNAVAILABLE = "__debezium_unavailable_value"
_UNAVAILABLE_BYTES = base64.b64encode(UNAVAILABLE.encode()).decode()


class UnsupportedType(ValueError):
    """A type with no rendering; the caller names the column."""


@dataclass(frozen=True, slots=True)
class PgType:
    """A column's type, with domains already resolved to their base type."""

    oid: int
    name: str
    kind: Literal["base", "enum", "array"] = "base"
    element: PgType | None = None
    enum_values: tuple[str, ...] = ()
    builtin: bool = True  # defined in pg_catalog (oid below 16384), so its name means what it says
    modifier: int = -1  # a domain's type modifier, used when the column has none of its own


@dataclass(frozen=True, slots=True)
class Renderer:
    render: Callable[[bytes], Any]
    schema: dict[str, Any]  # the Kafka Connect schema of the value, without "field" and "optional"
    unavailable: Any = UNAVAILABLE  # what an unchanged TOAST value becomes
    orderable: bool = False  # Python's order of rendered values is PostgreSQL's (for resumable snapshots)
    extra: dict[str, Any] = field(default_factory=dict)


def _named(kind: str, name: str, **parameters: str) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": kind, "name": name, "version": 1}
    if parameters:
        schema["parameters"] = parameters
    return schema


def _text(data: bytes) -> str:
    return data.decode()


def _bool(data: bytes) -> bool:
    return data == b"t"


_SPECIAL_FLOATS = {b"NaN": "NaN", b"Infinity": "Infinity", b"-Infinity": "-Infinity"}


def _float(data: bytes) -> float | str:
    special = _SPECIAL_FLOATS.get(data)
    return special if special is not None else float(data)


def _bytea(data: bytes) -> str:
    return base64.b64encode(bytes.fromhex(data[2:].decode())).decode()


def _string_schema(name: str) -> dict[str, Any]:
    return {"type": "string"} if not name else _named("string", name)


_PLAIN_STRINGS = {
    "text": "", "varchar": "", "bpchar": "", "char": "", "name": "", "inet": "", "cidr": "", "macaddr": "",
    "macaddr8": "", "tsvector": "", "int4range": "", "int8range": "", "numrange": "", "tsrange": "",
    "tstzrange": "", "daterange": "", "uuid": "io.debezium.data.Uuid", "json": "io.debezium.data.Json",
    "jsonb": "io.debezium.data.Json", "xml": "io.debezium.data.Xml",
}
_EXTENSION_STRINGS = {"citext": "", "ltree": "io.debezium.data.Ltree"}
_INTEGERS = {"int2": "int16", "int4": "int32", "int8": "int64", "oid": "int64"}
# Debezium maps these array element types to nothing (DBZ-459); so do we, loudly
_NO_ARRAY_OF = {"money", "name", "interval", "varbit", "xml", "point"}


def precision(modifier: int) -> int:
    """Fractional digits of a time, timestamp or interval column (6 when undeclared)."""
    return 6 if modifier < 0 else min(modifier, 6)


def renderer_for(pgtype: PgType, modifier: int, decimal_mode: DecimalMode) -> Renderer:
    """The rendering of a column of this type; UnsupportedType when there is none."""
    if pgtype.kind == "enum":
        allowed = ",".join(pgtype.enum_values)
        return Renderer(_text, _named("string", "io.debezium.data.Enum", allowed=allowed))
    if pgtype.kind == "array":
        if pgtype.element is None or (pgtype.element.builtin and pgtype.element.name in _NO_ARRAY_OF):
            raise UnsupportedType(f"arrays of {pgtype.element.name if pgtype.element else '?'} are not supported")
        element = renderer_for(pgtype.element, modifier, decimal_mode)
        render = element.render

        def render_array(data: bytes) -> list[Any]:
            return _map_array(parse_array(data.decode()), render)

        return Renderer(render_array, {"type": "array", "items": {**element.schema, "optional": True}},
                        unavailable=[element.unavailable])
    name = pgtype.name
    if not pgtype.builtin:
        if name in _EXTENSION_STRINGS:
            return Renderer(_text, _string_schema(_EXTENSION_STRINGS[name]))
        raise UnsupportedType(f"type {name!r} is not supported")
    if name in _INTEGERS:
        return Renderer(int, {"type": _INTEGERS[name]}, orderable=True)
    if name in _PLAIN_STRINGS:
        orderable = name in ("uuid", "text", "varchar")
        return Renderer(_text, _string_schema(_PLAIN_STRINGS[name]), orderable=orderable)
    if name == "bool":
        return Renderer(_bool, {"type": "boolean"})
    if name in ("float4", "float8"):
        return Renderer(_float, {"type": "float" if name == "float4" else "double"})
    if name == "bytea":
        return Renderer(_bytea, {"type": "bytes"}, unavailable=_UNAVAILABLE_BYTES)
    if name == "numeric":
        from strangler.cdc.decimals import numeric_renderer

        render, schema = numeric_renderer(modifier, decimal_mode)
        return Renderer(render, schema)
    if name == "date":
        return Renderer(date_days, _named("int32", "io.debezium.time.Date"), orderable=True)
    if name in ("time", "timestamp"):
        digits = precision(modifier)
        millis = digits <= 3
        parse = time_micros if name == "time" else timestamp_micros
        unit = ("Time", "MicroTime") if name == "time" else ("Timestamp", "MicroTimestamp")
        kind = "int32" if name == "time" and millis else "int64"
        schema = _named(kind, f"io.debezium.time.{unit[0] if millis else unit[1]}")
        if millis:
            def render_millis(data: bytes, parse: Callable[[bytes], int] = parse) -> int:
                return parse(data) // 1000

            return Renderer(render_millis, schema, orderable=True)
        return Renderer(parse, schema, orderable=True)
    if name == "timestamptz":
        digits = precision(modifier)
        return Renderer(lambda data: timestamptz_iso(data, digits), _named("string", "io.debezium.time.ZonedTimestamp"))
    if name == "timetz":
        return Renderer(timetz_iso, _named("string", "io.debezium.time.ZonedTime"))
    if name == "interval":
        return Renderer(interval_micros, _named("int64", "io.debezium.time.MicroDuration"))
    raise UnsupportedType(f"type {name!r} is not supported")


# -- arrays ---------------------------------------------------------------------------------------------

_BOUNDS = re.compile(r"^(\[-?\d+:-?\d+\])+=")


def parse_array(text: str) -> list[Any]:
    """PostgreSQL's array text form -> nested lists of str (None for NULL); ValueError if malformed."""
    text = _BOUNDS.sub("", text, count=1)
    if not text.startswith("{"):
        raise ValueError(f"not an array literal: {text[:40]!r}")
    stack: list[list[Any]] = []
    result: list[Any] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "{":
            new: list[Any] = []
            if stack:
                stack[-1].append(new)
            else:
                result = new
            stack.append(new)
            i += 1
        elif c == "}":
            stack.pop()
            i += 1
        elif c == ",":
            i += 1
        elif c == '"':
            i += 1
            chars = []
            while text[i] != '"':
                if text[i] == "\\":
                    i += 1
                chars.append(text[i])
                i += 1
            stack[-1].append("".join(chars))
            i += 1
        else:
            j = i
            while text[j] not in ",}":
                j += 1
            word = text[i:j].strip()
            stack[-1].append(None if word.upper() == "NULL" else word)
            i = j
    if stack:
        raise ValueError("unbalanced braces in an array literal")
    return result


def _map_array(items: list[Any], render: Callable[[bytes], Any]) -> list[Any]:
    return [
        None if item is None else _map_array(item, render) if isinstance(item, list) else render(item.encode())
        for item in items
    ]
