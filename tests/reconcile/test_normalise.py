from __future__ import annotations

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from strangler.reconcile.config import FieldSpec
from strangler.reconcile.normalise import ColumnType, FieldKind, NotComparable, canonical, resolve_kind

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize(("kind", "value", "expected"), [
    (FieldKind("text"), "  Ada \t\n", "Ada"),
    (FieldKind("text", trim=False), " Ada ", " Ada "),
    (FieldKind("text", casefold=True), " ADA ", "ada"),
    (FieldKind("text"), True, "true"),
    (FieldKind("integer"), " 42 ", "42"),
    (FieldKind("integer"), 42.0, "42"),
    (FieldKind("decimal", 2), "10.5", "10.50"),
    (FieldKind("decimal", 2), 0.125, "0.13"),  # half away from zero, as PostgreSQL's round
    (FieldKind("decimal", 2), "-0.001", "0.00"),  # no negative zero
    (FieldKind("decimal", 2), Decimal("-2.345"), "-2.35"),
    (FieldKind("decimal"), "10.500", "10.5"),
    (FieldKind("decimal"), "100", "100"),
    (FieldKind("float", 6), 0.1 + 0.2, "0.300000"),
    (FieldKind("boolean"), "t", "true"),
    (FieldKind("boolean"), 0, "false"),
    (FieldKind("timestamp"), "2024-05-01T12:00:00+02:00", "2024-05-01 10:00:00"),
    (FieldKind("timestamp"), "2024-05-01T10:00:00.120000Z", "2024-05-01 10:00:00.12"),
    (FieldKind("timestamp", precision="ms"), "2024-05-01T10:00:00.123456Z", "2024-05-01 10:00:00.123"),
    (FieldKind("timestamp", precision="s"), dt.datetime(2024, 5, 1, 10, 0, 0, 999999, dt.UTC), "2024-05-01 10:00:00"),
    (FieldKind("date"), "2024-05-01T23:00:00", "2024-05-01"),
    (FieldKind("text"), None, None),
])
def test_canonical_forms(kind: FieldKind, value: object, expected: str | None) -> None:
    assert canonical(kind, value) == expected


def test_naive_timestamps_are_read_in_the_side_zone() -> None:
    assert canonical(FieldKind("timestamp"), "2024-01-15 11:00:00", BERLIN) == "2024-01-15 10:00:00"
    assert canonical(FieldKind("timestamp"), "2024-07-15 11:00:00", BERLIN) == "2024-07-15 09:00:00"


@pytest.mark.parametrize(("kind", "value"), [
    (FieldKind("integer"), "4.5"), (FieldKind("integer"), True), (FieldKind("boolean"), "maybe"),
    (FieldKind("decimal", 2), "abc"), (FieldKind("timestamp"), "yesterday"), (FieldKind("text"), {"a": 1}),
])
def test_values_that_cannot_be_read_as_their_type(kind: FieldKind, value: object) -> None:
    with pytest.raises(NotComparable):
        canonical(kind, value)


@pytest.mark.parametrize(("spec", "legacy", "new", "expected"), [
    (FieldSpec(new="x"), ColumnType("integer", 0), ColumnType("integer", 0), FieldKind("integer")),
    (FieldSpec(new="x"), ColumnType("decimal", 2), ColumnType("decimal", 4), FieldKind("decimal", 2)),
    (FieldSpec(new="x"), ColumnType("integer", 0), ColumnType("decimal", 2), FieldKind("decimal", 0)),
    (FieldSpec(new="x"), ColumnType("decimal", None), ColumnType("decimal", 2), FieldKind("decimal", None)),
    (FieldSpec(new="x"), ColumnType("float"), ColumnType("decimal", 2), FieldKind("float", 6)),
    (FieldSpec(new="x"), ColumnType("timestamp"), ColumnType("text"), FieldKind("timestamp")),
    (FieldSpec(new="x"), ColumnType("date"), ColumnType("integer", 0), FieldKind("text")),
    (FieldSpec(new="x"), ColumnType("decimal", 2), None, FieldKind("decimal", 2)),
    (FieldSpec(new="x", type="decimal", scale=1), ColumnType("text"), None, FieldKind("decimal", 1)),
    (FieldSpec(new="x", casefold=True), ColumnType("text"), ColumnType("text"), FieldKind("text", casefold=True)),
])
def test_field_kind_from_both_columns(spec: FieldSpec, legacy: ColumnType, new: ColumnType | None,
                                      expected: FieldKind) -> None:
    assert resolve_kind(spec, legacy, new) == expected
