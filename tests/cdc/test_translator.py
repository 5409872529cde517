from __future__ import annotations

from typing import Any

import orjson
import pytest

from strangler.cdc.pgoutput import UNCHANGED
from strangler.cdc.ports import Checkpoint
from strangler.cdc.translator import ChangeTranslator, SnapshotCoverage, StreamPosition
from strangler.cdc.values import UNAVAILABLE
from tests.cdc import pgwire
from tests.cdc.fixtures import describe, envelope

REL = 16385
COLUMNS = [("id", 23, -1, True), ("name", 25, -1, False), ("secret", 25, -1, False)]
T0 = 1_700_000_000_000_000


class Stream:
    """Feeds pgwire bytes through a translator and collects its output."""

    def __init__(self, identity: str = "d", **kwargs: Any) -> None:
        self.translator = ChangeTranslator(kwargs.pop("env", envelope()), describe, **kwargs)
        self.translator.now_us = T0 + 5_000
        self.out: list[Any] = []
        self.lsn = 1000
        self.feed(pgwire.relation(REL, "public", "customers", identity, COLUMNS))

    def feed(self, data: bytes) -> None:
        self.lsn += 8
        self.translator.feed(data, self.lsn, self.out)

    def txn(self, *changes: bytes, final_lsn: int = 5000, xid: int = 700) -> list[Any]:
        start = len(self.out)
        self.feed(pgwire.begin(final_lsn, T0, xid))
        for change in changes:
            self.feed(change)
        self.feed(pgwire.commit(final_lsn, final_lsn + 48, T0))
        return self.out[start:]


def records(items: list[Any]) -> list[tuple[str, Any, Any, Any]]:
    return [(t, orjson.loads(k) if k else None, orjson.loads(v) if v else None, h)
            for t, k, v, h in (i for i in items if type(i) is tuple)]


def test_insert_is_a_create_event_with_the_debezium_envelope() -> None:
    stream = Stream()
    (topic, key, value, headers), checkpoint = *records(stream.txn(pgwire.insert(REL, [b"42", b"ann", b"x"]))), \
        stream.out[-1]
    assert topic == "legacy.public.customers" and key == {"id": 42} and headers is None
    assert value["op"] == "c" and value["before"] is None
    assert value["after"] == {"id": 42, "name": "ann"}  # secret is excluded by column_exclude
    assert value["ts_ms"] == (T0 + 5_000) // 1000 and value["ts_us"] == T0 + 5_000 and value["transaction"] is None
    assert value["source"] == {
        "version": value["source"]["version"], "connector": "postgresql", "name": "legacy", "ts_ms": T0 // 1000,
        "ts_us": T0, "snapshot": "false", "db": "crm", "sequence": f'[null,"{stream.lsn - 8}"]',
        "schema": "public", "table": "customers", "txId": 700, "lsn": stream.lsn - 8, "xmin": None,
    }
    assert checkpoint == Checkpoint(StreamPosition((5000, 1), 5048), T0)


def test_sequence_carries_the_previous_commit() -> None:
    stream = Stream()
    stream.txn(pgwire.insert(REL, [b"1", b"a", None]), final_lsn=5000)
    (_, _, value, _), = records(stream.txn(pgwire.insert(REL, [b"2", b"b", None]), final_lsn=6000))
    assert value["source"]["sequence"] == f'["5000","{value["source"]["lsn"]}"]'


def test_update_with_default_identity_has_no_before() -> None:
    (_, key, value, _), = records(Stream().txn(pgwire.update(REL, [b"1", b"bob", None])))
    assert key == {"id": 1} and value["op"] == "u" and value["before"] is None
    assert value["after"] == {"id": 1, "name": "bob"}


def test_update_with_full_identity_has_the_whole_old_row() -> None:
    items = Stream("f").txn(pgwire.update(REL, [b"1", b"bob", None], old=[b"1", b"ann", None], old_kind=b"O"))
    (_, _, value, _), = records(items)
    assert value["before"] == {"id": 1, "name": "ann"} and value["after"] == {"id": 1, "name": "bob"}


@pytest.mark.parametrize("identity,old,old_kind,before", [
    ("d", [b"1", None, None], b"K", {"id": 1, "name": None}),
    ("f", [b"1", b"ann", None], b"O", {"id": 1, "name": "ann"}),
])
def test_key_change_is_delete_tombstone_create(identity: str, old: list[Any], old_kind: bytes,
                                               before: dict[str, Any]) -> None:
    items = Stream(identity).txn(pgwire.update(REL, [b"2", b"ann", None], old=old, old_kind=old_kind))
    delete, tombstone, create = records(items)
    assert delete[1] == {"id": 1} and delete[2]["op"] == "d" and delete[2]["before"] == before
    assert delete[2]["after"] is None and delete[3] == [("__debezium.newkey", b'{"id":2}')]
    assert tombstone[1] == {"id": 1} and tombstone[2] is None
    assert create[1] == {"id": 2} and create[2]["op"] == "c" and create[2]["after"] == {"id": 2, "name": "ann"}
    assert create[3] == [("__debezium.oldkey", b'{"id":1}')]


def test_delete_is_followed_by_a_tombstone() -> None:
    delete, tombstone = records(Stream().txn(pgwire.delete(REL, [b"7", None, None])))
    assert delete[2]["op"] == "d" and delete[2]["before"] == {"id": 7, "name": None} and delete[2]["after"] is None
    assert tombstone == ("legacy.public.customers", {"id": 7}, None, None)


