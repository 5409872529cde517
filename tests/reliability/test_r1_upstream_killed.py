"""R1: the legacy upstream is SIGKILLed during a run at a steady request rate and started again. During
the outage clients get only 502 or 503 (the breaker's fast 503 once it opened), never a hang past the
upstream's timeout nor a broken connection; after the restart every request succeeds again within 5 s.

CI runs 20 s at 100 requests a second with a 3 s outage; `STRANGLER_RELIABILITY_FULL=1` runs 60 s with 5 s."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.load import steady_load
from tests.reliability.report import full_run, record
from tests.reliability.upstream_process import UpstreamProcess
from tests.support.gateway import GatewayProcess
from tests.support.ports import free_port

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.timeout(240)]

DURATION, OUTAGE, KILL_AT = (60.0, 5.0, 25.0) if full_run() else (20.0, 3.0, 7.0)
RATE = 100.0
UPSTREAM_TIMEOUT = 5.0
RECOVERY = 5.0


@pytest.fixture
def upstream() -> Iterator[UpstreamProcess]:
    process = UpstreamProcess(free_port())
    process.start()
    yield process
    process.stop()


@pytest.fixture
def gateway(tmp_path: Path, upstream: UpstreamProcess) -> Iterator[GatewayProcess]:
    config = {
        "workers": 2,
        "upstreams": {"legacy": {"url": f"http://127.0.0.1:{upstream.port}", "timeout": UPSTREAM_TIMEOUT}},
        "default_upstream": "legacy",
    }
    process = GatewayProcess(config, tmp_path / "gateway").start()
    yield process
    process.stop()


def test_upstream_sigkilled_and_restarted_under_steady_load(gateway: GatewayProcess, upstream: UpstreamProcess) -> None:
    times: dict[str, float] = {}

    def outage() -> None:
        time.sleep(KILL_AT)
        times["killed"] = upstream.kill()
        time.sleep(OUTAGE)
        times["restarted"] = upstream.start()  # listening again

    killer = threading.Thread(target=outage)
    killer.start()
    outcomes = asyncio.run(steady_load(lambda i: f"{gateway.url}/orders/{i}", RATE, DURATION, UPSTREAM_TIMEOUT + 5))
    killer.join()
    killed, restarted = times["killed"], times["restarted"]

    errors = [o for o in outcomes if o.status is None]
    assert errors == [], f"{len(errors)} requests without a response, e.g. {errors[:3]}"
    slowest = max(o.elapsed for o in outcomes)
    assert slowest < UPSTREAM_TIMEOUT, f"a request took {slowest:.2f} s"
    before = [o for o in outcomes if o.sent + o.elapsed < killed]
    during = [o for o in outcomes if o.sent >= killed and o.sent + o.elapsed < restarted]
    after = [o for o in outcomes if o.sent >= restarted]
    assert before and during and after
    assert {o.status for o in before} == {200}
    assert {o.status for o in during} <= {502, 503}
    failed_after = [o for o in after if o.status != 200]
    assert {o.status for o in failed_after} <= {502, 503}
    recovery = max((o.sent + o.elapsed for o in failed_after), default=restarted) - restarted
    assert recovery <= RECOVERY, f"requests still failed {recovery:.2f} s after the restart"
    tail = [o for o in after if o.sent >= restarted + recovery]
    assert tail and {o.status for o in tail} == {200}
    statuses = Counter(o.status for o in outcomes)
    record("R1", f"{len(outcomes)} requests in {DURATION:g} s, upstream down {OUTAGE:g} s",
           f"statuses {dict(statuses)}; during the outage {dict(Counter(o.status for o in during))}; "
           f"slowest {slowest * 1000:.0f} ms; recovered {recovery:.2f} s after the restart")
