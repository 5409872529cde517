"""The real services the integration tests stand on: a private PostgreSQL cluster and a Kafka-protocol broker."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import KafkaError, Producer

from tests.support.kafka import TansuBroker, consume_all
from tests.support.postgres import PostgresCluster, PostgresClusterError, PostgresDatabase, find_postgres_bindir

pytestmark = pytest.mark.integration


def idempotent_producer(bootstrap: str) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})


def test_cluster_accepts_connections_with_logical_decoding(pg_database: PostgresDatabase) -> None:
    with psycopg.connect(pg_database.dsn) as conn:
        assert conn.execute("SELECT current_database(), current_user").fetchone() == (pg_database.name, "postgres")
        assert conn.execute("SHOW wal_level").fetchone() == ("logical",)
        assert conn.execute("SHOW fsync").fetchone() == ("off",)


def test_cluster_creates_and_drops_a_pgoutput_slot(pg_database: PostgresDatabase) -> None:
    slot = f"slot_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_database.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE customer (id int PRIMARY KEY, name text)")
        conn.execute("CREATE PUBLICATION everything FOR ALL TABLES")
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
        conn.execute("INSERT INTO customer VALUES (1, 'Ada')")
        # synchronous_commit=off: decoding sees the commit once the WAL writer flushes it (<= ~0.6 s)
        deadline = time.monotonic() + 5
        while (changes := count_slot_changes(conn, slot)) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert changes == 4  # begin, relation, insert, commit
        conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        remaining = conn.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (slot,))
        assert remaining.fetchone() == (0,)


def count_slot_changes(conn: psycopg.Connection[tuple[int]], slot: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_logical_slot_peek_binary_changes(%s, NULL, NULL,"
        " 'proto_version', '1', 'publication_names', 'everything')",
        (slot,),
    ).fetchone()
    return 0 if row is None else int(row[0])


def test_cluster_accepts_replication_connections(pg_database: PostgresDatabase) -> None:
    with psycopg.connect(pg_database.dsn + " replication=database", autocommit=True) as conn:
        system = conn.execute("IDENTIFY_SYSTEM").fetchone()
        assert system is not None and system[3] == pg_database.name


def test_database_with_a_slot_is_dropped_after_the_test(pg_cluster: PostgresCluster) -> None:
    database = pg_cluster.create_database(f"t_slot_{uuid.uuid4().hex[:12]}")
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (database.name,))
    pg_cluster.drop_database(database.name)
    with psycopg.connect(pg_cluster.dsn()) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (database.name,)).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM pg_replication_slots").fetchone() == (0,)


def test_urls_name_the_driver(pg_database: PostgresDatabase) -> None:
    port = pg_database.cluster.port
    assert pg_database.url() == f"postgresql+psycopg://postgres@127.0.0.1:{port}/{pg_database.name}"
    assert pg_database.url("psycopg2").startswith("postgresql+psycopg2://postgres@127.0.0.1:")


def test_cluster_keeps_its_data_and_port_across_a_restart() -> None:
    with PostgresCluster() as cluster:
        database = cluster.create_database("kept")
        with psycopg.connect(database.dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE note (body text)")
            conn.execute("INSERT INTO note VALUES ('still here')")
        port = cluster.port
        cluster.stop()
        assert not cluster.running
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(database.dsn, connect_timeout=2)
        cluster.start()
        assert cluster.port == port
        with psycopg.connect(database.dsn) as conn:
            assert conn.execute("SELECT body FROM note").fetchall() == [("still here",)]
        root = cluster.root
    assert root is not None and not root.exists()


def test_idempotent_producer_round_trips_exactly(kafka_broker: TansuBroker, kafka_topic: str) -> None:
    sent = [(f"key-{i}".encode(), f"value-{i}".encode()) for i in range(100)]
    failures: list[KafkaError] = []

    def delivered(error: KafkaError | None, _message: object) -> None:
        if error is not None:
            failures.append(error)

    producer = idempotent_producer(kafka_broker.bootstrap_servers)
    for key, value in sent:
        producer.produce(kafka_topic, key=key, value=value, on_delivery=delivered)
    assert producer.flush(10) == 0
    assert failures == []
    assert consume_all(kafka_broker.bootstrap_servers, kafka_topic, expected=len(sent)) == sent


def test_consume_all_reads_every_partition(kafka_broker: TansuBroker) -> None:
    topic = kafka_broker.create_topic(f"spread-{uuid.uuid4().hex[:12]}", partitions=3)
    producer = idempotent_producer(kafka_broker.bootstrap_servers)
    for i in range(30):
        producer.produce(topic, key=str(i).encode(), value=b"x", partition=i % 3)
    assert producer.flush(10) == 0
    records = consume_all(kafka_broker.bootstrap_servers, topic)
    assert sorted(int(key or b"") for key, _ in records) == list(range(30))


def test_consume_all_times_out_when_records_are_missing(kafka_broker: TansuBroker, kafka_topic: str) -> None:
    with pytest.raises(TimeoutError, match="got 0 records"):
        consume_all(kafka_broker.bootstrap_servers, kafka_topic, expected=1, timeout=1.0)


def test_broker_restarts_on_the_same_port_without_its_topics() -> None:
    with TansuBroker() as broker:
        broker.create_topic("before")
        port = broker.port
        broker.stop()
        assert not broker.running
        broker.start()
        assert broker.port == port
        topic = broker.create_topic("after")
        producer = idempotent_producer(broker.bootstrap_servers)
        producer.produce(topic, key=b"k", value=b"v")
        assert producer.flush(10) == 0
        assert consume_all(broker.bootstrap_servers, topic, expected=1) == [(b"k", b"v")]
        root = broker.root
    assert root is not None and not root.exists()


def test_services_run_unprivileged_when_we_are_root(pg_cluster: PostgresCluster) -> None:
    if os.geteuid() != 0:
        pytest.skip("only meaningful as root")
    with psycopg.connect(pg_cluster.dsn()) as conn:
        data_directory = conn.execute("SHOW data_directory").fetchone()
    assert data_directory is not None
    assert os.stat(data_directory[0]).st_uid != 0


def test_missing_server_binaries_are_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("STRANGLER_PG_BINDIR", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PostgresClusterError, match="PostgreSQL server binaries not found"):
        find_postgres_bindir(installed=tmp_path)
