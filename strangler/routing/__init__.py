"""Capabilities, their route templates, routing modes and the routing decision."""

from __future__ import annotations

from strangler.routing.modes import Mode, RoutingDecision, RoutingFlag, decide
from strangler.routing.router import FlagSource, Route, Router, StaticFlags
from strangler.routing.routes import (
    OverlapIndex,
    RouteOverlap,
    RouteTable,
    RouteTemplate,
    parse_route,
    templates_overlap,
)

__all__ = [
    "FlagSource", "Mode", "OverlapIndex", "Route", "RouteOverlap", "RouteTable", "RouteTemplate", "Router",
    "RoutingDecision", "RoutingFlag", "StaticFlags", "decide", "parse_route", "templates_overlap",
]
