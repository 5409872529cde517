"""The shared reliability gateway: a capability on each side for routing checks, and failing upstreams."""

from __future__ import annotations

from typing import Any

from tests.support.echo import EchoUpstream
from tests.support.faultproxy import FaultProxy
from tests.support.ports import free_port
from tests.support.raw_upstream import RawUpstream

CONNECT_TIMEOUT = 1.0
HANG_TIMEOUT = 2.0
NO_BREAKER = {"failures": 0}  # these upstreams fail on purpose; R5 tests the breaker on its own gateway


def hostile_gateway_config(
    legacy: EchoUpstream, new: EchoUpstream, resetting: RawUpstream, blackhole: FaultProxy
) -> dict[str, Any]:
    closed = f"http://127.0.0.1:{free_port()}"
    return {
        "workers": 2,
        "trusted_proxies": ["127.0.0.1/32"],
        "limits": {"header_timeout": 5, "drain_timeout": 5},
        "upstreams": {
            "legacy": {"url": legacy.url},
            "new": {"url": new.url},
            "refused": {"url": closed, "connect_timeout": CONNECT_TIMEOUT, "circuit_breaker": NO_BREAKER},
            "hanging": {"url": blackhole.url, "timeout": HANG_TIMEOUT, "circuit_breaker": NO_BREAKER},
            "resetting": {"url": resetting.url, "retries": 2, "circuit_breaker": NO_BREAKER},
        },
        "default_upstream": "legacy",
        "capabilities": {
            "admin-area": {"legacy": "legacy", "new": "new", "mode": "new-only",
                           "routes": ["* /api/admin/{rest:path}"]},
            "users": {"legacy": "legacy", "new": "new", "mode": "new-only",
                      "routes": ["GET /api/users/{id}", "PUT /api/users/{id}/address"]},
            "refused": {"legacy": "refused", "routes": ["* /refused/{rest:path}"]},
            "hanging": {"legacy": "hanging", "routes": ["* /hanging/{rest:path}"]},
            "resetting": {"legacy": "resetting", "routes": ["* /resetting/{rest:path}"]},
        },
    }
