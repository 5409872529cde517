"""Routing modes and the pure routing decision: (capability, flag, key) -> primary and mirror upstream."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Mode(enum.StrEnum):
    LEGACY = "legacy"
    SHADOW = "shadow"
    CANARY = "canary"
    NEW = "new"
    NEW_ONLY = "new-only"

    @property
    def rank(self) -> int:
        return _ORDER.index(self)


_ORDER = [Mode.LEGACY, Mode.SHADOW, Mode.CANARY, Mode.NEW, Mode.NEW_ONLY]


@dataclass(frozen=True, slots=True)
class RoutingFlag:
    """The stored state of one capability's routing."""

    mode: Mode
    percent: float = 0.0
    version: int = 0


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    primary: str
    mirror: str | None
    target: str  # "legacy" or "new": which side answers


def decide(legacy: str, new: str | None, flag: RoutingFlag, bucket: int | None) -> RoutingDecision:
    """Choose the serving upstream and the mirror (or None).

    `bucket` is the request's sticky bucket in 0..9999 (None when the request has no key and must go
    to legacy). Canary sends a bucket to new when bucket < percent * 100, so raising percent only ever
    moves keys from legacy to new. The threshold is rounded, not truncated: 0.29 * 100 is 28.999...
    in floating point and must still give 29 buckets.
    """
    mode = flag.mode
    if new is None or mode is Mode.LEGACY:
        return RoutingDecision(legacy, None, "legacy")
    if mode is Mode.SHADOW:
        return RoutingDecision(legacy, new, "legacy")
    if mode is Mode.CANARY:
        if bucket is not None and bucket < round(flag.percent * 100):
            return RoutingDecision(new, legacy, "new")
        return RoutingDecision(legacy, new, "legacy")
    if mode is Mode.NEW:
        return RoutingDecision(new, legacy, "new")
    return RoutingDecision(new, None, "new")
