"""The serve process as operators see it: the admin listener, metrics, and a graceful drain on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.echo import EchoUpstream
from tests.support.gateway import ADMIN_TOKEN, GatewayProcess, metric_value, one_upstream_config

pytestmark = pytest.mark.integration

DRAIN_TIMEOUT = 6.0


def test_healthz_and_readyz_are_open(gateway: GatewayProcess) -> None:
    health = httpx.get(f"{gateway.admin_url}/healthz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    ready = httpx.get(f"{gateway.admin_url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True
    assert ready.json()["workers"] == {"alive": 2, "configured": 2}


def test_metrics_count_requests_by_capability(gateway: GatewayProcess, client: httpx.Client) -> None:
    def requests(capability: str, target: str) -> float:
        return metric_value(
            gateway.metrics(), "strangler_requests_total", capability=capability, target=target, status_class="2xx"
        )

    before = (requests("orders", "new"), requests("billing", "legacy"), requests("-", "legacy"))
    for _ in range(3):
        assert client.get("/orders/1").status_code == 200
    assert client.get("/billing/1").status_code == 200
    assert client.get("/elsewhere").status_code == 200
    deadline = time.monotonic() + 2  # the workers write their counts every 0.1 s
    while True:
        after = (requests("orders", "new"), requests("billing", "legacy"), requests("-", "legacy"))
        if [a - b for a, b in zip(after, before, strict=True)] == [3, 1, 1] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert [a - b for a, b in zip(after, before, strict=True)] == [3, 1, 1]
    response = httpx.get(f"{gateway.admin_url}/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    assert 'strangler_requests_total{capability="orders",status_class="2xx",target="new"}' in response.text


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token-0123456789", f"Basic {ADMIN_TOKEN}"])
def test_other_admin_paths_need_the_bearer_token(gateway: GatewayProcess, authorization: str | None) -> None:
    headers = {"authorization": authorization} if authorization else {}
    response = httpx.get(f"{gateway.admin_url}/flags", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["content-type"] == "application/problem+json"


def test_other_admin_paths_accept_the_bearer_token(gateway: GatewayProcess) -> None:
    response = httpx.get(f"{gateway.admin_url}/flags", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code != 401


@pytest.fixture
def draining_gateway(tmp_path: Path, legacy_echo: EchoUpstream) -> Iterator[GatewayProcess]:
    config = one_upstream_config(legacy_echo.url, drain_timeout=DRAIN_TIMEOUT)
    process = GatewayProcess(config, tmp_path / "draining").start()
    yield process
    process.stop()


def connection_refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except ConnectionRefusedError:
        return True


def test_sigterm_drains_in_flight_requests_then_exits(
    draining_gateway: GatewayProcess, legacy_echo: EchoUpstream
) -> None:
    gateway = draining_gateway
    before = legacy_echo.count
    outcome: dict[str, object] = {}

    def slow_request() -> None:
        try:
            response = httpx.get(f"{gateway.url}/slow", headers={"x-echo-delay": "2"}, timeout=15)
            outcome["status"] = response.status_code
            outcome["server"] = response.json()["server"]
        except Exception as exc:  # reported by the assertion below
            outcome["error"] = repr(exc)

    thread = threading.Thread(target=slow_request)
    thread.start()
    deadline = time.monotonic() + 5
    while legacy_echo.count == before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert legacy_echo.count == before + 1, "the slow request did not reach the upstream"

    signalled = time.monotonic()
    gateway.terminate()
    deadline = signalled + 1.5
    while not connection_refused(gateway.port) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert connection_refused(gateway.port), "new connections are still accepted while draining"
    readiness = httpx.get(f"{gateway.admin_url}/readyz", timeout=2)
    assert readiness.status_code == 503
    assert readiness.json()["draining"] is True
    assert gateway.process is not None
    assert gateway.process.poll() is None, "the process exited before the in-flight request finished"

    thread.join(10)
    assert outcome == {"status": 200, "server": "legacy"}
    exit_code = gateway.process.wait(DRAIN_TIMEOUT + 5)
    assert exit_code == 0
    assert time.monotonic() - signalled < DRAIN_TIMEOUT
    assert gateway.worker_pids() == []


def replacement_of(gateway: GatewayProcess, dead: int, *, poll: float) -> int:
    """The worker the supervisor starts in place of `dead` (waited for with `poll` seconds between looks)."""
    before = set(gateway.worker_pids()) - {dead}
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        new = set(gateway.worker_pids()) - before - {dead}
        if new:
            return new.pop()
        time.sleep(poll)
    raise AssertionError(f"worker {dead} was not replaced")


def test_a_dead_worker_is_replaced_and_a_starting_one_still_drains(tmp_path: Path, legacy_echo: EchoUpstream) -> None:
    gateway = GatewayProcess(one_upstream_config(legacy_echo.url, drain_timeout=3), tmp_path / "respawn").start()
    try:
        first, second = gateway.worker_pids()
        os.kill(first, signal.SIGKILL)
        replacement = replacement_of(gateway, first, poll=0.05)
        deadline = time.monotonic() + 5
        while httpx.get(f"{gateway.admin_url}/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(second, signal.SIGKILL)  # for a moment the replacement is the only worker: it must serve
        assert httpx.get(f"{gateway.url}/after-respawn", timeout=5).status_code == 200

        # a worker forked by the running supervisor must not swallow the drain's SIGTERM while it starts
        os.kill(replacement, signal.SIGKILL)
        replacement_of(gateway, replacement, poll=0)
        signalled = time.monotonic()
        gateway.terminate()
        assert gateway.process is not None
        assert gateway.process.wait(15) == 0
        assert time.monotonic() - signalled < 3
    finally:
        gateway.stop()
