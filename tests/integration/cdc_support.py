"""Helpers for the CDC integration tests: a `strangler cdc run` process, configurations, reading events."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import yaml

from tests.support.kafka import consume_all
from tests.support.ports import free_port


def connector_config(source: dict[str, Any], sink: dict[str, Any], directory: Path, name: str = "legacy",
                     **connector: Any) -> dict[str, Any]:
    return {
        "cdc": {
            "state_dir": str(directory / "state"),
            "metrics_listen": f"127.0.0.1:{free_port()}",
            "connectors": {name: {"source": source, "sink": sink, **connector}},
        }
    }


class CdcProcess:
    """`strangler cdc run -c FILE` as a child process, with its /metrics and /healthz."""

    def __init__(self, config: dict[str, Any], directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.config_path = directory / "strangler.yaml"
        self.log_path = directory / "cdc.log"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        self.metrics_url = "http://" + config["cdc"]["metrics_listen"]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> CdcProcess:
        command = [sys.executable, "-m", "strangler", "cdc", "run", "-c", str(self.config_path), "--no-status"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self

    def health(self) -> dict[str, Any] | None:
        try:
            return httpx.get(self.metrics_url + "/healthz", timeout=2).json()  # type: ignore[no-any-return]
        except (httpx.HTTPError, ValueError):
            return None

    def metric(self, name: str) -> float | None:
        """The sum of a metric's samples (all label sets), or None if the process does not answer."""
        try:
            text = httpx.get(self.metrics_url + "/metrics", timeout=2).text
        except httpx.HTTPError:
            return None
        values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith(name) and not line.startswith("#") and line[len(name)] in "{ "]
        if "{" in name:  # an exact series, labels as Prometheus prints them (sorted)
            values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " ")]
        return sum(values) if values else 0.0

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def terminate(self, timeout: float = 60) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def eventually(condition: Callable[[], Any], timeout: float, what: str, process: CdcProcess | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if process is not None and process.process is not None and process.process.poll() is not None:
            raise AssertionError(f"the connector exited ({process.process.returncode}) waiting for {what}:\n"
                                 f"{process.log()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}"
                                 + (f"\n{process.log()}" if process else ""))
        time.sleep(0.1)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = path.read_bytes().splitlines()
    return [orjson.loads(line) for line in lines if line.endswith(b"}")]


def consume_events(bootstrap: str, topic: str, expected: int | None = None, timeout: float = 30) -> list[Any]:
    """(key, value) of every record of `topic`, parsed; values None for tombstones."""
    return [(orjson.loads(k) if k else None, orjson.loads(v) if v else None)
            for k, v in consume_all(bootstrap, topic, expected=expected, timeout=timeout)]


def wal_lsn(dsn: str) -> int:
    """The server's current WAL position."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return int(conn.execute("SELECT (pg_current_wal_lsn() - '0/0')::bigint").fetchone()[0])  # type: ignore[index]


def confirmed_lsn(dsn: str, slot: str = "strangler") -> int | None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT (confirmed_flush_lsn - '0/0')::bigint FROM pg_replication_slots "
                           "WHERE slot_name = %s", (slot,)).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def slot_released(dsn: str, slot: str = "strangler") -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
    return row is not None and not row[0]


def execute(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


os.environ.setdefault("PYTHONUNBUFFERED", "1")
