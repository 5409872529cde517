"""Every column type through a real PostgreSQL (snapshot and streaming), compared with what Debezium documents
for its PostgreSQL connector with the JSON converter (schemas off)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from strangler.cdc.errors import UnmappableColumn
from tests.integration.cdc_inprocess import count, open_source, read_events
from tests.integration.cdc_support import execute
from tests.support.postgres import PostgresDatabase

pytestmark = pytest.mark.integration


def b64(unscaled: int, length: int) -> str:
    return base64.b64encode(unscaled.to_bytes(length, "big", signed=True)).decode()


# column, SQL type, SQL literal, value as Debezium renders it (decimal.handling.mode=precise, adaptive time)
COLUMNS: list[tuple[str, str, str, Any]] = [
    ("c_smallint", "smallint", "32767", 32767),
    ("c_int", "integer", "-2147483648", -2147483648),
    ("c_bigint", "bigint", "9223372036854775807", 9223372036854775807),
    ("c_bool", "boolean", "true", True),
    ("c_text", "text", "E'h\\u00e9llo \"x\"\\n'", 'héllo "x"\n'),
    ("c_varchar", "varchar(10)", "'abc'", "abc"),
    ("c_char", "char(4)", "'ab'", "ab  "),
    ("c_numeric", "numeric(10,2)", "1234.5", b64(123450, 3)),  # Decimal, scale 2
    ("c_numeric_var", "numeric", "12.500", {"scale": 1, "value": b64(125, 1)}),  # VariableScaleDecimal
    ("c_numeric_neg", "numeric(5,0)", "-129", b64(-129, 2)),
    ("c_real", "real", "1.5", 1.5),
    ("c_double", "double precision", "'NaN'", "NaN"),
    ("c_timestamp", "timestamp", "'2018-06-20 15:13:16.945104'", 1529507596945104),  # MicroTimestamp
    ("c_timestamp3", "timestamp(3)", "'2018-06-20 15:13:16.945'", 1529507596945),  # Timestamp (millis)
    ("c_timestamptz", "timestamptz", "'2018-06-20 08:37:03.123+02'", "2018-06-20T06:37:03.123000Z"),
    ("c_date", "date", "'2018-06-20'", 17702),  # Date: days since the epoch
    ("c_time", "time", "'12:34:56.789012'", 45296789012),  # MicroTime
    ("c_timetz", "timetz", "'12:34:56+02'", "10:34:56Z"),  # ZonedTime
    ("c_interval", "interval", "'1 day 02:00:00'", 93600000000),  # MicroDuration
    ("c_uuid", "uuid", "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    ("c_json", "json", "'{\"a\":  1}'", '{"a":  1}'),  # Json: the text as stored
    ("c_jsonb", "jsonb", "'{\"b\":[1, 2], \"a\": 1}'", '{"a": 1, "b": [1, 2]}'),  # jsonb's own text
    ("c_bytea", "bytea", "'\\x00ff'::bytea", "AP8="),
    ("c_int_array", "integer[]", "'{1,NULL,3}'", [1, None, 3]),
    ("c_text_array", "text[]", "'{\"a b\",c}'", ["a b", "c"]),
    ("c_enum", "mood", "'happy'", "happy"),
    ("c_domain", "price", "1.5", b64(1500, 2)),  # a domain over numeric(8,3)
    ("c_inet", "inet", "'10.0.0.1'", "10.0.0.1"),
    ("c_null", "integer", "NULL", None),
]
STRING_AND_DOUBLE = {  # the numeric columns in decimal.handling.mode string and double
    "string": {"c_numeric": "1234.50", "c_numeric_var": "12.500", "c_numeric_neg": "-129", "c_domain": "1.500"},
    "double": {"c_numeric": 1234.5, "c_numeric_var": 12.5, "c_numeric_neg": -129.0, "c_domain": 1.5},
}


def create_table(dsn: str) -> None:
    columns = ", ".join(f"{name} {kind}" for name, kind, _, _ in COLUMNS)
    execute(dsn, "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')", "CREATE DOMAIN price AS numeric(8,3)",
            f"CREATE TABLE every_type (id int PRIMARY KEY, {columns})")


def insert(dsn: str, row_id: int) -> None:
    values = ", ".join(literal for _, _, literal, _ in COLUMNS)
    execute(dsn, f"INSERT INTO every_type VALUES ({row_id}, {values})")


EXPECTED = {"id": 1, **{name: value for name, _, _, value in COLUMNS}}


def test_every_type_in_the_snapshot_and_in_the_stream(pg_database: PostgresDatabase, tmp_path: Path) -> None:
    create_table(pg_database.dsn)
    insert(pg_database.dsn, 1)
    source = open_source(pg_database.dsn, tmp_path / "state.json")
    try:
        (_, key, snapshot, _), = read_events(source, count(1))
        insert(pg_database.dsn, 2)
        (_, streamed_key, streamed, _), = read_events(source, count(1))
    finally:
        source.close()
    assert key == {"id": 1} and snapshot["op"] == "r" and snapshot["source"]["snapshot"] == "last"
    assert snapshot["after"] == EXPECTED
    assert streamed_key == {"id": 2} and streamed["op"] == "c"
    assert streamed["after"] == {**EXPECTED, "id": 2}


@pytest.mark.parametrize("mode", ["string", "double"])
def test_numeric_in_string_and_double_modes(pg_database: PostgresDatabase, tmp_path: Path, mode: str) -> None:
    create_table(pg_database.dsn)
    insert(pg_database.dsn, 1)
    source = open_source(pg_database.dsn, tmp_path / "state.json", decimal_handling_mode=mode,
                         snapshot="initial_only")
    try:
        (_, _, value, _), = read_events(source, count(1))
    finally:
        source.close()
    assert {k: value["after"][k] for k in STRING_AND_DOUBLE[mode]} == STRING_AND_DOUBLE[mode]


def test_an_unmappable_column_stops_the_start_and_names_the_column(pg_database: PostgresDatabase,
                                                                    tmp_path: Path) -> None:
    execute(pg_database.dsn, "CREATE TABLE shapes (id int PRIMARY KEY, c_point point)")
    with pytest.raises(UnmappableColumn, match=r"column public\.shapes\.c_point has type 'point'"):
        open_source(pg_database.dsn, tmp_path / "state.json")


def test_an_unmappable_column_added_while_streaming_stops_the_stream(pg_database: PostgresDatabase,
                                                                     tmp_path: Path) -> None:
    execute(pg_database.dsn, "CREATE TABLE shapes (id int PRIMARY KEY)")
    source = open_source(pg_database.dsn, tmp_path / "state.json", snapshot="never")
    try:
        execute(pg_database.dsn, "ALTER TABLE shapes ADD COLUMN c_box box", "INSERT INTO shapes VALUES (1, NULL)")
        with pytest.raises(UnmappableColumn, match=r"public\.shapes\.c_box"):
            read_events(source, count(1), timeout=10)
    finally:
        source.close()
