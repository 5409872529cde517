"""From a normalised request to a routing decision: match the capability, read its flag, decide.

The flag comes through `FlagSource`, a port: the configured initial modes (`StaticFlags`) or the flag
store's in-memory view (`FlagCache`). The router never touches the network or a database.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from strangler.routing.config import CapabilityConfig
from strangler.routing.modes import Mode, RoutingDecision, RoutingFlag, decide
from strangler.routing.routes import RouteTable, RouteTemplate, parse_route
from strangler.routing.sticky import BUCKETS, sticky_bucket

# (sticky spec, route params) -> the request's sticky key or None; supplied by the gateway per request
KeyOf = Callable[[str, Mapping[str, str]], "str | None"]


class FlagSource(Protocol):
    def flag(self, capability: str) -> RoutingFlag:
        """The current flag of `capability` (a configured name); must not block or do I/O."""
        ...


class StaticFlags:
    """Flags as the configuration sets them initially (`mode`, `percent`)."""

    def __init__(self, capabilities: Mapping[str, CapabilityConfig]) -> None:
        self._flags = initial_flags(capabilities)

    def flag(self, capability: str) -> RoutingFlag:
        return self._flags[capability]


def initial_flags(capabilities: Mapping[str, CapabilityConfig]) -> dict[str, RoutingFlag]:
    return {name: RoutingFlag(cap.mode, cap.percent, 0) for name, cap in capabilities.items()}


@dataclass(frozen=True, slots=True)
class Route:
    """Where one request goes. `capability` and `template` are None for the default upstream."""

    capability: str | None
    template: RouteTemplate | None
    decision: RoutingDecision
    params: Mapping[str, str]
    flag: RoutingFlag | None = None


class Router:
    def __init__(
        self,
        capabilities: Mapping[str, CapabilityConfig],
        flags: FlagSource,
        default_upstream: str | None,
        rng: random.Random | None = None,
    ) -> None:
        self._capabilities = dict(capabilities)
        self.flags = flags
        self._table = RouteTable((name, parse_route(text)) for name, cap in capabilities.items() for text in cap.routes)
        self._default = RoutingDecision(default_upstream, None, "legacy") if default_upstream is not None else None
        self._rng = rng or random.Random()

    def route(self, method: str, path: str, key_of: KeyOf | None = None) -> Route | None:
        """The route of a request, or None when nothing matches and there is no default upstream."""
        match = self._table.match(method, path)
        if match is None:
            if self._default is None:
                return None
            return Route(None, None, self._default, {})
        cap = self._capabilities[match.capability]
        flag = self.flags.flag(match.capability)
        bucket = None
        if flag.mode is Mode.CANARY:
            key = key_of(cap.sticky, match.params) if (key_of is not None and cap.sticky) else None
            if key is not None:
                bucket = sticky_bucket(match.capability, key)
            elif cap.unkeyed == "random":
                bucket = self._rng.randrange(BUCKETS)
        decision = decide(cap.legacy, cap.new, flag, bucket)
        return Route(match.capability, match.template, decision, match.params, flag)
