"""Pytest fixtures for the real services: load with `pytest_plugins = ["tests.support.plugin"]`.

One PostgreSQL cluster and one broker per session, started on first use; each test gets its own database
or topic on them. A test that stops a shared service need not restart it: the next per-test fixture does.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from tests.support.kafka import TansuBroker, TansuBrokerError
from tests.support.postgres import PostgresCluster, PostgresClusterError, PostgresDatabase, unique_database_name

Service = TypeVar("Service", PostgresCluster, TansuBroker)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """A private PostgreSQL cluster (`wal_level=logical`) shared by the session."""
    cluster = _start_or_fail(PostgresCluster, "PostgreSQL cluster")
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def pg_database(pg_cluster: PostgresCluster, request: pytest.FixtureRequest) -> Iterator[PostgresDatabase]:
    """A fresh database on the shared cluster, dropped (with its replication slots) after the test."""
    pg_cluster.start()
    database = pg_cluster.create_database(unique_database_name(request.node.name))
    try:
        yield database
    finally:
        pg_cluster.start()
        pg_cluster.drop_database(database.name)


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[TansuBroker]:
    """A private Kafka-protocol broker (Tansu, memory storage) shared by the session."""
    broker = _start_or_fail(TansuBroker, "Kafka-protocol broker")
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture
def kafka_topic(kafka_broker: TansuBroker, request: pytest.FixtureRequest) -> str:
    """A fresh single-partition topic on the shared broker."""
    kafka_broker.start()
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60]
    return kafka_broker.create_topic(f"test-{slug}-{uuid.uuid4().hex[:12]}")


def _start_or_fail(make: Callable[[], Service], what: str) -> Service:
    """Start a service; a missing binary or a failed start fails the tests that need it (never skips them)."""
    failure = None
    try:
        service = make()
    except (PostgresClusterError, TansuBrokerError) as exc:
        failure = str(exc)
    else:
        try:
            service.start()
            return service
        except (PostgresClusterError, TansuBrokerError) as exc:
            failure = str(exc)
            service.close()
    pytest.fail(f"cannot start the test {what}: {failure}", pytrace=False)
