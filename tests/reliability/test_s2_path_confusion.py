"""S2: path confusion. For every target of the corpus the gateway either answers 400 (505 where a CR LF in
the target ends the request line before its HTTP version) or forwards a path on which it decided the route:
the side that answers is the side the router picks for exactly the path the upstream received, and that
path is already normal (normalising it again changes nothing)."""

from __future__ import annotations

from collections import Counter

import orjson
import pytest

from strangler.config import StranglerConfig
from strangler.gateway.paths import PathRejected, normalize_path
from strangler.routing.router import Router, StaticFlags
from tests.reliability.corpus import load_lines
from tests.reliability.report import record
from tests.support.gateway import GatewayProcess
from tests.support.rawhttp import exchange, parse_responses

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

TARGETS = load_lines("paths.txt")


def test_route_is_decided_on_exactly_the_forwarded_path(hostile_gateway: GatewayProcess) -> None:
    config = StranglerConfig.model_validate(hostile_gateway.config)
    router = Router(config.capabilities, StaticFlags(config.capabilities), config.default_upstream)
    outcomes: Counter[str] = Counter()
    mismatches = []
    for target in TARGETS:
        for method in (b"GET", b"PUT"):
            data = method + b" " + target + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            responses = parse_responses(exchange(hostile_gateway.port, data, timeout=5))
            status = responses[0].status if responses else None
            if status == 400:
                outcomes["400"] += 1
                continue
            if status == 505 and b"\r\n" in target:  # the line ended inside the target: no HTTP/1.x version
                outcomes["505"] += 1
                continue
            if status != 200:
                mismatches.append((method, target, f"answered {status}, neither forwarded nor 400"))
                continue
            outcomes["forwarded"] += 1
            received = orjson.loads(responses[0].body)
            path = received["raw_path"]
            route = router.route(received["method"], path)
            expected = route.decision.primary if route is not None else None
            try:
                normal = normalize_path(path.encode("latin-1")) == path
            except PathRejected:
                normal = False
            if received["server"] != expected or not normal or received["method"] != method.decode():
                mismatches.append((method, target, f"{received['server']} answered {path!r}, router: {expected}"))
    record("S2", f"{len(TARGETS)} targets x 2 methods", f"{dict(outcomes)}, {len(mismatches)} mismatches")
    assert mismatches == []
    assert outcomes["forwarded"] > 50 and outcomes["400"] > 20  # the corpus exercises both outcomes
