"""The domain event: typed, versioned, with its time and provenance."""

from __future__ import annotations

import datetime as dt
import types
from decimal import Decimal
from typing import Any, Union, get_args, get_origin

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from strangler.events.config import EventTypeConfig, import_model


class DomainEvent(BaseModel):
    """The envelope every domain event shares; `payload` is validated by the event type's model."""

    model_config = ConfigDict(frozen=True)

    event_id: str
    event_type: str
    event_version: int
    aggregate_type: str
    aggregate_id: str
    event_time: dt.datetime = Field(description="when the change was committed at its source")
    effective_time: dt.datetime | None = Field(None, description="business time, when the source has one")
    processing_time: dt.datetime = Field(description="when this event was produced")
    source: str = Field(description="the authority that produced it, e.g. legacy.crm")
    sequence: str = Field(description="the source position (LSN, changelog id or offset)")
    correlation_id: str | None = None
    causation_id: str | None = None
    payload: dict[str, Any]

    def to_json(self) -> bytes:
        """The event as JSON (what `model_dump_json` gives, several times faster: payloads are JSON already)."""
        return orjson.dumps(self.__dict__, option=orjson.OPT_UTC_Z)


_set = object.__setattr__


def assemble_event(fields: dict[str, Any]) -> DomainEvent:
    """A DomainEvent from values the mapper produced itself, already of the declared types (strings, ints,
    aware datetimes, a JSON-ready payload) and every field present in declaration order: no second
    validation, which costs more than the rest of building an event. Anything else goes through the model."""
    event = object.__new__(DomainEvent)
    _set(event, "__dict__", fields)
    _set(event, "__pydantic_fields_set__", set(fields))
    _set(event, "__pydantic_extra__", None)
    _set(event, "__pydantic_private__", None)
    return event


_PY_TYPES: dict[str, Any] = {
    "str": str, "int": int, "float": float, "bool": bool, "decimal": Decimal,
    "datetime": dt.datetime, "date": dt.date, "json": Any,
}


def payload_model(name: str, config: EventTypeConfig) -> type[BaseModel]:
    """The pydantic model that validates one event type's payload (strict about unknown fields)."""
    if config.model is not None:
        return import_model(config.model)
    fields: dict[str, Any] = {}
    for field_name, kind in (config.payload or {}).items():
        base, _, nullable = kind.partition("|")
        py = _PY_TYPES[base]
        fields[field_name] = ((py | None) if nullable else py, ...)
    return create_model(
        f"{name}V{config.version}", __config__=ConfigDict(extra="forbid", frozen=True), **fields
    )


class PayloadValidator:
    """Validates one event type's payload and returns it JSON-ready, as `model_validate(raw).model_dump(mode=
    "json")` does. For a declared payload (`payload: {field: type}`) plain type checks generated once from the
    declaration accept the values that are already of their type; anything else (a value to coerce, an error
    to report, a Python class named by `model`) goes through the pydantic model, so results and messages are
    the model's. Raises pydantic's ValidationError."""

    def __init__(self, model: type[BaseModel], declared: dict[str, str] | None = None) -> None:
        self.model = model
        self._validate = model.__pydantic_validator__.validate_python
        self._dump = model.__pydantic_serializer__.to_python
        self._fast = _compile_checks(model.__name__, declared) if declared else None

    def __call__(self, raw: dict[str, Any]) -> dict[str, Any]:
        if self._fast is not None:
            checked: dict[str, Any] | None = self._fast(raw)
            if checked is not None:
                return checked
        payload: dict[str, Any] = self._dump(self._validate(raw), mode="json")
        return payload


def _compile_checks(name: str, declared: dict[str, str]) -> Any:
    """`check(raw)`: the JSON-ready payload if every value is of its declared type as it is, else None. None
    for a declaration with a decimal: its coercions and text form are left to the model."""
    if any(kind.partition("|")[0] == "decimal" for kind in declared.values()):
        return None
    lines = ["def check(raw):", f"    if len(raw) != {len(declared)}:", "        return None", "    try:"]
    out = []
    for i, (field, kind) in enumerate(declared.items()):
        base, _, nullable = kind.partition("|")
        v = f"v{i}"
        lines.append(f"        {v} = raw[{field!r}]")
        out.append(f"{field!r}: {v}")
        if base == "json":
            continue  # any JSON value, as it came
        test = _CHECKS[base].format(v=v)
        lines += [f"        if {f'{v} is not None and not ({test})' if nullable else f'not ({test})'}:",
                  "            return None"]
        if base in _CONVERSIONS:
            convert = _CONVERSIONS[base].format(v=v)
            lines.append(f"        {v} = {convert} if {v} is not None else None" if nullable
                         else f"        {v} = {convert}")
    lines += ["    except KeyError:", "        return None", f"    return {{{', '.join(out)}}}"]
    namespace: dict[str, Any] = {}
    env = {"date": dt.date, "datetime": dt.datetime, "UTC": dt.UTC}
    exec(compile("\n".join(lines), f"<payload checks {name}>", "exec"), env, namespace)  # noqa: S102
    return namespace["check"]


# `v - v == 0.0` leaves NaN and the infinities to the model (its JSON form of them is null)
_CHECKS = {"str": "type({v}) is str", "int": "type({v}) is int", "float": "type({v}) is float and {v} - {v} == 0.0",
           "bool": "type({v}) is bool", "date": "type({v}) is date",
           "datetime": "type({v}) is datetime and {v}.tzinfo is UTC"}
# pydantic's JSON form of a date and of a UTC datetime
_CONVERSIONS = {"date": "{v}.isoformat()", "datetime": "{v}.isoformat()[:-6] + 'Z'"}


def time_fields(model: type[BaseModel]) -> dict[str, type[dt.date]]:
    """The payload fields typed datetime or date (optionally nullable), with that type: their source values
    may be epoch numbers (Debezium's Date, Timestamp, MicroTimestamp) that need reading as times first."""
    out: dict[str, type[dt.date]] = {}
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if get_origin(annotation) in (Union, types.UnionType):
            annotation = next((a for a in get_args(annotation) if a is not type(None)), None)
        if isinstance(annotation, type) and issubclass(annotation, dt.date):
            out[name] = dt.datetime if issubclass(annotation, dt.datetime) else dt.date
    return out


def validation_reason(exc: ValidationError) -> str:
    """A one-line account of a payload's validation errors, for a dead letter."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '<payload>'}: {e['msg']}"
                     for e in exc.errors(include_url=False))
