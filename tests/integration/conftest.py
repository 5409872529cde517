"""Shared real servers for the integration tests: two echo upstreams, raw TCP upstreams, one gateway process.

The gateway (`strangler serve` as a subprocess) is started once per session with `main_gateway`'s configuration;
tests that need another configuration (the drain test) start their own.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.integration.main_gateway import gateway_config
from tests.support.echo import EchoUpstream
from tests.support.gateway import GatewayProcess
from tests.support.raw_upstream import RawUpstream


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
