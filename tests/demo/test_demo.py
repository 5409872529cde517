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


def test_demo_walks_customer_profile_from_legacy_to_the_new_service() -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "strangler", "demo"], capture_output=True, text=True, env=_env(), timeout=60
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert elapsed < 20
    out = result.stdout
    phase_one, _, phase_two = out.partition("Phase 2: customer-profile in mode new-only")
    assert "Phase 1: customer-profile in mode legacy" in phase_one and phase_two

    assert _row(phase_one, "GET /customers/1", "customer-profile", "legacy")
    assert _row(phase_one, "PUT /customers/1/address", "customer-profile", "legacy")
    assert _row(phase_one, "GET /policies/501", "policy", "legacy")
    assert _row(phase_one, "GET /branches", "(default)", "legacy")
    assert "new-customers" not in phase_one
    assert "Prinsengracht 263" in _detail_after(phase_one, "GET /customers/1", 1)
    assert "Keizersgracht 123" not in _detail_after(phase_one, "GET /customers/1", 1)

    assert _row(phase_two, "GET /customers/2", "customer-profile", "new-customers")
    assert _row(phase_two, "PUT /customers/2/address", "customer-profile", "new-customers")
    assert _row(phase_two, "GET /policies/503", "policy", "legacy")
    assert not _row(phase_two, "GET /customers/2", "customer-profile", "legacy")
    assert "Torstrasse 49" in _detail_after(phase_two, "GET /customers/2", 1)
    assert '"full_name":"Jonas Weber"' in _detail_after(phase_two, "GET /customers/2", 0)
    # customer 1 moved on legacy in phase one; the new service's own store does not have that yet
    assert _row(phase_two, "GET /customers/1", "customer-profile", "new-customers")
    assert "Keizersgracht 123" in _detail_after(phase_two, "GET /customers/1", 0)

    correlation_ids = re.findall(rf"correlation id ({UUID})", out)
    assert len(correlation_ids) == 10 and len(set(correlation_ids)) == 10
    assert "All 10 exchanges went as expected" in out
    assert "FAILED" not in out


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
        for name in ("legacy ", "new service "):
            assert re.search(r"http://127\.0\.0\.1:\d+", lines.wait_for(name, timeout=10))
        lines.wait_for("Press Ctrl-C to stop.", timeout=10)

        with httpx.Client(base_url=url.group(0), trust_env=False, timeout=5) as client:
            customer = client.get("/customers/3")
            policy = client.get("/policies/502")
        assert customer.status_code == 200 and customer.json()["full_name"] == "Ines Marques"
        assert customer.headers["x-served-by"] == "new-customers"  # the walkthrough left new-only in place
        assert policy.headers["x-served-by"] == "legacy"
        assert process.poll() is None

        process.send_signal(stop_signal)
        assert process.wait(timeout=15) == 0
        lines.wait_for("Stopping.", timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
