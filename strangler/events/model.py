"""The domain event: typed, versioned, with its time and provenance."""

from __future__ import annotations

import datetime as dt
import importlib
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from strangler.events.config import EventTypeConfig


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


_PY_TYPES: dict[str, Any] = {
    "str": str, "int": int, "float": float, "bool": bool, "decimal": Decimal,
    "datetime": dt.datetime, "date": dt.date, "json": Any,
}


def payload_model(name: str, config: EventTypeConfig) -> type[BaseModel]:
    """The pydantic model that validates one event type's payload (strict about unknown fields)."""
    if config.model is not None:
        module_name, _, attr = config.model.partition(":")
        model = getattr(importlib.import_module(module_name), attr)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"{config.model} is not a pydantic model")
        return model
    fields: dict[str, Any] = {}
    for field_name, kind in (config.payload or {}).items():
        base, _, nullable = kind.partition("|")
        py = _PY_TYPES[base]
        fields[field_name] = ((py | None) if nullable else py, ...)
    return create_model(  # type: ignore[call-overload, no-any-return]
        f"{name}V{config.version}", __config__=ConfigDict(extra="forbid", frozen=True), **fields
    )
