"""The broker stopped mid-run: the slot does not advance past anything undelivered, the connector reports
itself unhealthy, and it completes once the broker is back."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.integration.cdc_support import (
    CdcProcess,
    confirmed_lsn,
    connector_config,
    consume_events,
    eventually,
    execute,
    wal_lsn,
)
from tests.support.kafka import TansuBroker
from tests.support.postgres import PostgresDatabase

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def healthz(process: CdcProcess) -> int | None:
    try:
        return httpx.get(process.metrics_url + "/healthz", timeout=2).status_code
    except httpx.HTTPError:
        return None


def test_broker_outage(pg_database: PostgresDatabase, kafka_broker: TansuBroker, tmp_path: Path) -> None:
    kafka_broker.start()
    dsn = pg_database.dsn
    prefix = f"outage-{uuid.uuid4().hex[:8]}"  # the broker is shared by the session's tests
    execute(dsn, "CREATE TABLE t (id int PRIMARY KEY, note text)")
    config = connector_config(
        {"kind": "postgres", "dsn": dsn, "snapshot": "never", "heartbeat_interval": 1},
        {"kind": "kafka", "bootstrap_servers": kafka_broker.bootstrap_servers, "topic_prefix": prefix}, tmp_path,
        confirm_interval=0.5,
    )
    process = CdcProcess(config, tmp_path).start()
    try:
        eventually(lambda: healthz(process) == 200, 60, "a healthy start", process)
        execute(dsn, "INSERT INTO t SELECT g, 'before' FROM generate_series(1, 200) g")
        delivered = wal_lsn(dsn)
        eventually(lambda: (confirmed_lsn(dsn) or 0) >= delivered, 30, "the first rows confirmed", process)

        kafka_broker.stop()
        before_outage_writes = wal_lsn(dsn)
        for start in range(1000, 1300, 30):  # ten transactions while the broker is away
            execute(dsn, f"INSERT INTO t SELECT g, 'during' FROM generate_series({start}, {start + 29}) g")
        written = wal_lsn(dsn)
        eventually(lambda: healthz(process) == 503, 40, "the connector to report itself unhealthy", process)
        assert process.metric("strangler_cdc_healthy") == 0
        reason = (process.health() or {})["connectors"][0]["reason"]
        assert reason
        for _ in range(10):  # the slot holds: nothing written during the outage is confirmed
            assert (confirmed_lsn(dsn) or 0) <= before_outage_writes
            time.sleep(0.3)

        kafka_broker.start()  # same port, empty: the broker keeps everything in memory
        eventually(lambda: (confirmed_lsn(dsn) or 0) >= written, 120, "the slot to pass the outage writes",
                   process)
        eventually(lambda: healthz(process) == 200, 30, "the connector to be healthy again", process)
        events = consume_events(kafka_broker.bootstrap_servers, f"{prefix}.public.t", expected=300)
        assert process.terminate() == 0
    finally:
        process.stop()
    during = {key["id"] for key, value in events if value and value["after"]["note"] == "during"}
    assert during == set(range(1000, 1300))
