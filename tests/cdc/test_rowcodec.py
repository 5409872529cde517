"""The generated encoders produce, value for value, the JSON of the reference path (render_row + orjson)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strangler.cdc.errors import UnrenderableValue
from strangler.cdc.pgoutput import UNCHANGED, decode
from strangler.cdc.rowcodec import compile_encoder
from strangler.cdc.tables import CaptureRules, ColumnFacts, capture_table, render_row
from strangler.cdc.values import PgType
from tests.cdc import pgwire

TYPES = {
    16: PgType(16, "bool"), 20: PgType(20, "int8"), 21: PgType(21, "int2"), 23: PgType(23, "int4"),
    25: PgType(25, "text"), 701: PgType(701, "float8"), 1700: PgType(1700, "numeric"),
    1082: PgType(1082, "date"), 1083: PgType(1083, "time"), 1114: PgType(1114, "timestamp"),
    1184: PgType(1184, "timestamptz"), 2950: PgType(2950, "uuid"), 3802: PgType(3802, "jsonb"),
    17: PgType(17, "bytea"), 1007: PgType(1007, "_int4", "array", PgType(23, "int4")),
}
NUMERIC_10_2 = ((10 << 16) | 2) + 4
COLUMNS = [
    ColumnFacts("id", 20), ColumnFacts("flag", 16), ColumnFacts("small", 21), ColumnFacts("n", 23),
    ColumnFacts("name", 25), ColumnFacts("ratio", 701), ColumnFacts("price", 1700, NUMERIC_10_2),
    ColumnFacts("amount", 1700), ColumnFacts("day", 1082), ColumnFacts("at", 1114), ColumnFacts("at_ms", 1114, 3),
    ColumnFacts("at_tz", 1184), ColumnFacts("at_tz3", 1184, 3), ColumnFacts("clock", 1083),
    ColumnFacts("ref", 2950), ColumnFacts("doc", 3802), ColumnFacts("raw", 17), ColumnFacts("nums", 1007),
    ColumnFacts("secret", 25),
]
RULES = CaptureRules("p", column_exclude=["public\\.t\\.secret"])


def table(mode: str = "precise"):  # type: ignore[no-untyped-def]
    rules = CaptureRules("p", column_exclude=["public\\.t\\.secret"], decimal_mode=mode)  # type: ignore[arg-type]
    return capture_table(1, "public", "t", COLUMNS, ("id", "name"), TYPES, rules)


def timestamp_text(moment: datetime, zone: bool) -> bytes:
    text = moment.isoformat(sep=" ")
    if "." in text:
        text = text.rstrip("0")
    return (text + ("+00" if zone else "")).encode()


texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)
moments = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31))
row_strategy = st.tuples(
    st.integers(-(2**63), 2**63 - 1), st.booleans(), st.integers(-(2**15), 2**15 - 1),
    st.integers(-(2**31), 2**31 - 1), texts, st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(min_value=Decimal("-99999999.99"), max_value=Decimal("99999999.99"), places=2),
    st.decimals(allow_nan=False, allow_infinity=False, places=4, min_value=-(10**12), max_value=10**12),
    moments, moments, moments, moments, moments, st.uuids(), texts, st.binary(max_size=10),
    st.lists(st.one_of(st.none(), st.integers(-5, 5)), max_size=4),
)


def pg_text(values: tuple) -> list[bytes | None]:  # type: ignore[type-arg]
    (i, flag, small, n, name, ratio, price, amount, day, at, at_ms, at_tz, at_tz3, ref, doc, raw, nums) = values
    float_text = repr(ratio) if ratio == ratio and abs(ratio) != float("inf") else \
        {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}[str(ratio)]
    return [
        str(i).encode(), b"t" if flag else b"f", str(small).encode(), str(n).encode(), name.encode(),
        float_text.encode(), f"{price:.2f}".encode(), format(amount, "f").encode(), day.date().isoformat().encode(),
        timestamp_text(at, False), timestamp_text(at_ms.replace(microsecond=at_ms.microsecond // 1000 * 1000), False),
        timestamp_text(at_tz, True), timestamp_text(at_tz3.replace(microsecond=at_tz3.microsecond // 1000 * 1000),
                                                    True),
        at.time().isoformat().encode(), str(ref).encode(), orjson.dumps({"k": doc}),
        b"\\x" + raw.hex().encode(), ("{" + ",".join("NULL" if x is None else str(x) for x in nums) + "}").encode(),
        b"hidden",
    ]


@settings(max_examples=300, deadline=None)
@given(row_strategy, st.sampled_from(["precise", "string", "double"]))
def test_generated_encoder_matches_the_reference_rendering(values: tuple, mode: str) -> None:  # type: ignore[type-arg]
    captured = table(mode)
    data = pgwire.insert(1, pg_text(values))
    key, row, end = compile_encoder(captured, len(COLUMNS))(data, 6)
    reference = render_row(captured, decode(data).new)  # type: ignore[union-attr]
    assert end == len(data)
    assert orjson.loads(row) == reference
    assert list(orjson.loads(row)) == list(reference)  # same column order
    assert key is not None and orjson.loads(key) == {"id": reference["id"], "name": reference["name"]}


def test_nulls_and_unchanged_toast_values() -> None:
    captured = table()
    cells: list[object] = [b"1", None, None, None, b"x", None, None, None, None, None, None, None, None, None, None,
                           UNCHANGED, UNCHANGED, UNCHANGED, UNCHANGED]
    data = pgwire.insert(1, cells)
    _, row, _ = compile_encoder(captured, len(COLUMNS))(data, 6)
    assert orjson.loads(row) == render_row(captured, decode(data).new)  # type: ignore[union-attr]


def test_an_unrenderable_value_names_its_column() -> None:
    captured = table("precise")
    cells = pg_text((1, True, 1, 1, "a", 1.0, Decimal("1.00"), Decimal("1"), datetime(2020, 1, 1),
                     datetime(2020, 1, 1), datetime(2020, 1, 1), datetime(2020, 1, 1), datetime(2020, 1, 1),
                     "00000000-0000-0000-0000-000000000000", "x", b"", []))
    for index, column in ((6, "price"), (7, "amount")):  # fixed and variable scale
        broken = list(cells)
        broken[index] = b"NaN"
        with pytest.raises(UnrenderableValue, match=f"public.t.{column}"):
            compile_encoder(captured, len(COLUMNS))(pgwire.insert(1, broken), 6)


def test_timestamptz_outside_the_fast_form_still_matches() -> None:
    captured = capture_table(1, "public", "t", [ColumnFacts("id", 20), ColumnFacts("at", 1184)], ("id",), TYPES,
                             RULES)
    encode = compile_encoder(captured, 2)
    moment = datetime(2020, 2, 29, 23, 30, tzinfo=UTC) + timedelta(microseconds=5)
    for text in (b"2020-03-01 01:30:00.000005+02", b"0044-03-15 12:00:00+00 BC", b"12020-01-01 00:00:00+00",
                 b"infinity"):
        data = pgwire.insert(1, [b"1", text])
        assert orjson.loads(encode(data, 6)[1]) == render_row(captured, decode(data).new)  # type: ignore[union-attr]
    assert orjson.loads(encode(pgwire.insert(1, [b"1", b"2020-03-01 01:30:00.000005+02"]), 6)[1])["at"] == \
        moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
