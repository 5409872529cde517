"""The fast path from a pgoutput tuple to JSON: one function generated per captured table.

`tables.render_row` + `orjson.dumps` is the reference; this module produces the same JSON (compared value
for value in the tests) without building a dict per row: integers are PostgreSQL's own text (already a JSON
number), plain strings are spliced between quotes when they need no escaping, and only the other types go
through their renderer. The generated function reads the tuple in place, so nothing per column is allocated
but the value's bytes.
"""

from __future__ import annotations

import re
import struct
from binascii import b2a_base64
from collections.abc import Callable
from typing import Any

import orjson

from strangler.cdc.errors import UnrenderableValue
from strangler.cdc.pgoutput import UNCHANGED
from strangler.cdc.pgtime import timestamptz_iso
from strangler.cdc.tables import CapturedColumn, CapturedTable
from strangler.cdc.values import precision

# (key JSON or None, row JSON, position after the tuple); the row JSON is b'{"col":value,...}'
Encoder = Callable[[bytes, int], tuple[bytes | None, bytes, int]]

_RAW_NUMBER = {"int2", "int4", "int8", "oid"}
_PLAIN_TEXT = {"text", "varchar", "bpchar", "char", "name", "uuid", "json", "jsonb", "xml", "inet", "cidr",
               "macaddr", "macaddr8", "tsvector", "citext", "ltree"}
_NEEDS_ESCAPE = re.compile(rb'["\\\x00-\x1f\x7f]').search
_SPECIAL_FLOATS = {b"NaN": b'"NaN"', b"Infinity": b'"Infinity"', b"-Infinity": b'"-Infinity"'}


def _text(value: bytes) -> bytes:
    if _NEEDS_ESCAPE(value) is None:
        return b'"' + value + b'"'
    return orjson.dumps(value.decode())


def _float(value: bytes) -> bytes:
    return _SPECIAL_FLOATS.get(value, value)


def _bool(value: bytes) -> bytes:
    return b"true" if value == b"t" else b"false"


def _timestamptz(digits: int) -> Callable[[bytes], bytes]:
    def emit(value: bytes) -> bytes:
        # the session runs in UTC: "YYYY-MM-DD HH:MM:SS[.f]+00" only needs reshaping
        if value[-3:] == b"+00" and len(value) >= 22 and value[4] == 45 and value[10] == 32:
            fraction = (value[19:-3] or b".").ljust(digits + 1, b"0") if digits else b""
            return b'"' + value[:10] + b"T" + value[11:19] + fraction + b'Z"'
        return orjson.dumps(timestamptz_iso(value, digits))

    return emit


