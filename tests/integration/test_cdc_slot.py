"""The slot's life: lost between runs (an error, or a new snapshot with when_needed), an initial_only
snapshot that leaves no slot behind, and a slot another connection holds."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from strangler.cdc.errors import SlotLost, SourceError
from tests.integration.cdc_inprocess import count, open_source, read_events
from tests.integration.cdc_support import execute
from tests.support.postgres import PostgresDatabase

pytestmark = pytest.mark.integration


def slots(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT slot_name FROM pg_replication_slots")]


def test_a_lost_slot(pg_database: PostgresDatabase, tmp_path: Path) -> None:
    dsn, state = pg_database.dsn, tmp_path / "state.json"
    execute(dsn, "CREATE TABLE t (id int PRIMARY KEY)", "INSERT INTO t VALUES (1)")
    source = open_source(dsn, state)
    read_events(source, count(1))
    source.close()
    execute(dsn, "SELECT pg_drop_replication_slot('strangler')", "INSERT INTO t VALUES (2)")
    with pytest.raises(SlotLost):
        open_source(dsn, state)
    source = open_source(dsn, state, snapshot="when_needed")
    try:
        events = read_events(source, count(2))
    finally:
        source.close()
    assert [(e[1], e[2]["op"]) for e in events] == [({"id": 1}, "r"), ({"id": 2}, "r")]


def test_initial_only_leaves_no_slot_and_does_not_repeat(pg_database: PostgresDatabase, tmp_path: Path) -> None:
    dsn, state = pg_database.dsn, tmp_path / "state.json"
    execute(dsn, "CREATE TABLE t (id int PRIMARY KEY)", "INSERT INTO t SELECT generate_series(1, 5)")
    source = open_source(dsn, state, snapshot="initial_only")
    try:
        events = read_events(source, lambda e: source.finished)
    finally:
        source.close()
    assert len(events) == 5 and slots(dsn) == []
    again = open_source(dsn, state, snapshot="initial_only")
    try:
        assert again.finished and again.read(10, 0.1) == []
    finally:
        again.close()


def test_one_connector_per_slot(pg_database: PostgresDatabase, tmp_path: Path) -> None:
    dsn = pg_database.dsn
    execute(dsn, "CREATE TABLE t (id int PRIMARY KEY)")
    first = open_source(dsn, tmp_path / "a.json", snapshot="never")
    try:
        with pytest.raises(SourceError, match="in use by another connection"):
            open_source(dsn, tmp_path / "b.json", snapshot="never")
    finally:
        first.close()
