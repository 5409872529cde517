from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def _env() -> dict[str, str]:
    # A wide, colourless console keeps each request on one line for the assertions below.
    return {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb", "PYTHONUNBUFFERED": "1"}


def _row(section: str, request: str, capability: str, served_by: str) -> re.Match[str] | None:
    pattern = rf"^\s+{re.escape(request)}\s+{re.escape(capability)}\s+{re.escape(served_by)}\s+200\s+ok\b.*$"
    return re.search(pattern, section, re.MULTILINE)


def _detail_after(section: str, request: str, occurrence: int) -> str:
    """The response excerpt printed under the `occurrence`-th (0-based) line of `request`."""
    lines = section.splitlines()
    starts = [i for i, line in enumerate(lines) if line.lstrip().startswith(request + " ")]
    return lines[starts[occurrence] + 1]


def _section(out: str, title: str, next_title: str | None) -> str:
    start = out.index(title)
    return out[start: out.index(next_title, start) if next_title else None]


def test_demo_walks_customer_profile_from_legacy_to_the_new_service() -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "strangler", "demo"], capture_output=True, text=True, env=_env(), timeout=90
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert elapsed < 60
    out = result.stdout
    titles = ["1. legacy", "2. shadow", "3. a promotion refused", "4. the difference fixed", "5. canary", "6. new",
              "What to look at"]
    legacy, shadow, refused, fixed, canary, new, look = (
        _section(out, title, following) for title, following in zip(titles, [*titles[1:], None], strict=True))

    assert _row(legacy, "GET /customers/1", "customer-profile", "legacy")
    assert _row(legacy, "PUT /customers/1/address", "customer-profile", "legacy")
    assert _row(legacy, "GET /branches", "(default)", "legacy")
    assert "new-customers" not in legacy

    assert "-> 200  mode shadow, version 1" in shadow
    assert _row(shadow, "PUT /customers/2/address", "customer-profile", "legacy")
    assert re.search(r"/full_name\s+3\d\.\d%\s+0\.0%\s+divergence\s+Maria van den Berg / Maria Van Den Berg", shadow)
    assert re.search(r"/generated_at\s+100\.0%\s+100\.0%\s+noise", shadow)
    assert "gate not met" in shadow

    assert "-> 412" in refused and "gate not met: divergence rate 0.3" in refused
    assert re.search(r"evidence: 6\d samples \(gate needs 50\), \d+ divergent = 3\d", refused)

    assert "500 more GET" in fixed and "gate met" in fixed and "gate not met" not in fixed

    assert "mode canary, version 2" in canary
    assert _row(canary, "GET /customers/1", "customer-profile", "legacy")
    assert _row(canary, "GET /customers/2", "customer-profile", "new-customers")
    assert _row(canary, "PUT /customers/2/address", "customer-profile", "new-customers")

    assert "mode new, version 3" in new
    assert _row(new, "GET /customers/1", "customer-profile", "new-customers")
    assert "Prinsengracht 263" in _detail_after(new, "GET /customers/1", 0)  # reached the new store through CDC
    assert _row(new, "GET /policies/503", "policy", "legacy")

    assert re.search(r"canary\s+2 legacy, 2 new-customers", look)
    assert len(re.findall(r"legacy\.crm\s+CustomerCorrespondenceAddressChanged", look)) == 4
    assert len(re.findall(r"customers\s+CustomerAddressChanged", look)) == 3
    assert re.search(r"customer 2: accepted -> applied \+\d+ ms -> propagated \+\d+ ms -> reconciled", look)
    assert "stage propagated, trusted: False" in look
    assert "v1 legacy -> shadow by demo:" in look and "(forced)" not in look and "v3 canary -> new by demo" in look

    correlation_ids = re.findall(rf"correlation id ({UUID})", out)
    assert len(correlation_ids) == 14 and len(set(correlation_ids)) == 14
    assert "All 14 exchanges and every check went as expected" in out
    assert "FAILED" not in out and "unexpected" not in out


class _Lines:
    """The subprocess's stdout read on a thread, so the test can wait for a line with a timeout."""

    def __init__(self, stream: object) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"{text!r} did not appear; output so far:\n{''.join(self.seen)}")


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_demo_serve_keeps_running_until_a_stop_signal(stop_signal: signal.Signals) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "strangler", "demo", "--serve"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
    )
    try:
        lines = _Lines(process.stdout)
        lines.wait_for("Serving", timeout=30)
        url_line = lines.wait_for("gateway ", timeout=10)
        url = re.search(r"http://127\.0\.0\.1:\d+", url_line)
        assert url, url_line
        dashboard = re.search(r"http://127\.0\.0\.1:\d+/dashboard/", lines.wait_for("dashboard ", timeout=10))
        token = lines.wait_for("admin token ", timeout=10).split()[-1]
        for name in ("legacy ", "new service "):
            assert re.search(r"http://127\.0\.0\.1:\d+", lines.wait_for(name, timeout=10))
        lines.wait_for("Press Ctrl-C to stop.", timeout=10)
        assert dashboard, "no dashboard URL"
        with httpx.Client(trust_env=False, timeout=5) as client:
            login = client.post(dashboard.group(0) + "login", data={"token": token})
            page = client.get(dashboard.group(0))
        assert login.status_code == 303 and page.status_code == 200
        assert "customer-profile" in page.text and "legacy-crm" in page.text  # the in-process CDC connector

        with httpx.Client(base_url=url.group(0), trust_env=False, timeout=5) as client:
            customer = client.get("/customers/3")
            policy = client.get("/policies/502")
        assert customer.status_code == 200 and customer.json()["full_name"] == "Ines Marques"
        assert customer.headers["x-served-by"] == "new-customers"  # the walkthrough left mode new in place
        assert policy.headers["x-served-by"] == "legacy"
        assert process.poll() is None

        process.send_signal(stop_signal)
        assert process.wait(timeout=15) == 0
        lines.wait_for("Stopping.", timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
