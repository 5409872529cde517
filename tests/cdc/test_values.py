"""Values rendered as Debezium's PostgreSQL connector documents them (JSON converter, schemas off)."""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strangler.cdc.decimals import java_decimal_string, unscaled_bytes
from strangler.cdc.pgtime import civil_from_days, days_from_civil, format_iso_utc, interval_micros
from strangler.cdc.values import UNAVAILABLE, PgType, UnsupportedType, parse_array, renderer_for

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def numeric_modifier(precision: int, scale: int) -> int:
    return ((precision << 16) | scale) + 4


def render(name: str, text: bytes, modifier: int = -1, mode: str = "precise") -> Any:
    return renderer_for(PgType(0, name), modifier, mode).render(text)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name,text,expected",
    [
        ("int2", b"-32768", -32768),
        ("int4", b"2147483647", 2147483647),
        ("int8", b"-9223372036854775808", -9223372036854775808),
        ("oid", b"4294967295", 4294967295),
        ("bool", b"t", True),
        ("bool", b"f", False),
        ("text", "héllo \"wörld\"\n".encode(), "héllo \"wörld\"\n"),
        ("varchar", b"", ""),
        ("bpchar", b"ab  ", "ab  "),  # char(n) keeps its padding, as PostgreSQL sends it
        ("uuid", b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        ("json", b'{"a": [1, 2]}', '{"a": [1, 2]}'),  # json and jsonb are strings (io.debezium.data.Json)
        ("jsonb", b'{"a": [1, 2]}', '{"a": [1, 2]}'),
        ("float8", b"1.5", 1.5),
        ("float4", b"NaN", "NaN"),
        ("float8", b"-Infinity", "-Infinity"),
        ("bytea", b"\\x00ff10", base64.b64encode(b"\x00\xff\x10").decode()),
        ("inet", b"10.0.0.1/32", "10.0.0.1/32"),
        ("date", b"1970-01-01", 0),
        ("date", b"2018-06-20", 17702),
        ("date", b"1969-12-31", -1),
        ("date", b"0001-01-01 BC", days_from_civil(0, 1, 1)),
        ("time", b"00:00:00", 0),
        ("time", b"12:34:56.789012", 45_296_789_012),
        ("time", b"24:00:00", 86_400_000_000),
        ("timestamp", b"2018-06-20 15:13:16.945104", 1_529_507_596_945_104),
        ("timestamp", b"1969-12-31 23:59:59.5", -500_000),
        ("timestamptz", b"2018-06-20 06:37:03.123+00", "2018-06-20T06:37:03.123000Z"),
        ("timestamptz", b"2018-06-20 06:37:03+00", "2018-06-20T06:37:03.000000Z"),
        ("timestamptz", b"2018-06-20 08:37:03.5+02", "2018-06-20T06:37:03.500000Z"),
        ("timestamptz", b"2018-06-20 00:30:00-05:30", "2018-06-20T06:00:00.000000Z"),
        ("timestamptz", b"infinity", "infinity"),
        ("timetz", b"12:34:56.789+02", "10:34:56.789Z"),
        ("timetz", b"01:00:00+02", "23:00:00Z"),
        ("interval", b"1 day", 86_400_000_000),
        ("interval", b"-00:00:01.5", -1_500_000),
        ("interval", b"1 mon", int(365.25 / 12 * 86_400 * 1e6)),
        ("interval", b"1 year 2 mons 3 days 04:05:06.789", interval_micros(b"1 year 2 mons 3 days 04:05:06.789")),
    ],
)
def test_values_render_as_debezium_documents(name: str, text: bytes, expected: Any) -> None:
    assert render(name, text) == expected


@pytest.mark.parametrize(
    "name,modifier,text,expected",
    [
        ("timestamp", 3, b"2018-06-20 15:13:16.945104", 1_529_507_596_945),  # io.debezium.time.Timestamp
        ("timestamp", 0, b"1969-12-31 23:59:59.5", -500),  # floors, as Instant.toEpochMilli
        ("time", 3, b"12:34:56.789", 45_296_789),  # io.debezium.time.Time
        ("timestamptz", 3, b"2018-06-20 06:37:03.1+00", "2018-06-20T06:37:03.100Z"),
        ("timestamptz", 0, b"2018-06-20 06:37:03+00", "2018-06-20T06:37:03Z"),
    ],
)
def test_temporal_precision_is_adaptive(name: str, modifier: int, text: bytes, expected: Any) -> None:
    assert render(name, text, modifier) == expected


