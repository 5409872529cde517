"""The configuration of the integration tests' shared gateway: one capability per behaviour under test."""

from __future__ import annotations

from typing import Any

from tests.support.echo import EchoUpstream
from tests.support.ports import free_port
from tests.support.raw_upstream import RawUpstream

SMALL_BODY_LIMIT = 1024
HANG_TIMEOUT = 1.0
HEADER_TIMEOUT = 1.5
NO_BREAKER = {"failures": 0}


def gateway_config(
    legacy: EchoUpstream,
    new: EchoUpstream,
    canned: RawUpstream,
    hanging: RawUpstream,
    resetting: RawUpstream,
    early_resetting: RawUpstream,
) -> dict[str, Any]:
    closed = f"http://127.0.0.1:{free_port()}"
    return {
        "workers": 2,
        "trusted_proxies": ["127.0.0.1/32"],
        "limits": {
            "max_request_body": "200MB",
            "max_header_bytes": "32KiB",
            "header_timeout": HEADER_TIMEOUT,
            "drain_timeout": 5,
        },
        "upstreams": {
            "legacy": {"url": legacy.url},
            "new": {"url": new.url},
            "legacy-preserving": {"url": legacy.url, "preserve_host": True},
            "canned": {"url": canned.url},
            # failing on purpose, again and again: without their circuit breakers, every call is made
            "refused": {"url": closed, "retries": 2, "circuit_breaker": NO_BREAKER},
            "refused-once": {"url": closed, "retries": 0, "circuit_breaker": NO_BREAKER},
            "hanging": {"url": hanging.url, "timeout": HANG_TIMEOUT, "circuit_breaker": NO_BREAKER},
            "resetting": {"url": resetting.url, "retries": 2, "circuit_breaker": NO_BREAKER},
            "early-resetting": {"url": early_resetting.url, "retries": 2, "circuit_breaker": NO_BREAKER},
        },
        "default_upstream": "legacy",
        "capabilities": {
            "orders": {"legacy": "legacy", "new": "new", "mode": "new-only", "routes": ["* /orders/{rest:path}"]},
            "billing": {"legacy": "legacy", "new": "new", "mode": "legacy", "routes": ["* /billing/{rest:path}"]},
            "preserved": {"legacy": "legacy-preserving", "routes": ["GET /preserved/{rest:path}"]},
            "small": {"legacy": "legacy", "routes": ["POST /small/{rest:path}"], "max_request_body": SMALL_BODY_LIMIT},
            "canned": {"legacy": "canned", "routes": ["* /canned/{rest:path}"]},
            "refused": {"legacy": "refused", "routes": ["* /refused/{rest:path}"]},
            "refused-once": {"legacy": "refused-once", "routes": ["* /refused-once/{rest:path}"]},
            "hanging": {"legacy": "hanging", "routes": ["* /hanging/{rest:path}"]},
            "resetting": {"legacy": "resetting", "routes": ["* /resetting/{rest:path}"]},
            "early-resetting": {"legacy": "early-resetting", "routes": ["* /early-resetting/{rest:path}"]},
        },
    }
