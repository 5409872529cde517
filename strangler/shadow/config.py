"""The shadow package's part of a capability's configuration."""

from __future__ import annotations

from typing import Literal

from pydantic import ByteSize, Field, field_validator

from strangler.model import ConfigModel as Model


def _pointer_patterns(values: list[str]) -> list[str]:
    for value in values:
        if value != "" and not value.startswith("/"):
            raise ValueError(f"expected a JSON Pointer pattern starting with '/', got {value!r}")
    return values


class ShadowConfig(Model):
    writes: Literal["skip", "dry-run", "mirror"] = "skip"
    sample: float = Field(1.0, ge=0, le=1, description="share of requests mirrored")
    noise_sample: float = Field(0.1, ge=0, le=1, description="share of mirrored safe requests also sent twice "
                                                              "to the serving side to measure noise")
    max_body: ByteSize = ByteSize(1024 * 1024)
    max_in_flight: int = Field(100, ge=1, description="mirrored requests in flight per capability and worker")
    timeout: float = Field(10.0, gt=0)
    secondary: str | None = Field(None, description="a second instance of the serving side, used for noise")
    store_bodies: bool = False
    offload: bool = Field(False, description="mirror, compare and store in the gateway's shadow process instead of "
                          "the worker that served the request, which only hands the captured request and response "
                          "over: for machines with a core to spare; mirrors it cannot keep up with are dropped, "
                          "counted")


class CompareConfig(Model):
    ignore: list[str] = Field(default_factory=list, description="JSON Pointer patterns (`*` = one segment)")
    unordered: list[str] = Field(default_factory=list, description="arrays compared as multisets")
    headers: list[str] = Field(default_factory=lambda: ["content-type"])
    redact: list[str] = Field(default_factory=list, description="values masked before anything is stored")
    expected: list[str] = Field(default_factory=list, description="declared intended differences")
    numeric_tolerance: float = Field(0.0, ge=0)
    timestamps: dict[str, float] = Field(default_factory=dict, description="pattern -> tolerance in seconds")
    case_insensitive: list[str] = Field(default_factory=list)

    _check = field_validator("ignore", "unordered", "redact", "expected", "case_insensitive")(_pointer_patterns)

    @field_validator("timestamps")
    @classmethod
    def _timestamps(cls, value: dict[str, float]) -> dict[str, float]:
        _pointer_patterns(list(value))
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: list[str]) -> list[str]:
        return [h.lower() for h in value]


class DivergenceStoreConfig(Model):
    """Retention of comparisons and divergences in the store (`divergence_store` at the top level)."""

    retention_days: float = Field(14.0, gt=0)
    max_rows: int = Field(2_000_000, ge=1000, description="newest rows kept per table")
    prune_interval: float = Field(300.0, gt=0, description="seconds between retention passes")


class OutcomeKafkaConfig(Model):
    bootstrap_servers: str
    legacy_topics: list[str] = Field(default_factory=list, description="domain events of the legacy side")
    new_topics: list[str] = Field(default_factory=list, description="the new service's own domain events")
    group_id: str = "strangler-outcomes"
    settings: dict[str, str | int | float | bool] = Field(default_factory=dict)


class OutcomesConfig(Model):
    """Outcome comparison (`outcomes` at the top level): both sides' domain events, joined and compared."""

    window: float = Field(30.0, gt=0, description="seconds to wait for the other side's event")
    families: dict[str, str] = Field(default_factory=dict, description="event type -> family, to pair "
                                                                       "differently named event types")
    compare: CompareConfig = CompareConfig()
    capabilities: dict[str, str] = Field(default_factory=dict, description="aggregate type -> capability whose "
                                                                           "report and gate these results join")
    kafka: OutcomeKafkaConfig | None = None
