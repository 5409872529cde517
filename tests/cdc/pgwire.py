"""Builders of pgoutput protocol-1 messages, written from the protocol documentation, for decoder tests."""

from __future__ import annotations

import struct
from collections.abc import Sequence

from strangler.cdc.pgoutput import PG_EPOCH_US, UNCHANGED

Cell = bytes | None | object


def _string(text: str) -> bytes:
    return text.encode() + b"\0"


def tuple_data(values: Sequence[Cell]) -> bytes:
    out = struct.pack(">H", len(values))
    for value in values:
        if value is None:
            out += b"n"
        elif value is UNCHANGED:
            out += b"u"
        else:
            assert isinstance(value, bytes)
            out += b"t" + struct.pack(">i", len(value)) + value
    return out


def begin(final_lsn: int, commit_us: int, xid: int) -> bytes:
    return b"B" + struct.pack(">QqI", final_lsn, commit_us - PG_EPOCH_US, xid)


def commit(commit_lsn: int, end_lsn: int, commit_us: int) -> bytes:
    return b"C" + struct.pack(">BQQq", 0, commit_lsn, end_lsn, commit_us - PG_EPOCH_US)


def relation(rel_id: int, namespace: str, name: str, identity: str,
             columns: Sequence[tuple[str, int, int, bool]]) -> bytes:
    out = b"R" + struct.pack(">I", rel_id) + _string(namespace) + _string(name) + identity.encode()
    out += struct.pack(">H", len(columns))
    for col_name, oid, modifier, key in columns:
        out += bytes([1 if key else 0]) + _string(col_name) + struct.pack(">Ii", oid, modifier)
    return out


def type_message(oid: int, namespace: str, name: str) -> bytes:
    return b"Y" + struct.pack(">I", oid) + _string(namespace) + _string(name)


def insert(rel_id: int, values: Sequence[Cell]) -> bytes:
    return b"I" + struct.pack(">I", rel_id) + b"N" + tuple_data(values)


def update(rel_id: int, new: Sequence[Cell], old: Sequence[Cell] | None = None, old_kind: bytes = b"O") -> bytes:
    out = b"U" + struct.pack(">I", rel_id)
    if old is not None:
        out += old_kind + tuple_data(old)
    return out + b"N" + tuple_data(new)


def delete(rel_id: int, old: Sequence[Cell], old_kind: bytes = b"K") -> bytes:
    return b"D" + struct.pack(">I", rel_id) + old_kind + tuple_data(old)


def truncate(rel_ids: Sequence[int], options: int = 0) -> bytes:
    return b"T" + struct.pack(">IB", len(rel_ids), options) + struct.pack(f">{len(rel_ids)}I", *rel_ids)


def origin(lsn: int, name: str) -> bytes:
    return b"O" + struct.pack(">Q", lsn) + _string(name)


def logical_message(lsn: int, prefix: str, content: bytes, transactional: bool = True) -> bytes:
    return b"M" + bytes([1 if transactional else 0]) + struct.pack(">Q", lsn) + _string(prefix) + \
        struct.pack(">I", len(content)) + content
