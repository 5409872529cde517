"""C2: the broker becomes unreachable mid-run (its connections reset, new ones refused) while the legacy
database keeps changing. The replication slot does not advance past anything written during the outage;
once the broker is reachable again every change is delivered: 0 lost, before, during and after.

The broker (Tansu) runs behind the fault proxy, which it advertises as its address, so that every client
connection goes through the proxy; the broker itself keeps running and keeps what it acknowledged.
CI: 8 s unreachable; `STRANGLER_RELIABILITY_FULL=1`: 30 s."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

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
from tests.reliability.report import full_run, record
from tests.support.faultproxy import FaultProxy
from tests.support.kafka import TansuBroker
from tests.support.ports import free_port
from tests.support.postgres import PostgresDatabase

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.timeout(300)]

OUTAGE = 30.0 if full_run() else 8.0
TOPIC = "legacy.public.t"


@pytest.fixture
def proxied_broker() -> Iterator[FaultProxy]:
    port = free_port()
    proxy = FaultProxy(port).start()
    try:
        with TansuBroker(port=port, advertised_port=proxy.port) as broker:
            broker.create_topic(TOPIC)
            yield proxy
    finally:
        proxy.stop()


def test_broker_unreachable_mid_run(pg_database: PostgresDatabase, proxied_broker: FaultProxy,
                                    tmp_path: Path) -> None:
    dsn = pg_database.dsn
    bootstrap = f"127.0.0.1:{proxied_broker.port}"
    execute(dsn, "CREATE TABLE t (id int PRIMARY KEY, phase text)")
    config = connector_config({"kind": "postgres", "dsn": dsn, "snapshot": "never", "heartbeat_interval": 1},
                              {"kind": "kafka", "bootstrap_servers": bootstrap}, tmp_path, confirm_interval=0.5)
    process = CdcProcess(config, tmp_path).start()
    try:
        eventually(lambda: (process.health() or {}).get("healthy"), 60, "a healthy start", process)
        execute(dsn, "INSERT INTO t SELECT g, 'before' FROM generate_series(1, 200) g")
        delivered = wal_lsn(dsn)
        eventually(lambda: (confirmed_lsn(dsn) or 0) >= delivered, 30, "the first rows confirmed", process)

        proxied_broker.refuse()  # connections reset, new ones refused
        down_at = time.monotonic()
        before_outage = wal_lsn(dsn)
        highest_confirmed = 0
        written = 0
        unhealthy = False
        while time.monotonic() - down_at < OUTAGE:
            if written < 300:
                execute(dsn, f"INSERT INTO t SELECT g, 'during' FROM generate_series({1000 + written}, "
                             f"{1000 + written + 29}) g")
                written += 30
            highest_confirmed = max(highest_confirmed, confirmed_lsn(dsn) or 0)
            unhealthy = unhealthy or (process.health() or {}).get("healthy") is False
            time.sleep(0.25)
        assert written == 300
        assert highest_confirmed <= before_outage, "the slot advanced past changes the broker never acknowledged"

        proxied_broker.listen()
        back_at = time.monotonic()
        execute(dsn, "INSERT INTO t SELECT g, 'after' FROM generate_series(2000, 2099) g")
        end = wal_lsn(dsn)
        eventually(lambda: (confirmed_lsn(dsn) or 0) >= end, 120, "the slot to pass every write", process)
        caught_up = time.monotonic() - back_at
        events = consume_events(bootstrap, TOPIC, expected=600, timeout=60)
        assert process.terminate() == 0
    finally:
        process.stop()
    ids = [value["after"]["id"] for _, value in events if value]
    expected = set(range(1, 201)) | set(range(1000, 1300)) | set(range(2000, 2100))
    assert set(ids) == expected, f"missing {sorted(expected - set(ids))[:10]}"
    record("C2", f"broker unreachable {OUTAGE:g} s with 300 changes written meanwhile",
           f"slot held at or before the outage start (highest confirmed {highest_confirmed} <= {before_outage}); "
           f"connector reported unhealthy: {unhealthy}; caught up {caught_up:.1f} s after the broker was back; "
           f"0 lost of {len(expected)}, {len(ids) - len(set(ids))} duplicates")
