"""The reconcile package's part of the configuration: `reconcile.jobs.NAME` and `reconcile.repair`.

    reconcile:
      repair: {kind: kafka, bootstrap_servers: 127.0.0.1:9092, topic: reconciliation}   # or {kind: jsonl, path: ...}
      jobs:
        customers:
          entity: customer
          legacy: {url: postgresql+psycopg://..., table: crm.customers, key: [id]}
          new:    {http: "http://127.0.0.1:8002/customers/{customer_id}", key: [customer_id]}
          fields: {full_name: /name, balance: {new: /balance, type: decimal, scale: 2}}
          every: 15m
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from strangler.model import ConfigModel as Model

FieldType = Literal["auto", "text", "integer", "decimal", "float", "boolean", "timestamp", "date", "json"]
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")


def parse_duration(value: str | float | int) -> float:
    """Seconds from `90`, `"90s"`, `"15m"`, `"1h30m"`; ValueError otherwise."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif re.fullmatch(r"\d+(?:\.\d+)?", str(value).strip()):
        seconds = float(str(value).strip())
    else:
        match = _DURATION.fullmatch(str(value).strip())
        if not match or not any(match.groups()):
            raise ValueError(f"expected a duration such as 30s, 15m or 1h30m, got {value!r}")
        h, m, s = (float(g) if g else 0.0 for g in match.groups())
        seconds = h * 3600 + m * 60 + s
    if seconds <= 0:
        raise ValueError(f"expected a positive duration, got {value!r}")
    return seconds


class FieldSpec(Model):
    """How one compared field is read on the new side and normalised on both."""

    new: str = Field(description="the new side's column (SQL) or JSON Pointer (HTTP)")
    type: FieldType = "auto"
    scale: int | None = Field(None, ge=0, le=30, description="decimal places compared (decimal, float)")
    precision: Literal["s", "ms", "us"] = Field("us", description="timestamp precision compared")
    trim: bool = Field(True, description="strip surrounding white space of text")
    casefold: bool = False
    legacy: str | None = Field(None, description="JSON Pointer on a legacy HTTP side (default: /<name>)")


class SqlSide(Model):
    url: str = Field(description="SQLAlchemy URL: PostgreSQL, MariaDB or MySQL (mysql+pymysql://), SQLite")
    table: str | None = Field(None, description="schema.table or table")
    query: str | None = Field(None, description="a SELECT whose columns are the key and the mapped fields")
    key: list[str] = Field(min_length=1)
    timezone: str = Field("UTC", description="zone of timestamps stored without one")
    fetch_size: int = Field(5000, ge=100, le=1_000_000)

    @model_validator(mode="after")
    def _one_source(self) -> SqlSide:
        if (self.table is None) == (self.query is None):
            raise ValueError("a SQL side needs exactly one of 'table' or 'query'")
        return self


class HttpSide(Model):
    http: str = Field(description="URL template; {KEY} placeholders take the key columns' values")
    key: list[str] = Field(min_length=1, description="placeholder names, paired in order with the SQL side's key")
    headers: dict[str, str] = Field(default_factory=dict)
    concurrency: int = Field(8, ge=1, le=512, description="requests in flight")
    rate: float = Field(50.0, gt=0, description="requests per second at most")
    timeout: float = Field(5.0, gt=0)
    retries: int = Field(2, ge=0, le=10, description="extra attempts after a connection error or 5xx")
    timezone: str = Field("UTC", description="zone of timestamps given without an offset")

    @model_validator(mode="after")
    def _placeholders(self) -> HttpSide:
        names = set(re.findall(r"\{([^{}]+)\}", self.http))
        missing = sorted(set(self.key) - names)
        if missing:
            raise ValueError(f"the URL template has no placeholder for key {', '.join(missing)}")
        return self


class JobConfig(Model):
    entity: str = Field(min_length=1)
    legacy: SqlSide | HttpSide
    new: SqlSide | HttpSide
    fields: dict[str, str | FieldSpec] = Field(min_length=1, description="legacy column -> new column or spec")
    every: float | None = Field(None, description="run inside `strangler serve` at this interval (e.g. 15m)")
    no_authority: Literal["error", "report"] = Field(
        "error", description="compared fields that no precedence rule covers: a configuration error, or "
                             "reported as 'no-authority' drift")
    chunk_rows: int = Field(100_000, ge=1000, description="rows per checkpointed chunk (integer keys)")
    chunks: int = Field(1, ge=1, le=4096, description="hash chunks for keys that are not integers")
    buckets: int = Field(4096, ge=16, le=65536, description="checksummed buckets per chunk and level")
    leaf_rows: int = Field(256, ge=1, description="buckets this small are fetched and compared row by row")

    @field_validator("every", mode="before")
    @classmethod
    def _every(cls, value: str | float | None) -> float | None:
        return None if value is None else parse_duration(value)

    @field_validator("buckets")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError(f"expected a power of two, got {value}")
        return value

    @model_validator(mode="after")
    def _sides(self) -> JobConfig:
        if isinstance(self.legacy, HttpSide) and isinstance(self.new, HttpSide):
            raise ValueError("at least one side must be SQL (it enumerates the keys)")
        if len(self.legacy.key) != len(self.new.key):
            raise ValueError(f"legacy has {len(self.legacy.key)} key columns and new has {len(self.new.key)}")
        return self

    def specs(self) -> dict[str, FieldSpec]:
        """Every field as a full spec (the shorthand `legacy: new` becomes `{new: ...}`)."""
        return {name: FieldSpec(new=spec) if isinstance(spec, str) else spec for name, spec in self.fields.items()}


class RepairSink(Model):
    kind: Literal["kafka", "jsonl"]
    bootstrap_servers: str | None = None
    topic: str | None = None
    path: str | None = None
    settings: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _kind_keys(self) -> RepairSink:
        if self.kind == "kafka" and not (self.bootstrap_servers and self.topic):
            raise ValueError("a kafka repair sink needs 'bootstrap_servers' and 'topic'")
        if self.kind == "jsonl" and not self.path:
            raise ValueError("a jsonl repair sink needs 'path'")
        return self


class ReconcileConfig(Model):
    jobs: dict[str, JobConfig] = Field(default_factory=dict)
    repair: RepairSink | None = Field(None, description="where `--repair emit` publishes")
