"""The shadow process of `strangler serve`: the workers hand offloaded capabilities' mirrors to it; it lives and
dies with the gateway.

Mirrors are sent, compared and stored by one process beside the workers (its command name `shadow-process`),
counted in the gateway's /metrics. Killed, it is replaced while the workers go on answering (the mirrors
they hand over meanwhile are dropped and counted); it stops with the gateway, and dies with the supervisor.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.echo import EchoUpstream
from tests.support.gateway import GatewayProcess, children_of, metric_value

pytestmark = pytest.mark.integration


def shadow_config(legacy: EchoUpstream, new: EchoUpstream, offload: bool = True) -> dict[str, Any]:
    return {
        "workers": 2,
        "limits": {"drain_timeout": 3},
        "upstreams": {"legacy": {"url": legacy.url}, "new": {"url": new.url}},
        "default_upstream": "legacy",
        "capabilities": {
            "items": {"legacy": "legacy", "new": "new", "routes": ["GET /items/{id}", "POST /items"],
                      "mode": "shadow", "shadow": {"noise_sample": 0.0, "writes": "dry-run", "offload": offload}},
        },
    }


@pytest.fixture
def gateway(tmp_path: Path, legacy_echo: EchoUpstream, new_echo: EchoUpstream) -> Iterator[GatewayProcess]:
    process = GatewayProcess(shadow_config(legacy_echo, new_echo), tmp_path / "gateway").start()
    yield process
    process.stop()


def stored(gateway: GatewayProcess) -> dict[str, int]:
    """Stored comparison records by outcome (the writer flushes every half second)."""
    with sqlite3.connect(gateway.directory / "strangler.db") as conn:
        rows = conn.execute("SELECT outcome, count(*) FROM shadow_comparisons WHERE kind = 'candidate' "
                            "GROUP BY outcome").fetchall()
    return dict(rows)


def eventually(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.05)


def header(record: dict[str, Any], name: str) -> str | None:
    return next((v for k, v in record["headers"] if k == name), None)


def test_mirrors_are_sent_compared_and_stored_by_the_shadow_process(gateway: GatewayProcess,
                                                                     new_echo: EchoUpstream) -> None:
    shadow = gateway.shadow_pid()
    assert shadow is not None
    assert len(gateway.worker_pids()) == 2 and shadow not in gateway.worker_pids()
    run = uuid.uuid4().hex
    with httpx.Client(base_url=gateway.url) as client:
        for i in range(40):
            response = client.get(f"/items/{i}", headers={"x-correlation-id": f"{run}-{i}"})
            assert response.status_code == 200
            assert response.json()["server"] == "legacy"
        response = client.post("/items", content=b'{"name": "ada"}', headers={"x-correlation-id": f"{run}-post"})
        assert response.status_code == 200
    eventually(lambda: sum(stored(gateway).values()) == 41, "41 comparisons stored")
    assert stored(gateway) == {"compared": 41}
    mirrored = [r for r in new_echo.records if (header(r, "x-correlation-id") or "").startswith(run)]
    assert len(mirrored) == 41
    assert {header(r, "x-correlation-id") for r in mirrored} == {f"{run}-{i}" for i in range(40)} | {f"{run}-post"}
    assert {header(r, "x-strangler-shadow") for r in mirrored if r["method"] == "GET"} == {"1"}
    dry_run = next(r for r in mirrored if r["method"] == "POST")
    assert header(dry_run, "x-strangler-shadow") == "dry-run"
    assert dry_run["body_sha256"] == hashlib.sha256(b'{"name": "ada"}').hexdigest()
    # the shadow process writes its counts every 0.1 s
    eventually(lambda: metric_value(gateway.metrics(), "strangler_shadow_compared_total", capability="items") == 41,
               "41 comparisons counted in /metrics")
    assert metric_value(gateway.metrics(), "strangler_shadow_mirrored_total", capability="items") == 41


def test_a_killed_shadow_process_is_replaced_and_the_workers_go_on(gateway: GatewayProcess) -> None:
    first = gateway.shadow_pid()
    assert first is not None
    os.kill(first, signal.SIGKILL)
    time.sleep(0.1)  # the workers see the socket close (a frame written into a dying process is lost uncounted)
    sent = 0
    with httpx.Client(base_url=gateway.url) as client:

        def get() -> bool:
            nonlocal sent
            assert client.get(f"/items/{sent}").status_code == 200
            sent += 1
            return True

        for _ in range(20):  # while it is away: answered, mirrors dropped and counted
            get()
        eventually(lambda: gateway.shadow_pid() not in (None, first), "a new shadow process")
        eventually(lambda: get() and stored(gateway).get("compared", 0) > 0, "a comparison by the new process")
    eventually(lambda: sum(stored(gateway).values()) == sent, "every request recorded")
    outcomes = stored(gateway)
    assert set(outcomes) == {"compared", "dropped"}, outcomes

    def counted() -> tuple[float, float]:
        text = gateway.metrics()
        return (metric_value(text, "strangler_shadow_dropped_total", capability="items"),
                metric_value(text, "strangler_shadow_compared_total", capability="items"))

    # counts are written every 0.1 s
    eventually(lambda: counted() == (outcomes["dropped"], outcomes["compared"]), "the stored outcomes in /metrics")


def test_the_shadow_process_stops_with_the_gateway_and_dies_with_the_supervisor(
    tmp_path: Path, gateway: GatewayProcess, legacy_echo: EchoUpstream, new_echo: EchoUpstream
) -> None:
    shadow = gateway.shadow_pid()
    assert shadow is not None
    assert gateway.stop() == 0
    assert not alive(shadow)

    second = GatewayProcess(shadow_config(legacy_echo, new_echo), tmp_path / "second").start()
    orphan, workers = second.shadow_pid(), second.worker_pids()
    try:
        assert orphan is not None
        os.kill(second.pid, signal.SIGKILL)  # the supervisor, without a chance to stop anything
        eventually(lambda: not alive(orphan), "the shadow process's exit")
    finally:
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        second.stop()


def test_without_offload_there_is_no_shadow_process_and_workers_mirror(tmp_path: Path, legacy_echo: EchoUpstream,
                                                                         new_echo: EchoUpstream) -> None:
    gateway = GatewayProcess(shadow_config(legacy_echo, new_echo, offload=False), tmp_path / "in-workers").start()
    try:
        assert gateway.shadow_pid() is None
        assert len(children_of(gateway.pid)) == 2
        with httpx.Client(base_url=gateway.url) as client:
            for i in range(5):
                assert client.get(f"/items/{i}").status_code == 200
        eventually(lambda: stored(gateway) == {"compared": 5}, "5 comparisons stored by the workers")
    finally:
        gateway.stop()


def alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
