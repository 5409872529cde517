"""Reading Debezium's change-event envelope: schemaless JSON or the JSON-with-schema form, ours or Debezium's.

Values arrive as Debezium renders them: times as epoch days, milliseconds or microseconds (or ISO text for
zoned types), decimals as text or numbers, or (`decimal.handling.mode=precise`) as base64 unscaled bytes
whose scale only the schema knows; with a schema, those decimals are decoded here.
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

UNAVAILABLE = "__debezium_unavailable_value"  # an unchanged TOAST value: not sent by the database
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_EPOCH_DATE = _EPOCH.date()
_timedelta = dt.timedelta
_DECIMAL = "org.apache.kafka.connect.data.Decimal"
_VARIABLE_DECIMAL = "io.debezium.data.VariableScaleDecimal"


class NotAChange(ValueError):
    """The value is not a Debezium change event; the message says what is missing."""


class BadValue(ValueError):
    """A column value cannot be read as the type asked for; the message is a dead letter's reason."""


@dataclass(frozen=True, slots=True)
class ChangeEnvelope:
    op: str
    table: str  # schema.table (MySQL: database.table)
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    source: dict[str, Any]
    ts_ms: int | None

    @property
    def row(self) -> dict[str, Any] | None:
        """The row as the change left it (for a delete: as it was)."""
        return self.before if self.op == "d" else self.after


def read_envelope(value: Any) -> ChangeEnvelope:
    """The change event in `value` (decoded JSON); NotAChange when it is not one."""
    if not isinstance(value, dict):
        raise NotAChange(f"expected a JSON object, got {type(value).__name__}")
    if "payload" in value and "schema" in value:  # the JSON-with-schema form
        payload = value["payload"]
        if not isinstance(payload, dict):
            raise NotAChange("'payload' of the JSON-with-schema form is not an object")
        value = _decode_with_schema(value["schema"], payload)
    source = value.get("source")
    if not isinstance(source, dict):
        raise NotAChange("no 'source' block")
    schema = source.get("schema") or source.get("db")
    table = source.get("table")
    if not schema or not table:
        raise NotAChange("'source' names no schema and table")
    op = value.get("op")
    if not isinstance(op, str):
        raise NotAChange("no 'op'")
    before, after = value.get("before"), value.get("after")
    if before is not None and not isinstance(before, dict) or after is not None and not isinstance(after, dict):
        raise NotAChange("'before' and 'after' must be objects or null")
    ts = value.get("ts_ms")
    return ChangeEnvelope(op, f"{schema}.{table}", before, after, source, ts if isinstance(ts, int) else None)


def unwrap_key(key: Any) -> Any:
    """A record key in the JSON-with-schema form is `{schema, payload}`; the key is the payload."""
    if isinstance(key, dict) and "payload" in key and "schema" in key:
        return key["payload"]
    return key


def _decode_with_schema(schema: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """Decode the decimals the schema describes in `before` and `after` (others pass unchanged)."""
    if not isinstance(schema, dict):
        return payload
    out = dict(payload)
    for part in schema.get("fields") or ():
        name = part.get("field") if isinstance(part, dict) else None
        if name in ("before", "after") and isinstance(out.get(name), dict):
            decoders = {f["field"]: f for f in part.get("fields") or () if isinstance(f, dict) and _is_decimal(f)}
            if decoders:
                out[name] = {k: _decimal(decoders[k], v) if k in decoders else v for k, v in out[name].items()}
    return out


def _is_decimal(field: dict[str, Any]) -> bool:
    return field.get("name") in (_DECIMAL, _VARIABLE_DECIMAL)


def _decimal(field: dict[str, Any], value: Any) -> Any:
    try:
        if field.get("name") == _VARIABLE_DECIMAL and isinstance(value, dict):
            scale, raw = int(value["scale"]), value["value"]
        elif isinstance(value, str):
            scale, raw = int((field.get("parameters") or {}).get("scale", 0)), value
        else:
            return value
        unscaled = int.from_bytes(base64.b64decode(raw, validate=True), "big", signed=True)
    except (KeyError, TypeError, ValueError):
        return value  # not the precise rendering: left for the payload's validation to judge
    return str(Decimal(unscaled).scaleb(-scale))


def to_time(value: Any) -> dt.datetime | None:
    """A time from a Debezium-rendered value: ISO-8601 text, or epoch days / seconds / ms / us by size."""
    if type(value) is int and -719_000 < value < 1_000_000:  # the commonest: a Date column, epoch days
        return _EPOCH + _timedelta(days=value)
    if value is None or value == UNAVAILABLE:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise BadValue(f"cannot read a time from {value!r}") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadValue(f"cannot read a time from {value!r}")
    magnitude = abs(value)
    try:
        if magnitude < 1_000_000:  # a date: days since the epoch (io.debezium.time.Date)
            return _EPOCH + dt.timedelta(days=value)
        if magnitude < 1e11:
            return _EPOCH + dt.timedelta(seconds=value)
        if magnitude < 1e14:
            return _EPOCH + dt.timedelta(milliseconds=value)
        return _EPOCH + dt.timedelta(microseconds=value)
    except OverflowError:
        raise BadValue(f"time {value!r} is out of range") from None


def to_date(value: Any) -> dt.date | None:
    """A date from epoch days or ISO text (a datetime's date part when it has one)."""
    if type(value) is int and -719_000 < value < 1_000_000:  # epoch days (io.debezium.time.Date)
        return _EPOCH_DATE + _timedelta(days=value)
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str) and len(value) == 10:
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            raise BadValue(f"cannot read a date from {value!r}") from None
    moment = to_time(value)
    return moment.date() if moment is not None else None


def commit_time(envelope: ChangeEnvelope) -> dt.datetime:
    """When the change was committed at its source (source.ts_us or ts_ms; the event's ts_ms otherwise)."""
    source = envelope.source
    if isinstance(source.get("ts_us"), int):
        return _EPOCH + dt.timedelta(microseconds=source["ts_us"])
    millis = source.get("ts_ms")
    if not isinstance(millis, int):
        millis = envelope.ts_ms
    if millis is None:
        raise BadValue("the change has no commit time (source.ts_ms)")
    return _EPOCH + dt.timedelta(milliseconds=millis)


def source_sequence(envelope: ChangeEnvelope, position: str) -> str:
    """The change's position at its source: PostgreSQL's LSN, MySQL's binlog file:pos:row, a changelog
    sequence; `position` (where it was read) when the source gives none."""
    source = envelope.source
    if source.get("lsn") is not None:
        return str(source["lsn"])
    if source.get("file") is not None and source.get("pos") is not None:
        return f"{source['file']}:{source['pos']}:{source.get('row') or 0}"
    for name in ("sequence", "change_lsn", "commit_lsn", "pos"):
        if source.get(name) is not None:
            return str(source[name])
    return position


def canonical(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str).decode() if value is not None else ""
