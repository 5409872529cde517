"""The shadow package's part of a capability's configuration."""

from __future__ import annotations

from typing import Literal

from pydantic import ByteSize, Field

from strangler.model import ConfigModel as Model


class ShadowConfig(Model):
    writes: Literal["skip", "dry-run", "mirror"] = "skip"
    sample: float = Field(1.0, ge=0, le=1)
    max_body: ByteSize = ByteSize(1024 * 1024)
    max_in_flight: int = Field(100, ge=1)
    timeout: float = Field(10.0, gt=0)
    secondary: str | None = None
    store_bodies: bool = False


class CompareConfig(Model):
    ignore: list[str] = Field(default_factory=list)
    unordered: list[str] = Field(default_factory=list)
    headers: list[str] = Field(default_factory=lambda: ["content-type"])
    redact: list[str] = Field(default_factory=list)
    numeric_tolerance: float = Field(0.0, ge=0)
