"""The routing package's part of the configuration: capabilities, their initial modes and gates."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, ByteSize, Field, field_validator, model_validator

from strangler.model import ConfigModel as Model
from strangler.routing.modes import Mode
from strangler.routing.routes import parse_route
from strangler.shadow.config import CompareConfig, ShadowConfig

_STICKY = re.compile(r"(path|header|cookie|query):[A-Za-z0-9_\-.]+")


def _route(text: str) -> str:
    parse_route(text)  # RouteTemplateError is a ValueError: pydantic reports it at routes[i]
    return text


class GateConfig(Model):
    min_samples: int = Field(200, ge=0)
    max_divergence_rate: float = Field(0.01, ge=0, le=1)
    window: float = Field(3600.0, gt=0, description="seconds of recent comparisons the gate looks at")
    outcome_min_samples: int = Field(0, ge=0, description="outcome comparisons required too (0: not required)")
    outcome_max_divergence_rate: float = Field(0.01, ge=0, le=1)


class CapabilityConfig(Model):
    legacy: str
    new: str | None = None
    routes: list[Annotated[str, AfterValidator(_route)]] = Field(min_length=1)
    mode: Mode = Mode.LEGACY
    percent: float = Field(0.0, ge=0, le=100)
    sticky: str | None = None
    entity_key: str | None = Field(None, description="where a change's entity key is: path:NAME | header:NAME | "
                                                    "query:NAME (default: the route's first path parameter)")
    unkeyed: Literal["legacy", "random"] = "legacy"
    max_request_body: ByteSize | None = None
    shadow: ShadowConfig = ShadowConfig()
    compare: CompareConfig = CompareConfig()
    gate: GateConfig = GateConfig()

    @field_validator("sticky", "entity_key")
    @classmethod
    def _sticky(cls, value: str | None) -> str | None:
        if value is not None and not _STICKY.fullmatch(value):
            raise ValueError(f"expected path:NAME, header:NAME, cookie:NAME or query:NAME, got {value!r}")
        return value

    @model_validator(mode="after")
    def _new_side(self) -> CapabilityConfig:
        if self.mode is not Mode.LEGACY and self.new is None:
            raise ValueError(f"mode {self.mode.value!r} needs a 'new' upstream")
        if self.mode is Mode.CANARY and self.sticky is None and self.unkeyed == "legacy":
            raise ValueError("canary mode needs 'sticky' (or unkeyed: random) to pick a side")
        return self


class FlagsConfig(Model):
    refresh_interval: float = Field(1.0, gt=0)
