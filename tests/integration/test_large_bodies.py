"""100 MB each way through the proxy, streamed: the workers' resident memory must not grow with the body."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.echo import pattern, pattern_sha256
from tests.support.gateway import GatewayProcess, memory_kib

pytestmark = pytest.mark.integration

SIZE = 100 * 1000 * 1000
MAX_GROWTH_KIB = 60 * 1024


def reset_peaks(pids: list[int]) -> dict[int, int]:
    """Reset each process's peak RSS where the kernel allows it; return the resident size now."""
    for pid in pids:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            pass  # VmHWM then keeps an older peak: the comparison stays valid, only less sharp
    return {pid: memory_kib(pid, "VmRSS") for pid in pids}


def growth_kib(before: dict[int, int]) -> int:
    """The largest rise of a process's peak resident size over its size before."""
    return max(memory_kib(pid, "VmHWM") - rss for pid, rss in before.items())


@pytest.fixture
def workers(gateway: GatewayProcess, client: httpx.Client) -> list[int]:
    for _ in range(4):  # warm both workers up (imports, pools) before measuring
        client.get("/warm-up")
    pids = gateway.worker_pids()
    assert len(pids) == gateway.config["workers"]
    return pids


def counted(pieces: Iterator[bytes], total: list[int]) -> Iterator[bytes]:
    for piece in pieces:
        total[0] += len(piece)
        yield piece


def test_100mb_upload_is_streamed(client: httpx.Client, workers: list[int]) -> None:
    before = reset_peaks(workers)
    sent = [0]
    response = client.post(
        "/upload/large",
        content=counted(pattern(SIZE), sent),
        headers={"content-length": str(SIZE)},
        timeout=120,
    )
    assert response.status_code == 200
    record = response.json()
    assert sent[0] == SIZE
    assert record["body_length"] == SIZE
    assert record["body_sha256"] == pattern_sha256(SIZE)
    assert growth_kib(before) < MAX_GROWTH_KIB


def test_100mb_download_is_streamed(client: httpx.Client, workers: list[int]) -> None:
    before = reset_peaks(workers)
    digest = hashlib.sha256()
    received = 0
    with client.stream("GET", "/download/large", headers={"x-echo-download": str(SIZE)}, timeout=120) as response:
        assert response.status_code == 200
        for piece in response.iter_raw(1024 * 1024):
            digest.update(piece)
            received += len(piece)
    assert received == SIZE
    assert digest.hexdigest() == pattern_sha256(SIZE)
    assert growth_kib(before) < MAX_GROWTH_KIB
