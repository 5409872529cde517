"""A decoder of PostgreSQL's logical replication protocol as the built-in `pgoutput` plugin writes it.

Protocol version 1 (PostgreSQL 10+): Begin, Commit, Origin, Relation, Type, Insert, Update, Delete, Truncate,
and logical decoding Messages. Values arrive in text format; `UNCHANGED` stands for an unchanged TOAST value
the server did not send. Pure: bytes in, frozen messages out.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from strangler.cdc.errors import SourceError

# microseconds between 1970-01-01 and 2000-01-01, PostgreSQL's epoch
PG_EPOCH_US: Final = 946_684_800_000_000


class _Unchanged:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = _Unchanged()
Value = bytes | None | _Unchanged

_U16 = struct.Struct(">H").unpack_from
_I32 = struct.Struct(">i").unpack_from
_U32 = struct.Struct(">I").unpack_from
_U64 = struct.Struct(">Q").unpack_from
_BEGIN = struct.Struct(">QqI").unpack_from
_COMMIT = struct.Struct(">BQQq").unpack_from
_TRUNCATE = struct.Struct(">IB").unpack_from


class DecodeError(SourceError):
    """The replication stream held bytes that are not a pgoutput message."""


@dataclass(frozen=True, slots=True)
class Begin:
    final_lsn: int  # the LSN of the transaction's commit record
    commit_time_us: int  # microseconds since the Unix epoch
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    flags: int
    commit_lsn: int
    end_lsn: int  # confirming this position tells the server the transaction is done with
    commit_time_us: int


@dataclass(frozen=True, slots=True)
class Origin:
    lsn: int
    name: str


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type_oid: int
    type_modifier: int
    part_of_identity: bool


@dataclass(frozen=True, slots=True)
class Relation:
    relation_id: int
    namespace: str
    name: str
    replica_identity: str  # d(efault), n(othing), f(ull), i(ndex)
    columns: tuple[Column, ...]


@dataclass(frozen=True, slots=True)
class TypeInfo:
    type_oid: int
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class Insert:
    relation_id: int
    new: list[Value]


@dataclass(frozen=True, slots=True)
class Update:
    relation_id: int
    old: list[Value] | None  # the old key ('K') or the whole old row ('O'), when the server sent one
    old_is_key: bool
    new: list[Value]


@dataclass(frozen=True, slots=True)
class Delete:
    relation_id: int
    old: list[Value]
    old_is_key: bool


@dataclass(frozen=True, slots=True)
class Truncate:
    relation_ids: tuple[int, ...]
    cascade: bool
    restart_identity: bool


@dataclass(frozen=True, slots=True)
class LogicalMessage:
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


Message = Begin | Commit | Origin | Relation | TypeInfo | Insert | Update | Delete | Truncate | LogicalMessage


def decode(data: bytes) -> Message:
    """One pgoutput message; DecodeError if the bytes are not one."""
    try:
        kind = data[0]
        if kind == 73:  # I
            new, _ = _tuple(data, 6, data[5])
            return Insert(_U32(data, 1)[0], new)
        if kind == 85:  # U
            return _update(data)
        if kind == 68:  # D
            marker = data[5]
            old, _ = _tuple(data, 6, marker)
            return Delete(_U32(data, 1)[0], old, marker == 75)
        if kind == 66:  # B
            final_lsn, ts, xid = _BEGIN(data, 1)
            return Begin(final_lsn, ts + PG_EPOCH_US, xid)
        if kind == 67:  # C
            flags, commit_lsn, end_lsn, ts = _COMMIT(data, 1)
            return Commit(flags, commit_lsn, end_lsn, ts + PG_EPOCH_US)
        if kind == 82:  # R
            return _relation(data)
        if kind == 89:  # Y
            oid = _U32(data, 1)[0]
            namespace, pos = _string(data, 5)
            name, _ = _string(data, pos)
            return TypeInfo(oid, namespace, name)
        if kind == 84:  # T
            count, options = _TRUNCATE(data, 1)
            ids = struct.unpack_from(f">{count}I", data, 6)
            return Truncate(tuple(ids), bool(options & 1), bool(options & 2))
        if kind == 79:  # O
            lsn = _U64(data, 1)[0]
            name, _ = _string(data, 9)
            return Origin(lsn, name)
        if kind == 77:  # M
            flags = data[1]
            lsn = _U64(data, 2)[0]
            prefix, pos = _string(data, 10)
            length = _U32(data, pos)[0]
            content = bytes(data[pos + 4 : pos + 4 + length])
            if len(content) != length:
                raise IndexError("message content is cut short")
            return LogicalMessage(bool(flags & 1), lsn, prefix, content)
    except (IndexError, ValueError, struct.error) as exc:  # ValueError: a missing NUL, bad UTF-8
        raise DecodeError(f"malformed pgoutput message {bytes(data[:1])!r}: {exc}") from None
    raise DecodeError(f"unknown pgoutput message type {bytes(data[:1])!r}")


def _update(data: bytes) -> Update:
    relation_id = _U32(data, 1)[0]
    marker = data[5]
    old: list[Value] | None = None
    pos = 6
    if marker in (75, 79):  # K, O
        old, pos = _tuple(data, 6, marker)
        marker = data[pos]
        pos += 1
    if marker != 78:
        raise IndexError(f"expected the new tuple ('N'), got {bytes([marker])!r}")
    new, _ = _tuple(data, pos, marker)
    return Update(relation_id, old, old is not None and data[5] == 75, new)


def _tuple(data: bytes, pos: int, marker: int) -> tuple[list[Value], int]:
    if marker not in (78, 75, 79):  # N, K, O
        raise IndexError(f"expected a tuple marker N, K or O, got {bytes([marker])!r}")
    count = _U16(data, pos)[0]
    pos += 2
    values: list[Value] = []
    append = values.append
    for _ in range(count):
        kind = data[pos]
        if kind == 116 or kind == 98:  # t(ext), b(inary, protocol 2+)
            length = _I32(data, pos + 1)[0]
            start = pos + 5
            pos = start + length
            if pos > len(data):
                raise IndexError("a column value is cut short")
            append(data[start:pos])
        elif kind == 110:  # n(ull)
            append(None)
            pos += 1
        elif kind == 117:  # u(nchanged TOAST)
            append(UNCHANGED)
            pos += 1
        else:
            raise IndexError(f"unknown column kind {bytes([kind])!r}")
    return values, pos


def _relation(data: bytes) -> Relation:
    relation_id = _U32(data, 1)[0]
    namespace, pos = _string(data, 5)
    name, pos = _string(data, pos)
    identity = chr(data[pos])
    count = _U16(data, pos + 1)[0]
    pos += 3
    columns = []
    for _ in range(count):
        flags = data[pos]
        column_name, pos = _string(data, pos + 1)
        type_oid, modifier = struct.unpack_from(">Ii", data, pos)
        pos += 8
        columns.append(Column(column_name, type_oid, modifier, bool(flags & 1)))
    return Relation(relation_id, namespace or "pg_catalog", name, identity, tuple(columns))


def _string(data: bytes, pos: int) -> tuple[str, int]:
    end = data.index(0, pos)
    return bytes(data[pos:end]).decode("utf-8"), end + 1
