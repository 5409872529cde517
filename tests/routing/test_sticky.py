"""Routing decisions through `Router`: the five modes, and canary stickiness (share, monotonicity, key sources).

`decide` itself is tested in test_modes.py; here every decision goes through the router as the proxy calls
it, with the sticky key read from the request by `request_key`.
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import pytest

from strangler.config import StranglerConfig
from strangler.routing import Mode, RoutingDecision, RoutingFlag, decide
from strangler.routing.router import Router, StaticFlags
from strangler.routing.sticky import BUCKETS, cookie_value, request_key, sticky_bucket

CAP = "customer-profile"
KEYS = 10_000


class Flags:
    """A `FlagSource` whose flags a test sets."""

    def __init__(self, **flags: RoutingFlag) -> None:
        self.flags = {name.replace("_", "-"): flag for name, flag in flags.items()}

    def flag(self, capability: str) -> RoutingFlag:
        return self.flags.get(capability, RoutingFlag(Mode.LEGACY))


def capabilities(sticky: str | None = "path:id", unkeyed: str = "legacy") -> dict[str, Any]:
    return StranglerConfig.model_validate(
        {
            "upstreams": {n: {"url": "http://127.0.0.1:9"} for n in ("monolith", "customers", "billing-svc")},
            "default_upstream": "monolith",
            "capabilities": {
                CAP: {"legacy": "monolith", "new": "customers", "routes": ["GET /customers/{id}"],
                      "sticky": sticky, "unkeyed": unkeyed},
                "billing": {"legacy": "monolith", "new": "billing-svc", "routes": ["GET /billing/{id}"],
                            "sticky": "path:id"},
                "reports": {"legacy": "monolith", "routes": ["GET /reports/{rest:path}"]},
            },
        }
    ).capabilities


def route(
    router: Router, path: str, headers: Sequence[tuple[bytes, bytes]] = (), query: bytes = b"", method: str = "GET"
) -> Any:
    """As the proxy routes: the key is read from the request only when the router asks for it."""
    return router.route(method, path, lambda spec, params: request_key(spec, params, headers, query))


def canary(percent: float) -> Flags:
    return Flags(customer_profile=RoutingFlag(Mode.CANARY, percent, 1))


# --- the five modes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "primary", "mirror", "target"),
    [
        (RoutingFlag(Mode.LEGACY), "monolith", None, "legacy"),
        (RoutingFlag(Mode.SHADOW), "monolith", "customers", "legacy"),
        (RoutingFlag(Mode.CANARY, 100.0), "customers", "monolith", "new"),
        (RoutingFlag(Mode.CANARY, 0.0), "monolith", "customers", "legacy"),
        (RoutingFlag(Mode.NEW), "customers", "monolith", "new"),
        (RoutingFlag(Mode.NEW_ONLY), "customers", None, "new"),
    ],
)
def test_each_mode_routes_through_the_router_as_the_mode_table_says(
    flag: RoutingFlag, primary: str, mirror: str | None, target: str
) -> None:
    router = Router(capabilities(), Flags(customer_profile=flag), "monolith")
    found = route(router, "/customers/42")
    assert (found.capability, found.template.text, dict(found.params)) == (CAP, "GET /customers/{id}", {"id": "42"})
    assert found.decision == RoutingDecision(primary, mirror, target)
    assert found.flag == flag
    assert found.decision == decide("monolith", "customers", flag, sticky_bucket(CAP, "42"))


@pytest.mark.parametrize("mode", list(Mode))
def test_a_capability_without_a_new_side_always_goes_to_legacy(mode: Mode) -> None:
    router = Router(capabilities(), Flags(reports=RoutingFlag(mode, 100.0)), "monolith")
    assert route(router, "/reports/2024/q1").decision == RoutingDecision("monolith", None, "legacy")


def test_unmatched_requests_go_to_the_default_upstream_or_nowhere() -> None:
    flags = Flags(customer_profile=RoutingFlag(Mode.NEW_ONLY))
    found = route(Router(capabilities(), flags, "monolith"), "/elsewhere")
    assert (found.capability, found.decision, found.flag) == (None, RoutingDecision("monolith", None, "legacy"), None)
    assert route(Router(capabilities(), flags, "monolith"), "/customers/42", method="DELETE").capability is None
    assert route(Router(capabilities(), flags, None), "/elsewhere") is None


def test_static_flags_route_by_the_configured_initial_modes() -> None:
    caps = StranglerConfig.model_validate(
        {
            "upstreams": {"monolith": {"url": "http://127.0.0.1:9"}, "customers": {"url": "http://127.0.0.1:9"}},
            "capabilities": {CAP: {"legacy": "monolith", "new": "customers", "routes": ["GET /customers/{id}"],
                                   "mode": "canary", "percent": 30, "sticky": "path:id"}},
        }
    ).capabilities
    router = Router(caps, StaticFlags(caps), None)
    assert route(router, "/customers/1").flag == RoutingFlag(Mode.CANARY, 30.0, 0)


def test_the_router_reads_the_flag_on_every_request() -> None:
    flags = Flags(customer_profile=RoutingFlag(Mode.LEGACY))
    router = Router(capabilities(), flags, "monolith")
    assert route(router, "/customers/42").decision.target == "legacy"
    flags.flags[CAP] = RoutingFlag(Mode.NEW_ONLY, 0.0, 2)
    assert route(router, "/customers/42").decision.target == "new"


# --- canary share and monotonicity ------------------------------------------------------------------------


def on_new(router: Router, keys: range) -> set[int]:
    return {k for k in keys if route(router, f"/customers/user-{k}").decision.target == "new"}


def test_canary_share_is_within_two_points_and_raising_it_never_moves_a_key_back() -> None:
    keys = range(KEYS)
    flags = canary(5.0)
    router = Router(capabilities(), flags, "monolith")
    previous: set[int] = set()
    for percent in (5.0, 25.0, 50.0):
        flags.flags[CAP] = RoutingFlag(Mode.CANARY, percent, 1)
        now_new = on_new(router, keys)
        share = 100.0 * len(now_new) / KEYS
        assert abs(share - percent) <= 2.0, (percent, share)
        assert previous <= now_new, f"{len(previous - now_new)} keys moved back to legacy at {percent}%"
        previous = now_new
    # and back down: lowering the share only moves keys to legacy
    flags.flags[CAP] = RoutingFlag(Mode.CANARY, 25.0, 1)
    assert on_new(router, keys) <= previous


def test_every_percent_step_only_adds_keys() -> None:
    buckets = {k: sticky_bucket(CAP, f"user-{k}") for k in range(2000)}
    previous: set[int] = set()
    for percent in range(0, 101):
        flag = RoutingFlag(Mode.CANARY, float(percent))
        now_new = {k for k, b in buckets.items() if decide("m", "c", flag, b).target == "new"}
        assert previous <= now_new
        previous = now_new
    assert previous == set(buckets)


def test_the_same_key_always_lands_on_the_same_side() -> None:
    first = Router(capabilities(), canary(50.0), "monolith")
    second = Router(capabilities(), canary(50.0), "monolith", rng=random.Random(7))
    sides = [route(first, f"/customers/user-{k}").decision.target for k in range(500)]
    assert sides == [route(first, f"/customers/user-{k}").decision.target for k in range(500)]
    assert sides == [route(second, f"/customers/user-{k}").decision.target for k in range(500)]
    assert {"new", "legacy"} == set(sides)


def test_buckets_are_stable_across_processes() -> None:
    """The hash is not Python's `hash()` (salted per process): every gateway instance agrees on a key's side."""
    keys = [f"user-{k}" for k in range(200)]
    script = (
        "import json, sys; from strangler.routing.sticky import sticky_bucket; "
        f"print(json.dumps([sticky_bucket({CAP!r}, k) for k in {keys!r}]))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == str([sticky_bucket(CAP, k) for k in keys]).replace("'", '"')
    assert sticky_bucket(CAP, "user-1") == 5957  # pinned: changing the hash would reshuffle live canaries


def test_buckets_cover_the_range_evenly_and_differ_per_capability() -> None:
    buckets = [sticky_bucket(CAP, f"user-{k}") for k in range(KEYS)]
    assert min(buckets) >= 0 and max(buckets) < BUCKETS
    deciles = [0] * 10
    for b in buckets:
        deciles[b * 10 // BUCKETS] += 1
    assert all(900 <= d <= 1100 for d in deciles), deciles
    other = [sticky_bucket("billing", f"user-{k}") for k in range(KEYS)]
    same_side = sum((a < 5000) == (b < 5000) for a, b in zip(buckets, other, strict=True))
    assert 4700 <= same_side <= 5300  # independent: the same users are not always first in every canary


# --- requests without a key -------------------------------------------------------------------------------


def test_unkeyed_requests_go_to_legacy_by_default() -> None:
    router = Router(capabilities(sticky="header:x-customer"), canary(99.0), "monolith")
    assert {route(router, "/customers/1").decision.target for _ in range(1000)} == {"legacy"}
    assert route(router, "/customers/1", [(b"x-customer", b"")]).decision.target == "legacy"  # empty: no key


def test_unkeyed_random_spreads_requests_by_the_percent() -> None:
    router = Router(capabilities(sticky="header:x-customer", unkeyed="random"), canary(25.0), "monolith",
                    rng=random.Random(1))
    targets = [route(router, "/customers/1").decision.target for _ in range(KEYS)]
    assert abs(100.0 * targets.count("new") / KEYS - 25.0) <= 2.0
    keyed = {route(router, "/customers/1", [(b"x-customer", b"c-7")]).decision.target for _ in range(200)}
    assert len(keyed) == 1  # a request with a key is still sticky


def test_unkeyed_random_without_a_sticky_spec_is_random_per_request() -> None:
    router = Router(capabilities(sticky=None, unkeyed="random"), canary(50.0), "monolith", rng=random.Random(3))
    targets = {route(router, "/customers/1").decision.target for _ in range(100)}
    assert targets == {"new", "legacy"}


# --- where the key comes from -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "headers", "query"),
    [
        ("path:id", [], b""),
        ("header:X-Customer", [(b"x-customer", b"KEY")], b""),
        ("cookie:cid", [(b"cookie", b"theme=dark; cid=KEY; prefs={\"a\":1}")], b""),
        ("query:cid", [], b"page=2&cid=KEY"),
    ],
)
def test_the_sticky_key_comes_from_the_named_part_of_the_request(
    spec: str, headers: list[tuple[bytes, bytes]], query: bytes
) -> None:
    router = Router(capabilities(sticky=spec), canary(50.0), "monolith")
    # two keys that the 50% canary puts on different sides
    new_key = next(f"k{i}" for i in range(1000) if sticky_bucket(CAP, f"k{i}") < 5000)
    old_key = next(f"k{i}" for i in range(1000) if sticky_bucket(CAP, f"k{i}") >= 5000)
    for key, side in ((new_key, "new"), (old_key, "legacy")):
        path = f"/customers/{key}" if spec.startswith("path:") else "/customers/any"
        sent = [(k, v.replace(b"KEY", key.encode())) for k, v in headers]
        assert route(router, path, sent, query.replace(b"KEY", key.encode())).decision.target == side
    if not spec.startswith("path:"):
        assert route(router, "/customers/any").decision.target == "legacy"  # the key is missing


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (b"cid=42", "42"),
        (b"a=1; cid=42", "42"),
        (b"cid=\"42\"", "42"),
        (b"prefs={\"a\":1}; cid=42", "42"),  # JSON in a neighbour: http.cookies gives up on the whole header
        (b"msg=hello world; cid=42", "42"),
        (b"flag; cid=42", "42"),
        (b"a=b;;cid=42", "42"),
        (b"name=\xe9t\xe9; cid=42", "42"),
        (b"xcid=1; cid=42", "42"),
        (b"cid=; cid=42", "42"),
        (b"cid=", None),
        (b"other=1", None),
    ],
)
def test_cookie_keys_survive_the_cookies_browsers_send_beside_them(header: bytes, value: str | None) -> None:
    assert cookie_value(header, b"cid") == value
    assert request_key("cookie:cid", {}, [(b"cookie", header)], b"") == value


def test_header_and_query_keys_take_the_first_non_empty_value() -> None:
    headers = [(b"x-customer", b""), (b"x-customer", b"c-1"), (b"x-customer", b"c-2")]
    assert request_key("header:X-Customer", {}, headers, b"") == "c-1"
    assert request_key("query:cid", {}, [], b"cid=&cid=%34%32&cid=9") == "42"
    assert request_key("cookie:cid", {}, [(b"cookie", b"a=1"), (b"cookie", b"cid=7")], b"") == "7"
    assert request_key("query:cid", {}, [], b"") is None
    assert request_key("path:id", {"id": ""}, [], b"") is None