def _fixed_decimal(scale: int, slow: Callable[[bytes], Any]) -> Callable[[bytes], bytes]:
    def emit(value: bytes) -> bytes:
        # a numeric(p, s) column's text always has exactly s decimals; NaN and friends go the slow way
        try:
            unscaled = int(value.replace(b".", b""))
        except ValueError:
            return orjson.dumps(slow(value))
        bits = unscaled.bit_length() if unscaled >= 0 else (~unscaled).bit_length()
        return b'"' + b2a_base64(unscaled.to_bytes(bits // 8 + 1, "big", signed=True), newline=False) + b'"'

    return emit


def _integer(render: Callable[[bytes], int]) -> Callable[[bytes], bytes]:
    def emit(value: bytes) -> bytes:
        return b"%d" % render(value)

    return emit


def _emitter(column: CapturedColumn) -> Callable[[bytes], bytes] | None:
    """A bytes -> JSON function faster than render + dumps, for the common types; None for the others."""
    name, schema = column.type_name, column.renderer.schema
    if name == "timestamptz":
        return _timestamptz(precision(column.modifier))
    if name == "numeric" and schema.get("name") == "org.apache.kafka.connect.data.Decimal":
        return _fixed_decimal(int(schema["parameters"]["scale"]), column.renderer.render)
    if name in ("timestamp", "date", "time") and schema["type"] in ("int32", "int64"):
        return _integer(column.renderer.render)
    return None


def _inline(column: CapturedColumn, index: int, env: dict[str, Any]) -> list[str] | None:
    """Generated lines computing `v<index>` for the commonest types, without a call per value; None if the
    column's type has no inline form. The emitters above stay the fallback for the unusual forms."""
    name, schema, v = column.type_name, column.renderer.schema, f"v{index}"
    if name in _PLAIN_TEXT:
        return ["value = data[start:pos]",
                f"{v} = b'\"' + value + b'\"' if needs_escape(value) is None else dumps(value.decode())"]
    if name == "timestamptz" and (digits := precision(column.modifier)) > 0:
        env[f"emit{index}"] = _timestamptz(digits)
        return ["value = data[start:pos]",
                "if value[-3:] == b'+00' and value[10] == 32 and value[4] == 45:",
                f"    {v} = b''.join((b'\"', value[:10], b'T', value[11:19], "
                f"(value[19:-3] or b'.').ljust({digits + 1}, b'0'), b'Z\"'))",
                "else:",
                f"    {v} = emit{index}(value)"]
    if name == "numeric" and schema.get("name") == "org.apache.kafka.connect.data.Decimal":
        env[f"emit{index}"] = _fixed_decimal(int(schema["parameters"]["scale"]), column.renderer.render)
        return ["value = data[start:pos]",
                "try:",
                "    n = int(value.replace(b'.', b''))",
                f"    {v} = b''.join((b'\"', b2a_base64(n.to_bytes(((n.bit_length() if n >= 0 else "
                "(~n).bit_length()) >> 3) + 1, 'big', signed=True), newline=False), b'\"'))",
                "except ValueError:",
                f"    {v} = emit{index}(value)"]
    return None


def compile_encoder(table: CapturedTable, width: int) -> Encoder:
    """An encoder for tuples of `width` columns (the Relation's), of which `table.columns` are captured."""
    by_index = {c.index: c for c in table.columns}
    env: dict[str, Any] = {"U32": struct.Struct(">I").unpack_from, "text": _text, "float_": _float, "bool_": _bool,
                           "dumps": orjson.dumps, "fail": _fail, "table": table, "needs_escape": _NEEDS_ESCAPE,
                           "b2a_base64": b2a_base64}
    lines = ["def encode(data, pos):", "    pos += 2"]  # the column count: the Relation already told us
    for index in range(width):
        column = by_index.get(index)
        lines += [
            "    kind = data[pos]",
            "    if kind == 116:",  # t(ext): protocol 1 never sends b(inary), which we do not ask for
            "        start = pos + 5",
            "        pos = start + U32(data, pos + 1)[0]",
        ]
        if column is None:  # excluded: skip it
            lines += ["    else:", "        pos += 1"]
            continue
        name = column.type_name
        may_fail = True
        inline = _inline(column, index, env)
        if inline is not None:
            lines += ["        try:", *(f"            {line}" for line in inline), "        except ValueError as exc:",
                      f"            fail(table, {column.name!r}, exc)"]
            emit = None
        elif column.renderer.schema.get("type") in ("int16", "int32", "int64") and name in _RAW_NUMBER:
            emit, may_fail = "data[start:pos]", False
        elif name in _PLAIN_TEXT:
            emit, may_fail = "text(data[start:pos])", False
        elif name in ("float4", "float8"):
            emit, may_fail = "float_(data[start:pos])", False
        elif name == "bool":
            emit, may_fail = "bool_(data[start:pos])", False
        elif (emitter := _emitter(column)) is not None:
            env[f"emit{index}"] = emitter
            emit = f"emit{index}(data[start:pos])"
        else:
            env[f"render{index}"] = column.renderer.render
            emit = f"dumps(render{index}(data[start:pos]))"
        env[f"unavailable{index}"] = orjson.dumps(column.renderer.unavailable)
        if emit is None:
            pass
        elif may_fail:
            lines += ["        try:", f"            v{index} = {emit}", "        except ValueError as exc:",
                      f"            fail(table, {column.name!r}, exc)"]
        else:
            lines += [f"        v{index} = {emit}"]
        lines += [
            "    elif kind == 110:",
            f"        v{index} = b'null'",
            "        pos += 1",
            "    else:",
            f"        v{index} = unavailable{index}",
            "        pos += 1",
        ]
    parts = []
    for i, column in enumerate(table.columns):
        parts.append(repr((b"{" if i == 0 else b",") + orjson.dumps(column.name) + b":"))
        parts.append(f"v{column.index}")
    row = f"b''.join(({', '.join(parts)}, b'}}'))" if parts else "b'{}'"
    if table.key:
        index_of = {c.name: c.index for c in table.columns}
        key_parts = []
        for i, name in enumerate(table.key):
            key_parts.append(repr((b"{" if i == 0 else b",") + orjson.dumps(name) + b":"))
            key_parts.append(f"v{index_of[name]}")
        key = f"b''.join(({', '.join(key_parts)}, b'}}'))"
    else:
        key = "None"
    lines.append(f"    return {key}, {row}, pos")
    namespace: dict[str, Any] = {}
    exec(compile("\n".join(lines), f"<encoder {table.full_name}>", "exec"), env, namespace)  # noqa: S102
    return namespace["encode"]  # type: ignore[no-any-return]


def _fail(table: CapturedTable, column: str, exc: Exception) -> None:
    raise UnrenderableValue(table.full_name, column, str(exc)) from None


def null_row(table: CapturedTable) -> bytes:
    """The row JSON with every column null."""
    return orjson.dumps({c.name: None for c in table.columns})


__all__ = ["UNCHANGED", "Encoder", "compile_encoder", "null_row"]
