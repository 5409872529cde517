"""Normalisation: every compared value becomes one canonical text, the same on both sides.

The SQL adapter computes these forms inside the database (so that checksums of equal rows are equal);
`canonical` is the same function in Python, for values read over HTTP. Pure functions, no I/O.

    text       surrounding white space trimmed (option), case folded (option)
    integer    decimal digits: 42
    decimal    rounded half away from zero to `scale` places (10.50), or trailing zeros dropped (10.5)
    float      a decimal at `scale` places (default 6)
    boolean    true | false
    timestamp  UTC, `YYYY-MM-DD HH:MM:SS[.ffffff]` with trailing zeros dropped, truncated to `precision`
    date       YYYY-MM-DD
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from strangler.reconcile.config import FieldSpec

WHITESPACE = " \t\r\n"
FLOAT_SCALE = 6
_TRUE = {"t", "true", "y", "yes", "on", "1"}
_FALSE = {"f", "false", "n", "no", "off", "0"}


@dataclass(frozen=True, slots=True)
class ColumnType:
    """A column's type as a database reports it, reduced to what normalisation needs."""

    type: str  # text | integer | decimal | float | boolean | timestamp | date
    scale: int | None = None


@dataclass(frozen=True, slots=True)
class FieldKind:
    """How one field is normalised on both sides."""

    type: str
    scale: int | None = None
    precision: str = "us"
    trim: bool = True
    casefold: bool = False


class NotComparable(ValueError):
    """A value that cannot be read as its field's type (reported as drift with the raw value)."""


def resolve_kind(spec: FieldSpec, legacy: ColumnType | None, new: ColumnType | None) -> FieldKind:
    """The field's kind: the configured type, else what the columns agree on (the wider of two numbers)."""
    kind: str = spec.type
    known = [c for c in (legacy, new) if c is not None]
    if kind == "auto":
        types = {c.type for c in known}
        if len(types) == 1:
            kind = types.pop()
        elif types and types <= {"integer", "decimal"}:
            kind = "decimal"
        elif types and types <= {"integer", "decimal", "float"}:
            kind = "float"
        elif "timestamp" in types and types <= {"timestamp", "text"}:
            kind = "timestamp"
        else:
            kind = "text"
    scale = spec.scale
    if scale is None and kind == "decimal":
        scales = [c.scale for c in known if c.scale is not None and c.type in ("decimal", "integer")]
        # compare at the coarser scale, as the lower-precision side cannot hold more
        scale = min(scales) if len(scales) == len(known) and scales else None
    if scale is None and kind == "float":
        scale = FLOAT_SCALE
    return FieldKind(kind, scale, spec.precision, spec.trim, spec.casefold)


def canonical(kind: FieldKind, value: Any, zone: dt.tzinfo = dt.UTC) -> str | None:
    """The canonical text of `value` (None stays None); NotComparable when it cannot be read."""
    if value is None:
        return None
    try:
        return _CANONICAL[kind.type](kind, value, zone)
    except (ValueError, TypeError, ArithmeticError, InvalidOperation) as exc:
        raise NotComparable(f"{value!r} is not a {kind.type}: {exc}") from None


def _text(kind: FieldKind, value: Any, zone: dt.tzinfo) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, dict | list):
        raise TypeError("a JSON object or array is not text")
    else:
        text = str(value)
    if kind.trim:
        text = text.strip(WHITESPACE)
    return text.lower() if kind.casefold else text


def _integer(kind: FieldKind, value: Any, zone: dt.tzinfo) -> str:
    if isinstance(value, bool):
        raise TypeError("a boolean is not an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("has a fraction")
        return str(int(value))
    return str(int(str(value).strip(WHITESPACE)))


def _decimal(kind: FieldKind, value: Any, zone: dt.tzinfo) -> str:
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value).strip(WHITESPACE))
    if not number.is_finite():
        return str(number).lower().replace("infinity", "Infinity").replace("nan", "NaN")
    if kind.scale is not None:
        number = number.quantize(Decimal(1).scaleb(-kind.scale), rounding=ROUND_HALF_UP)
    else:
        number = number.normalize()
    if number == 0:
        number = abs(number)  # PostgreSQL has no negative zero
    return format(number, "f")


def _boolean(kind: FieldKind, value: Any, zone: dt.tzinfo) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value).strip(WHITESPACE).lower()
    if text in _TRUE:
        return "true"
    if text in _FALSE:
        return "false"
    raise ValueError("not a boolean")


def parse_timestamp(value: Any, zone: dt.tzinfo) -> dt.datetime:
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, dt.date):
        moment = dt.datetime(value.year, value.month, value.day)
    else:
        text = str(value).strip(WHITESPACE)
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        moment = dt.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(dt.UTC)


def _timestamp(kind: FieldKind, value: Any, zone: dt.tzinfo) -> str:
    moment = parse_timestamp(value, zone)
    micro = moment.microsecond
    if kind.precision == "s":
        micro = 0
    elif kind.precision == "ms":
        micro -= micro % 1000
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    if moment.year < 1000:
        text = f"{moment.year:04d}" + text[text.index("-"):]
    return text + (f".{micro:06d}".rstrip("0") if micro else "")


def _date(kind: FieldKind, value: Any, zone: dt.tzinfo) -> str:
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return dt.date.fromisoformat(str(value).strip(WHITESPACE)[:10]).isoformat()


_CANONICAL = {
    "text": _text, "integer": _integer, "decimal": _decimal, "float": _decimal, "boolean": _boolean,
    "timestamp": _timestamp, "date": _date,
}


def zone_named(name: str) -> dt.tzinfo:
    return dt.UTC if name.upper() == "UTC" else ZoneInfo(name)
