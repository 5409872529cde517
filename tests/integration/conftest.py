"""Shared real servers for the integration tests: two echo upstreams, raw TCP upstreams, one gateway process.

The gateway (`strangler serve` as a subprocess) is started once per session with the configuration below;
tests that need another configuration (the drain test) start their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.echo import EchoUpstream
from tests.support.gateway import GatewayProcess
from tests.support.ports import free_port
from tests.support.raw_upstream import RawUpstream

SMALL_BODY_LIMIT = 1024
HANG_TIMEOUT = 1.0


@pytest.fixture(scope="session")
def legacy_echo() -> Iterator[EchoUpstream]:
    echo = EchoUpstream("legacy").start()
    yield echo
    echo.stop()


@pytest.fixture(scope="session")
def new_echo() -> Iterator[EchoUpstream]:
    echo = EchoUpstream("new").start()
    yield echo
    echo.stop()


@pytest.fixture(scope="session")
def canned_upstream() -> Iterator[RawUpstream]:
    """Answers whatever bytes a test puts in `.response` (which should say `Connection: close`)."""
    upstream = RawUpstream("canned").start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="session")
def hanging_upstream() -> Iterator[RawUpstream]:
    upstream = RawUpstream("hang").start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="session")
def resetting_upstream() -> Iterator[RawUpstream]:
    upstream = RawUpstream("reset").start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="session")
def early_resetting_upstream() -> Iterator[RawUpstream]:
    upstream = RawUpstream("reset-early").start()
    yield upstream
    upstream.stop()


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
        "limits": {"max_request_body": "200MB", "max_header_bytes": "32KiB", "drain_timeout": 5},
        "upstreams": {
            "legacy": {"url": legacy.url},
            "new": {"url": new.url},
            "legacy-preserving": {"url": legacy.url, "preserve_host": True},
            "canned": {"url": canned.url},
            "refused": {"url": closed, "retries": 2},
            "refused-once": {"url": closed, "retries": 0},
            "hanging": {"url": hanging.url, "timeout": HANG_TIMEOUT},
            "resetting": {"url": resetting.url, "retries": 2},
            "early-resetting": {"url": early_resetting.url, "retries": 2},
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


@pytest.fixture(scope="session")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    legacy_echo: EchoUpstream,
    new_echo: EchoUpstream,
    canned_upstream: RawUpstream,
    hanging_upstream: RawUpstream,
    resetting_upstream: RawUpstream,
    early_resetting_upstream: RawUpstream,
) -> Iterator[GatewayProcess]:
    config = gateway_config(
        legacy_echo, new_echo, canned_upstream, hanging_upstream, resetting_upstream, early_resetting_upstream
    )
    process = GatewayProcess(config, tmp_path_factory.mktemp("gateway")).start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def client(gateway: GatewayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30.0) as http:
        yield http
