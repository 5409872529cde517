"""Fixtures of the reliability tests: echo upstreams and one shared gateway for the hostile-input and
upstream-fault rows; rows that need a gateway of their own (restarts, other limits) start it themselves.

`STRANGLER_RELIABILITY_FULL=1` runs the long variants (see docs/operations-guarantees.md).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reliability.hostile_gateway import hostile_gateway_config
from tests.support.echo import EchoUpstream
from tests.support.faultproxy import FaultProxy
from tests.support.gateway import GatewayProcess
from tests.support.raw_upstream import RawUpstream


@pytest.fixture(scope="session")
def legacy_upstream() -> Iterator[EchoUpstream]:
    echo = EchoUpstream("legacy").start()
    yield echo
    echo.stop()


@pytest.fixture(scope="session")
def new_upstream() -> Iterator[EchoUpstream]:
    echo = EchoUpstream("new").start()
    yield echo
    echo.stop()


@pytest.fixture(scope="session")
def resetting() -> Iterator[RawUpstream]:
    upstream = RawUpstream("reset").start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="session")
def blackhole(legacy_upstream: EchoUpstream) -> Iterator[FaultProxy]:
    proxy = FaultProxy(legacy_upstream.port).start()
    proxy.set(mode="blackhole")
    yield proxy
    proxy.stop()


@pytest.fixture(scope="session")
def hostile_gateway(
    tmp_path_factory: pytest.TempPathFactory,
    legacy_upstream: EchoUpstream,
    new_upstream: EchoUpstream,
    resetting: RawUpstream,
    blackhole: FaultProxy,
) -> Iterator[GatewayProcess]:
    config = hostile_gateway_config(legacy_upstream, new_upstream, resetting, blackhole)
    process = GatewayProcess(config, tmp_path_factory.mktemp("hostile-gateway")).start()
    yield process
    process.stop()