@pytest.mark.parametrize(
    "modifier,text,precise,string,double",
    [
        (numeric_modifier(5, 2), b"1.23", "ew==", "1.23", 1.23),
        (numeric_modifier(10, 2), b"-1.23", "hQ==", "-1.23", -1.23),
        (numeric_modifier(10, 2), b"1.28", "AIA=", "1.28", 1.28),  # 128 needs a sign byte
        (numeric_modifier(10, 2), b"-1.28", "gA==", "-1.28", -1.28),  # -128 does not
        (numeric_modifier(10, 0), b"0", "AA==", "0", 0.0),
        (numeric_modifier(10, 7), b"0.0000001", "AQ==", "1E-7", 1e-07),
        (numeric_modifier(10, 8), b"0.00000000", "AA==", "0E-8", 0.0),
        (numeric_modifier(38, 0), b"99999999999999999999999999999999999999",
         base64.b64encode((10**38 - 1).to_bytes(16, "big", signed=True)).decode(),
         "99999999999999999999999999999999999999", 1e38),
        (-1, b"12.500", {"scale": 1, "value": "fQ=="}, "12.500", 12.5),  # VariableScaleDecimal strips zeros
        (-1, b"100", {"scale": 0, "value": "ZA=="}, "100", 100.0),
        (-1, b"0.000", {"scale": 0, "value": "AA=="}, "0.000", 0.0),
    ],
)
def test_numeric_per_decimal_handling_mode(modifier: int, text: bytes, precise: Any, string: str,
                                           double: float) -> None:
    assert render("numeric", text, modifier, "precise") == precise
    assert render("numeric", text, modifier, "string") == string
    assert render("numeric", text, modifier, "double") == double


def test_numeric_nan_has_no_precise_form_but_string_and_double_carry_it() -> None:
    with pytest.raises(ValueError, match="NaN"):
        render("numeric", b"NaN", numeric_modifier(10, 2), "precise")
    assert render("numeric", b"NaN", -1, "string") == "NaN"
    assert render("numeric", b"Infinity", -1, "double") == "Infinity"


@given(st.integers(min_value=-(2**200), max_value=2**200))
def test_unscaled_bytes_are_minimal_twos_complement(value: int) -> None:
    raw = base64.b64decode(unscaled_bytes(value))
    assert int.from_bytes(raw, "big", signed=True) == value
    if len(raw) > 1:  # Java's toByteArray never carries a redundant sign byte
        assert not (raw[0] == 0 and raw[1] < 0x80) and not (raw[0] == 0xFF and raw[1] >= 0x80)


@pytest.mark.parametrize("unscaled,scale,text", [(123, 2, "1.23"), (5, 0, "5"), (-5, 3, "-0.005"),
                                                 (1, 6, "0.000001"), (12, 8, "1.2E-7"), (-1, 10, "-1E-10")])
def test_java_decimal_string(unscaled: int, scale: int, text: str) -> None:
    assert java_decimal_string(unscaled, scale) == text


@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999)))
def test_timestamps_match_python_datetime(moment: datetime) -> None:
    text = moment.isoformat(sep=" ").encode()
    micros = (moment.replace(tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)
    assert render("timestamp", text) == micros
    assert render("date", moment.date().isoformat().encode()) == (moment.date() - date(1970, 1, 1)).days
    assert format_iso_utc(micros, 6) == moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ").rjust(27, "0")


@given(st.integers(min_value=-3_000_000, max_value=3_000_000))
def test_civil_dates_round_trip(days: int) -> None:
    assert days_from_civil(*civil_from_days(days)) == days


@pytest.mark.parametrize(
    "text,expected",
    [
        ("{1,2,3}", ["1", "2", "3"]),
        ("{}", []),
        ('{"a b",NULL,"c\\"d","",null}', ["a b", None, 'c"d', "", None]),
        ("{{1,2},{3,4}}", [["1", "2"], ["3", "4"]]),
        ("[0:1]={5,6}", ["5", "6"]),
        ('{"{\\"k\\": 1}"}', ['{"k": 1}']),
    ],
)
def test_array_literals(text: str, expected: list[Any]) -> None:
    assert parse_array(text) == expected


def test_arrays_render_their_elements() -> None:
    int_array = PgType(1007, "_int4", "array", PgType(23, "int4"))
    assert renderer_for(int_array, -1, "precise").render(b"{1,NULL,3}") == [1, None, 3]
    text_array = PgType(1009, "_text", "array", PgType(25, "text"))
    rendered = renderer_for(text_array, -1, "precise")
    assert rendered.render(b'{"x,y",z}') == ["x,y", "z"]
    assert rendered.unavailable == [UNAVAILABLE]
    assert rendered.schema == {"type": "array", "items": {"type": "string", "optional": True}}


def test_enums_are_strings_with_their_allowed_values() -> None:
    mood = PgType(16390, "mood", "enum", enum_values=("sad", "ok", "happy"), builtin=False)
    rendered = renderer_for(mood, -1, "precise")
    assert rendered.render(b"ok") == "ok"
    assert rendered.schema["name"] == "io.debezium.data.Enum"
    assert rendered.schema["parameters"] == {"allowed": "sad,ok,happy"}


@pytest.mark.parametrize(
    "pgtype",
    [
        PgType(600, "point"),
        PgType(790, "money"),
        PgType(16400, "hstore", builtin=False),
        PgType(1187, "_interval", "array", PgType(1186, "interval")),
        PgType(16500, "int4", builtin=False),  # a user type that happens to share a built-in name
    ],
)
def test_types_without_a_rendering_are_refused(pgtype: PgType) -> None:
    with pytest.raises(UnsupportedType):
        renderer_for(pgtype, -1, "precise")
