"""`strangler serve -c FILE` as a separate process: write the configuration, start, wait until ready, stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.ports import free_port

ADMIN_TOKEN = "integration-admin-token-0123456789"


class GatewayProcess:
    """One `strangler serve` process. `config` is the YAML document without `listen` and `admin`.

    The process runs in `directory`, with its own SQLite store there unless `config` names one: gateways
    of different tests never share flags.
    """

    def __init__(self, config: dict[str, Any], directory: Path) -> None:
        directory = directory.resolve()
        self.port = free_port()
        self.admin_port = free_port()
        self.config = {
            "listen": f"127.0.0.1:{self.port}",
            "admin": {"listen": f"127.0.0.1:{self.admin_port}", "tokens": {"ops": ADMIN_TOKEN}},
            "store": f"sqlite:///{directory / 'strangler.db'}",
            **config,
        }
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.config_path = directory / "strangler.yaml"
        self.log_path = directory / "serve.log"
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False), encoding="utf-8")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("not started")
        return self.process.pid

    def start(self, timeout: float = 20.0) -> GatewayProcess:
        command = [sys.executable, "-m", "strangler", "--log-level", "WARNING", "serve", "-c", str(self.config_path)]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.directory
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"strangler serve exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.admin_url}/readyz", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"strangler serve was not ready within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def worker_pids(self) -> list[int]:
        """The proxy workers: the serve process's children (multiprocessing forks) but its shadow process."""
        return [pid for pid in children_of(self.pid) if command_name(pid) != SHADOW_PROCESS]

    def shadow_pid(self) -> int | None:
        """The shadow process (mirrors, comparisons), when the configuration has capabilities with two sides."""
        return next((pid for pid in children_of(self.pid) if command_name(pid) == SHADOW_PROCESS), None)

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait, then SIGKILL whatever is left (the process and its workers)."""
        if self.process is None:
            return None
        workers = children_of(self.pid) if self.process.poll() is None else []
        self.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return self.process.returncode

    def metrics(self) -> str:
        return httpx.get(f"{self.admin_url}/metrics", timeout=5.0).text


def one_upstream_config(url: str, **limits: float) -> dict[str, Any]:
    """Two workers in front of one upstream, `legacy`, that takes every request, under the given `limits`: the
    configuration of the tests of the serve process itself (draining, header timeouts, respawned workers)."""
    return {"workers": 2, "limits": limits, "upstreams": {"legacy": {"url": url}}, "default_upstream": "legacy"}


SHADOW_PROCESS = "shadow-process"  # its /proc/PID/comm


def command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def children_of(pid: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # the command name (field 2) may contain spaces; fields after its closing parenthesis are fixed
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            children.append(int(entry))
    return children


def memory_kib(pid: int, field: str = "VmRSS") -> int:
    """`VmRSS` (resident now) or `VmHWM` (peak resident) of a process, in KiB, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(f"{field} not in /proc/{pid}/status")


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`, in Prometheus text format."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        metric, _, label_text = series.partition("{")
        if metric != name:
            continue
        found = dict(_labels(label_text.rstrip("}")))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(value)
    return total


def _labels(text: str) -> list[tuple[str, str]]:
    pairs = []
    for part in text.split('",'):
        if "=" in part:
            key, _, value = part.partition("=")
            pairs.append((key.strip(), value.strip().strip('"')))
    return pairs
