"""Payload validation by generated type checks, and events assembled without a second validation: both give
exactly what the pydantic models give."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from strangler.events.config import EventTypeConfig
from strangler.events.model import DomainEvent, PayloadValidator, assemble_event, payload_model

DECLARED = {"id": "int", "name": "str", "note": "str|null", "score": "float", "vip": "bool", "born": "date",
            "seen": "datetime|null", "extra": "json"}
MODEL = payload_model("Probe", EventTypeConfig(payload=DECLARED))
UTC = dt.UTC
GOOD = {"id": 1, "name": "a", "note": None, "score": 1.5, "vip": True, "born": dt.date(1990, 5, 17),
        "seen": dt.datetime(2024, 6, 1, 12, 0, 0, 120, tzinfo=UTC), "extra": {"tags": ["x"]}}


@pytest.mark.parametrize("raw", [
    GOOD,
    {**GOOD, "seen": None, "note": "n", "extra": None},
    {**GOOD, "seen": dt.datetime(2024, 6, 1, tzinfo=UTC)},
    {**GOOD, "id": "7", "score": 2, "vip": "true"},  # values the model coerces
    {**GOOD, "seen": dt.datetime(2024, 6, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=2)))},
    {**GOOD, "score": float("nan")},
    {**GOOD, "born": "1990-05-17"},
])
def test_the_generated_checks_give_what_the_model_gives(raw: dict[str, Any]) -> None:
    assert PayloadValidator(MODEL, DECLARED)(raw) == MODEL.model_validate(raw).model_dump(mode="json")


@pytest.mark.parametrize("raw", [
    {**GOOD, "id": "seven"},
    {**GOOD, "name": None},
    {**GOOD, "surplus": 1},
    {k: v for k, v in GOOD.items() if k != "vip"},
])
def test_what_the_checks_refuse_fails_with_the_models_errors(raw: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as fast:
        PayloadValidator(MODEL, DECLARED)(raw)
    with pytest.raises(ValidationError) as reference:
        MODEL.model_validate(raw)
    assert fast.value.errors() == reference.value.errors()


def test_a_declared_decimal_is_left_to_the_model() -> None:
    declared = {"price": "decimal", "sku": "str"}
    model = payload_model("Priced", EventTypeConfig(payload=declared))
    assert PayloadValidator(model, declared)({"price": "1.50", "sku": "a"}) == {"price": "1.50", "sku": "a"}


def test_an_assembled_event_is_the_validated_event() -> None:
    fields = {"event_id": "e-1", "event_type": "T", "event_version": 2, "aggregate_type": "thing",
              "aggregate_id": "7", "event_time": dt.datetime(2024, 6, 1, tzinfo=UTC), "effective_time": None,
              "processing_time": dt.datetime(2024, 6, 2, 3, 4, 5, 6, tzinfo=UTC), "source": "legacy",
              "sequence": "123", "correlation_id": "c", "causation_id": None, "payload": {"n": 1}}
    assembled, validated = assemble_event(dict(fields)), DomainEvent(**fields)
    assert assembled == validated
    assert assembled.to_json() == validated.to_json()
    assert orjson.loads(assembled.to_json()) == orjson.loads(validated.model_dump_json())
    assert assembled.model_dump() == validated.model_dump()
    with pytest.raises(ValidationError):
        assembled.event_id = "other"  # type: ignore[misc]  # frozen like any other
