"""A payload model named by import path in the mapping tests ('tests.events.models:AddressChanged')."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict


class AddressChanged(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: int
    street: str
    zip: str
    valid_from: dt.date
    changed_at: dt.datetime | None = None


NOT_A_MODEL = 42
