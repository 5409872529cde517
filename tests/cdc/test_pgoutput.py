from __future__ import annotations

import pytest

from strangler.cdc.pgoutput import (
    UNCHANGED,
    Begin,
    Column,
    Commit,
    DecodeError,
    Delete,
    Insert,
    LogicalMessage,
    Origin,
    Relation,
    Truncate,
    TypeInfo,
    Update,
    decode,
)
from tests.cdc import pgwire

COMMIT_US = 1_700_000_000_123_456


def test_begin() -> None:
    assert decode(pgwire.begin(0x16B3748, COMMIT_US, 731)) == Begin(0x16B3748, COMMIT_US, 731)


def test_commit() -> None:
    assert decode(pgwire.commit(100, 180, COMMIT_US)) == Commit(0, 100, 180, COMMIT_US)


def test_relation_with_columns_and_identity() -> None:
    data = pgwire.relation(16385, "crm", "customers", "f", [("id", 23, -1, True), ("price", 1700, 655366, False)])
    assert decode(data) == Relation(
        16385, "crm", "customers", "f", (Column("id", 23, -1, True), Column("price", 1700, 655366, False))
    )


def test_relation_in_pg_catalog_has_an_empty_namespace() -> None:
    assert decode(pgwire.relation(1, "", "t", "d", [])).namespace == "pg_catalog"  # type: ignore[union-attr]


def test_type() -> None:
    assert decode(pgwire.type_message(16390, "public", "mood")) == TypeInfo(16390, "public", "mood")


@pytest.mark.parametrize(
    "values",
    [[b"1", b"ann"], [b"1", None], [b"", UNCHANGED, None], [], [b"x" * 100_000], ["é".encode() * 3]],
)
def test_insert_values_null_unchanged_and_empty(values: list[object]) -> None:
    assert decode(pgwire.insert(7, values)) == Insert(7, values)  # type: ignore[arg-type]


def test_update_without_old_tuple() -> None:
    assert decode(pgwire.update(7, [b"1", b"b"])) == Update(7, None, False, [b"1", b"b"])


def test_update_with_old_key() -> None:
    message = decode(pgwire.update(7, [b"2", b"b"], [b"1", None], old_kind=b"K"))
    assert message == Update(7, [b"1", None], True, [b"2", b"b"])


def test_update_with_old_row() -> None:
    message = decode(pgwire.update(7, [b"1", UNCHANGED], [b"1", b"a"], old_kind=b"O"))
    assert message == Update(7, [b"1", b"a"], False, [b"1", UNCHANGED])


@pytest.mark.parametrize("kind,is_key", [(b"K", True), (b"O", False)])
def test_delete(kind: bytes, is_key: bool) -> None:
    assert decode(pgwire.delete(9, [b"5", None], kind)) == Delete(9, [b"5", None], is_key)


@pytest.mark.parametrize("options,cascade,restart", [(0, False, False), (1, True, False), (2, False, True),
                                                     (3, True, True)])
def test_truncate(options: int, cascade: bool, restart: bool) -> None:
    assert decode(pgwire.truncate([1, 2, 3], options)) == Truncate((1, 2, 3), cascade, restart)


def test_origin() -> None:
    assert decode(pgwire.origin(77, "node_a")) == Origin(77, "node_a")


def test_logical_message() -> None:
    assert decode(pgwire.logical_message(5, "app", b"\x00\x01")) == LogicalMessage(True, 5, "app", b"\x00\x01")


def test_memoryview_input_decodes_like_bytes() -> None:
    data = pgwire.insert(7, [b"1", b"x"])
    assert decode(memoryview(data)) == decode(data)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"Z123",
        pgwire.insert(7, [b"abc"])[:-1],  # value cut short
        pgwire.insert(7, [b"abc"])[:8],  # column count cut short
        b"I" + b"\0\0\0\7" + b"X" + b"\0\0",  # unknown tuple marker
        b"I\0\0\0\7N\0\1q",  # unknown column kind
        b"R\0\0\0\1crm",  # namespace without its NUL
        pgwire.begin(1, COMMIT_US, 1)[:10],
        pgwire.update(7, [b"1"], [b"1"])[:-4],
        b"U\0\0\0\7K\0\0X\0\0",  # after the old tuple, something other than N
        pgwire.logical_message(5, "app", b"abc")[:-1],
        pgwire.relation(1, "s", "t", "d", [("c\xe9", 23, -1, False)]).replace("é".encode(), b"\xff"),
    ],
)
def test_malformed_messages_are_decode_errors(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data)
