"""From a normalised request to a routing decision: match the capability, read its flag, decide.

The flag comes through `FlagSource`, a port: the configured initial modes (`StaticFlags`) or the flag
store's in-memory view. The router never touches the network or a database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from strangler.routing.config import CapabilityConfig
from strangler.routing.modes import RoutingDecision, RoutingFlag, decide
from strangler.routing.routes import RouteTable, RouteTemplate, parse_route


class FlagSource(Protocol):
    def flag(self, capability: str) -> RoutingFlag:
        """The current flag of `capability` (a configured name); must not block or do I/O."""
        ...


class StaticFlags:
    """Flags as the configuration sets them initially (`mode`, `percent`)."""

    def __init__(self, capabilities: Mapping[str, CapabilityConfig]) -> None:
        self._flags = {name: RoutingFlag(cap.mode, cap.percent, 0) for name, cap in capabilities.items()}

    def flag(self, capability: str) -> RoutingFlag:
        return self._flags[capability]


@dataclass(frozen=True, slots=True)
class Route:
    """Where one request goes. `capability` and `template` are None for the default upstream."""

    capability: str | None
    template: RouteTemplate | None
    decision: RoutingDecision
    params: Mapping[str, str]


class Router:
    def __init__(
        self,
        capabilities: Mapping[str, CapabilityConfig],
        flags: FlagSource,
        default_upstream: str | None,
    ) -> None:
        self._capabilities = dict(capabilities)
        self._flags = flags
        self._table = RouteTable(
            (name, parse_route(text)) for name, cap in capabilities.items() for text in cap.routes
        )
        self._default = (
            RoutingDecision(default_upstream, None, "legacy") if default_upstream is not None else None
        )

    def route(self, method: str, path: str, bucket_of: BucketFn | None = None) -> Route | None:
        """The route of a request, or None when nothing matches and there is no default upstream."""
        match = self._table.match(method, path)
        if match is None:
            if self._default is None:
                return None
            return Route(None, None, self._default, {})
        cap = self._capabilities[match.capability]
        flag = self._flags.flag(match.capability)
        bucket = bucket_of(match.capability, cap, match.params) if bucket_of is not None else None
        decision = decide(cap.legacy, cap.new, flag, bucket)
        return Route(match.capability, match.template, decision, match.params)


class BucketFn(Protocol):
    def __call__(self, capability: str, config: CapabilityConfig, params: Mapping[str, str]) -> int | None: ...