def test_tombstones_can_be_turned_off() -> None:
    items = records(Stream(env=envelope(tombstones=False)).txn(pgwire.delete(REL, [b"7", None, None])))
    assert [v["op"] for _, _, v, _ in items] == ["d"]


def test_unchanged_toast_values_become_the_placeholder() -> None:
    (_, _, value, _), = records(Stream().txn(pgwire.update(REL, [b"1", UNCHANGED, None])))
    assert value["after"] == {"id": 1, "name": UNAVAILABLE}


def test_truncate_is_a_t_event_per_captured_table_with_a_null_key() -> None:
    stream = Stream()
    stream.feed(pgwire.relation(99, "audit", "log", "d", [("id", 23, -1, True)]))  # not captured
    (topic, key, value, _), = records(stream.txn(pgwire.truncate([REL, 99])))
    assert topic == "legacy.public.customers" and key is None
    assert value["op"] == "t" and value["before"] is None and value["after"] is None


def test_changes_of_tables_not_captured_are_dropped_but_still_checkpointed() -> None:
    stream = Stream()
    stream.feed(pgwire.relation(99, "audit", "log", "d", [("id", 23, -1, True)]))
    items = stream.txn(pgwire.insert(99, [b"1"]), final_lsn=7000)
    assert items == [Checkpoint(StreamPosition((7000, 1), 7048), T0)]


def test_a_new_relation_message_changes_the_shape_without_restart() -> None:
    stream = Stream()
    stream.feed(pgwire.relation(REL, "public", "customers", "d", [*COLUMNS, ("points", 23, -1, False)]))
    (_, _, value, _), = records(stream.txn(pgwire.insert(REL, [b"1", b"a", None, b"10"])))
    assert value["after"] == {"id": 1, "name": "a", "points": 10}
    stream.feed(pgwire.relation(REL, "public", "customers", "d", [("id", 23, -1, True)]))
    (_, _, value, _), = records(stream.txn(pgwire.insert(REL, [b"2"]), final_lsn=9000))
    assert value["after"] == {"id": 2}


def test_large_transactions_are_checkpointed_in_units_that_do_not_confirm() -> None:
    stream = Stream(unit_size=2)
    items = stream.txn(*(pgwire.insert(REL, [str(i).encode(), b"n", None]) for i in range(5)))
    checkpoints = [i.position for i in items if type(i) is Checkpoint]
    assert checkpoints == [StreamPosition((5000, 2), None), StreamPosition((5000, 4), None),
                           StreamPosition((5000, 5), 5048)]


def test_changes_at_or_before_the_acknowledged_mark_are_counted_as_duplicates() -> None:
    stream = Stream(acked_mark=(6000, 2))
    stream.txn(pgwire.insert(REL, [b"1", b"a", None]), final_lsn=5000)
    stream.txn(*(pgwire.insert(REL, [str(i).encode(), b"a", None]) for i in range(3)), final_lsn=6000)
    stream.txn(pgwire.insert(REL, [b"9", b"a", None]), final_lsn=7000)
    assert stream.translator.duplicates == 3
    assert len(records(stream.out)) == 5  # duplicates are still emitted: the sink may not have them all


def test_skipped_operations_are_not_emitted() -> None:
    stream = Stream(skipped_operations=frozenset({"u", "t"}))
    items = stream.txn(pgwire.update(REL, [b"1", b"b", None]), pgwire.truncate([REL]),
                       pgwire.insert(REL, [b"2", b"c", None]))
    assert [v["op"] for _, _, v, _ in records(items)] == ["c"]


def test_coverage_drops_changes_a_resumed_snapshot_already_read() -> None:
    # keys <= 10 were read at LSN 4000, the rest at 8000
    coverage = SnapshotCoverage({REL: [((10,), 4000), (None, 8000)]})
    stream = Stream(coverage=coverage)
    before = stream.txn(pgwire.insert(REL, [b"5", b"a", None]), pgwire.insert(REL, [b"50", b"b", None]),
                        final_lsn=6000)
    after = stream.txn(pgwire.insert(REL, [b"51", b"c", None]), final_lsn=9000)
    assert [k for _, k, _, _ in records(before)] == [{"id": 5}]  # 50 was read at 8000, after this commit
    assert [k for _, k, _, _ in records(after)] == [{"id": 51}]
    assert stream.translator.suppressed == 1
    assert stream.translator.coverage is None  # past the newest snapshot: the fast path again


def test_json_with_schema_wraps_key_and_value() -> None:
    (_, key, value, _), = records(Stream(env=envelope(schemas=True)).txn(pgwire.insert(REL, [b"1", b"a", None])))
    assert key["payload"] == {"id": 1}
    assert key["schema"] == {"type": "struct", "optional": False, "name": "legacy.public.customers.Key",
                             "fields": [{"type": "int32", "optional": False, "field": "id"}]}
    assert value["payload"]["after"] == {"id": 1, "name": "a"}
    fields = {f["field"]: f for f in value["schema"]["fields"]}
    assert value["schema"]["name"] == "legacy.public.customers.Envelope"
    assert [f["field"] for f in fields["after"]["fields"]] == ["id", "name"]
    assert fields["source"]["name"] == "io.debezium.connector.postgresql.Source"
