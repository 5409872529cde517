"""R9: 1,000 client connections that hold the gateway without completing a request head: half send nothing,
half trickle a head a byte at a time (slow-loris). Each is answered 408 and closed at `limits.header_timeout`,
a normal request is still served meanwhile, and the workers' memory grows by a bounded amount."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.reliability.report import record
from tests.support.echo import EchoUpstream
from tests.support.gateway import GatewayProcess, memory_kib, one_upstream_config
from tests.support.rawhttp import parse_responses

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.timeout(120)]

HEADER_TIMEOUT = 3.0
CONNECTIONS = 1000


@pytest.fixture
def gateway(tmp_path: Path, legacy_upstream: EchoUpstream) -> Iterator[GatewayProcess]:
    config = one_upstream_config(legacy_upstream.url, header_timeout=HEADER_TIMEOUT)
    process = GatewayProcess(config, tmp_path / "gateway").start()
    yield process
    process.stop()


async def hold(port: int, trickle: bool) -> tuple[float, bytes]:
    """Open a connection, send nothing (or a head a byte every 0.25 s); seconds until closed, and the answer."""
    opened = time.monotonic()  # the gateway's clock starts later, when it accepts
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = b""

    async def drip() -> None:
        writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        while True:
            await asyncio.sleep(0.25)
            writer.write(b"a")

    dripping = asyncio.create_task(drip()) if trickle else None
    try:
        while chunk := await reader.read(65536):
            received += chunk
    except ConnectionError:
        pass
    finally:
        if dripping is not None:
            dripping.cancel()
        writer.close()
    return time.monotonic() - opened, received


def test_idle_and_slowloris_connections_are_closed_at_the_header_timeout(gateway: GatewayProcess) -> None:
    pids = gateway.worker_pids()
    rss_before = sum(memory_kib(pid) for pid in pids) / 1024
    peak = [rss_before]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.2):
            peak.append(sum(memory_kib(pid) for pid in pids) / 1024)

    sampler = threading.Thread(target=sample)
    sampler.start()
    served: dict[str, float] = {}

    def normal_request() -> None:
        time.sleep(HEADER_TIMEOUT / 2)  # all connections are open and held by now
        started = time.monotonic()
        status = httpx.get(f"{gateway.url}/during-the-attack", timeout=10).status_code
        served["elapsed"], served["status"] = time.monotonic() - started, status

    normal = threading.Thread(target=normal_request)
    normal.start()

    async def attack() -> list[tuple[float, bytes]]:
        return await asyncio.gather(*(hold(gateway.port, trickle=i % 2 == 1) for i in range(CONNECTIONS)))

    results = asyncio.run(attack())
    normal.join()
    sampling.set()
    sampler.join()
    time.sleep(0.5)
    rss_after = sum(memory_kib(pid) for pid in pids) / 1024

    durations = [d for d, _ in results]
    statuses = [parse_responses(data)[0].status if data else None for _, data in results]
    assert statuses.count(408) == CONNECTIONS, {s: statuses.count(s) for s in set(statuses)}
    assert min(durations) >= HEADER_TIMEOUT * 0.9
    assert max(durations) <= HEADER_TIMEOUT + 2.0, max(durations)  # the answer, then a linger of up to 1 s
    assert served == {"elapsed": served["elapsed"], "status": 200} and served["elapsed"] < 1.0
    growth = max(peak) - rss_before
    assert growth < 64, f"the workers grew {growth:.1f} MiB"
    assert rss_after - rss_before < 32
    record("R9", f"{CONNECTIONS} connections (half idle, half slow-loris), header_timeout {HEADER_TIMEOUT:g} s",
           f"all answered 408 and closed after {min(durations):.2f}-{max(durations):.2f} s "
           f"(median {statistics.median(durations):.2f}); a normal request meanwhile: 200 in "
           f"{served['elapsed'] * 1000:.0f} ms; workers' RSS {rss_before:.1f} MiB, peak +{growth:.1f} MiB, "
           f"after +{rss_after - rss_before:.1f} MiB")
