"""The maturity ledger's configuration (`maturity` at the top level)."""

from __future__ import annotations

from pydantic import Field

from strangler.model import ConfigModel


class MaturityConfig(ConfigModel):
    track_methods: list[str] = Field(default_factory=lambda: ["POST", "PUT", "PATCH", "DELETE"],
                                     description="requests of a capability with these methods are changes")
    stuck_after: float = Field(1800.0, gt=0, description="seconds in one stage after which a change is stuck")
    window: float = Field(86400.0, gt=0, description="seconds of recent changes the lag figures cover")
