"""R7: SIGTERM while requests flow. The gateway stops accepting, answers every request it accepted (none is
reset or cut short) and exits 0 within `limits.drain_timeout`. A request can fail only if the gateway never
accepted it (refused, or reset while still in the kernel's queue): the upstream never saw it either.

Each request has its own connection and correlation id; a fifth of them take a second at the upstream."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.load import steady_load
from tests.reliability.report import record
from tests.support.echo import EchoUpstream, header_values
from tests.support.gateway import GatewayProcess, one_upstream_config

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.timeout(120)]

DRAIN_TIMEOUT = 5.0
RATE, DURATION, SIGTERM_AT = 100.0, 6.0, 3.0


@pytest.fixture
def gateway(tmp_path: Path, legacy_upstream: EchoUpstream) -> Iterator[GatewayProcess]:
    config = one_upstream_config(legacy_upstream.url, drain_timeout=DRAIN_TIMEOUT)
    process = GatewayProcess(config, tmp_path / "gateway").start()
    yield process
    process.stop()


def test_sigterm_under_load_resets_no_accepted_request(gateway: GatewayProcess, legacy_upstream: EchoUpstream) -> None:
    run = f"r7-{time.time_ns()}"
    since = len(legacy_upstream.records)
    times: dict[str, float] = {}

    def terminate() -> None:
        time.sleep(SIGTERM_AT)
        times["signalled"] = time.monotonic()
        gateway.terminate()
        assert gateway.process is not None
        times["exit_code"] = gateway.process.wait(DRAIN_TIMEOUT + 10)
        times["exited"] = time.monotonic()

    def headers(i: int) -> dict[str, str]:
        return {"x-correlation-id": f"{run}-{i}", **({"x-echo-delay": "1"} if i % 5 == 0 else {})}

    thread = threading.Thread(target=terminate)
    thread.start()
    outcomes = asyncio.run(steady_load(lambda i: f"{gateway.url}/r7/{i}", RATE, DURATION, 15, headers_of=headers,
                                       new_connections=True))
    thread.join()
    time.sleep(0.2)
    reached = {header_values(r, "x-correlation-id")[0].decode() for r in legacy_upstream.records[since:]}

    answered = [o for o in outcomes if o.status is not None]
    failed = [o for o in outcomes if o.status is None]
    assert {o.status for o in answered} == {200}
    cut_off = [o for o in failed if f"{run}-{o.index}" in reached]
    assert cut_off == [], f"{len(cut_off)} requests reached the upstream and got no answer: {cut_off[:3]}"
    assert all(f"{run}-{o.index}" in reached for o in answered)
    assert all(o.sent >= times["signalled"] for o in failed), "a request failed before the signal"
    in_flight = [o for o in answered if o.sent < times["signalled"] < o.sent + o.elapsed]
    assert in_flight, "no request was in flight at the signal: the test proves nothing"
    assert times["exit_code"] == 0
    took = times["exited"] - times["signalled"]
    assert took < DRAIN_TIMEOUT, f"exit took {took:.2f} s"
    errors = Counter(o.error.split("(")[0] if o.error else "" for o in failed)
    record("R7", f"{len(outcomes)} requests, SIGTERM at {SIGTERM_AT:g} s",
           f"{len(in_flight)} in flight at the signal all answered 200; {len(cut_off)} accepted and cut off; "
           f"{len(failed)} never accepted ({dict(errors)}); exit 0 after {took:.2f} s (drain timeout "
           f"{DRAIN_TIMEOUT:g} s)")
