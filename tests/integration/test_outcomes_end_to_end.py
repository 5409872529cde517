"""End to end on real components: what each side did to its data, compared under the precedence rules.

A client's request goes through `strangler serve` (capability in shadow mode, writes mirrored) to a small
legacy application that writes PostgreSQL, correlation id included; `strangler cdc run` turns the row
change into a Debezium change event on the broker, `strangler events run` maps it to a typed domain event;
the sample new service, which got the mirrored write, publishes its own event to the broker, once matching
and once differing in one field. The outcome comparison (in the gateway's admin process) records the
match and the divergence, classified by the precedence rule in force, and each request's journey in the
maturity ledger ends `reconciled` or `exception`. Run under two precedence rules for the differing field.
"""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from confluent_kafka import KafkaException, Producer
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support.echo import ThreadedUvicorn
from tests.support.gateway import ADMIN_TOKEN, GatewayProcess
from tests.support.kafka import FAST_GROUP_SETTINGS, TansuBroker, consume_all
from tests.support.postgres import PostgresDatabase

pytestmark = pytest.mark.integration

EVENT = "CustomerCorrespondenceAddressChanged"
VALID_FROM = dt.date(2024, 6, 1)


class LegacyApp:
    """The legacy monolith: `PUT /customers/{id}/address` updates its row, with the request's correlation id."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.server = ThreadedUvicorn(Starlette(routes=[Route("/customers/{id:int}/address", self.put,
                                                              methods=["PUT"])]))

    async def put(self, request: Request) -> JSONResponse:
        body = await request.json()
        customer = request.path_params["id"]
        cid = request.headers["x-correlation-id"]
        await run_in_threadpool(self._update, customer, body, cid)
        return JSONResponse({"id": customer, **body})

    def _update(self, customer: int, body: dict[str, Any], cid: str) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("UPDATE customers SET corr_street = %s, corr_city = %s, corr_zip = %s, "
                         "address_valid_from = %s, correlation_id = %s WHERE id = %s",
                         (body["street"], body["city"], body["zip"], body["valid_from"], cid, customer))


class NewService:
    """The new customer service: takes the mirrored write and publishes its own domain event to the broker.
    `zip_suffix` makes its postal code differ from what it was sent (the bug the comparison must find)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.zip_suffix = ""
        self.producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
        self.published: list[dict[str, Any]] = []
        self.server = ThreadedUvicorn(Starlette(routes=[Route("/customers/{id:int}/address", self.put,
                                                              methods=["PUT"])]))

    async def put(self, request: Request) -> JSONResponse:
        body = await request.json()
        customer = request.path_params["id"]
        now = dt.datetime.now(dt.UTC).isoformat()
        effective = dt.datetime.fromisoformat(body["valid_from"]).replace(tzinfo=dt.UTC) + dt.timedelta(days=1)
        event = {
            "event_id": str(uuid.uuid4()), "event_type": EVENT, "event_version": 1, "aggregate_type": "customer",
            "aggregate_id": str(customer), "event_time": now, "effective_time": effective.isoformat(),
            "processing_time": now, "source": "customers-service", "sequence": str(len(self.published)),
            "correlation_id": request.headers.get("x-correlation-id"), "causation_id": None,
            "payload": {"customer_id": customer, "street": body["street"], "city": body["city"],
                        "zip": body["zip"] + self.zip_suffix},
        }
        await run_in_threadpool(self._publish, event)
        return JSONResponse({"id": customer, **body})

    def _publish(self, event: dict[str, Any]) -> None:
        errors: list[Any] = []
        self.producer.produce(self.topic, orjson.dumps(event), event["aggregate_id"].encode(),
                              on_delivery=lambda err, msg: errors.append(err) if err else None)
        if self.producer.flush(10) or errors:
            raise KafkaException(f"the new service could not publish: {errors}")
        self.published.append(event)


class Command:
    """A `strangler` subcommand as a child process with its own log."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        with open(log, "ab") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "strangler", "--log-level", "INFO", *args],
                                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"{self.process.args} exited {self.process.returncode}:\n{self.log.read_text()}")

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


def eventually(probe: Callable[[], Any], timeout: float, what: str, alive: Sequence[Command] = ()) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        for command in alive:
            command.check_alive()
        last = probe()
        if last:
            return last
        time.sleep(0.25)
    logs = "\n".join(f"--- {c.log.name} ---\n{c.log.read_text()[-3000:]}" for c in alive)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})\n{logs}")


def precedence(postal: dict[str, Any]) -> dict[str, Any]:
    return {"entities": {"customer": {"capability": "profile", "groups": {
        "identity": {"fields": ["/customer_id"], "authority": "legacy", "conflict": "reject"},
        "address": {"fields": ["/street", "/city"], "authority": {"follow": "profile"}, "conflict": "authority-wins"},
        "postal": {"fields": ["/zip"], **postal},
    }}}}


@pytest.fixture
def legacy_db(pg_database: PostgresDatabase) -> Iterator[PostgresDatabase]:
    with psycopg.connect(pg_database.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, corr_street text, "
                     "corr_city text, corr_zip text, address_valid_from date, correlation_id text)")
        conn.execute("ALTER TABLE customers REPLICA IDENTITY FULL")  # before images: `changed` sees the columns
        conn.execute("INSERT INTO customers VALUES (1, 'Warm-up', 'x', 'x', 'x', '2024-01-01', NULL), "
                     "(42, 'Ada', '1 Main St', 'Springfield', '12345', '2024-01-01', NULL), "
                     "(43, 'Grace', '9 Elm St', 'Shelbyville', '54321', '2024-01-01', NULL)")
    yield pg_database


@pytest.mark.parametrize(("postal", "classification"), [
    ({"authority": "legacy", "conflict": "authority-wins"}, "regression"),  # legacy's value stands
    ({"authority": {"follow": "profile"}, "conflict": "latest-effective-time"}, "superseded"),  # the new side's
], ids=["legacy-authority-wins", "latest-effective-time"])  # effective time (a day later) stands
def test_a_request_reaches_reconciled_or_exception_by_what_both_sides_published(
    legacy_db: PostgresDatabase, kafka_broker: TansuBroker, tmp_path: Path,
    postal: dict[str, Any], classification: str,
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    suffix = uuid.uuid4().hex[:8]
    prefix = f"legacy-{suffix}"
    changes_topic = f"{prefix}.public.customers"
    domain_topic = kafka_broker.create_topic(f"domain.customer-{suffix}")
    new_topic = kafka_broker.create_topic(f"new.customer-{suffix}")
    legacy, new = LegacyApp(legacy_db.dsn), NewService(bootstrap, new_topic)
    legacy.server.start()
    new.server.start()
    fast_group = dict(FAST_GROUP_SETTINGS)
    config: dict[str, Any] = {
        "workers": 1,
        "store": f"sqlite:///{tmp_path}/strangler.db",
        "upstreams": {"legacy": {"url": legacy.server.url}, "customers": {"url": new.server.url}},
        "default_upstream": "legacy",
        "capabilities": {"profile": {"legacy": "legacy", "new": "customers", "mode": "shadow",
                                     "routes": ["PUT /customers/{id}/address"], "shadow": {"writes": "mirror"}}},
        "precedence": precedence(postal),
        "outcomes": {"window": 60, "kafka": {"bootstrap_servers": bootstrap, "legacy_topics": [domain_topic],
                                             "new_topics": [new_topic], "group_id": f"outcomes-{suffix}"}},
        "cdc": {
            "state_dir": str(tmp_path / "cdc"),
            "connectors": {"legacy-crm": {
                "source": {"kind": "postgres", "dsn": legacy_db.dsn, "slot": f"slot_{suffix}",
                           "publication": f"pub_{suffix}", "table_include": ["public\\.customers"],
                           "snapshot": "never"},
                "sink": {"kind": "kafka", "bootstrap_servers": bootstrap, "topic_prefix": prefix},
            }},
            "domain_events": {
                "source": "legacy.crm",
                "types": {EVENT: {"payload": {"customer_id": "int", "street": "str", "city": "str", "zip": "str"}}},
                "rules": [{"table": "public.customers", "ops": ["u"],
                           "changed": ["corr_street", "corr_city", "corr_zip"], "event": EVENT,
                           "aggregate_type": "customer", "key": "id", "effective_time": "address_valid_from",
                           "correlation_id": "correlation_id", "topic": domain_topic,
                           "payload": {"customer_id": "id", "street": "corr_street", "city": "corr_city",
                                       "zip": "corr_zip"}}],
                "dead_letter": {"path": str(tmp_path / "dead-letters.jsonl")},
                "consume": {"bootstrap_servers": bootstrap, "topics": [changes_topic], "group_id": f"mapper-{suffix}",
                            "settings": fast_group},
                "publish": {"bootstrap_servers": bootstrap},
            },
        },
    }
    gateway = GatewayProcess(config, tmp_path / "gateway")
    commands: list[Command] = []
    try:
        check = subprocess.run([sys.executable, "-m", "strangler", "check", "-c", str(gateway.config_path)],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        commands.append(Command(["cdc", "run", "-c", str(gateway.config_path), "--no-status"], tmp_path / "cdc.log"))

        def warmed_up() -> bool:  # the slot streams: a change made now arrives on the change topic
            with psycopg.connect(legacy_db.dsn, autocommit=True) as conn:
                conn.execute("UPDATE customers SET name = name || '.' WHERE id = 1")
            try:
                return bool(consume_all(bootstrap, changes_topic, timeout=3))
            except Exception:  # the topic is created with the first event
                return False

        eventually(warmed_up, 60, "the CDC connector to stream", commands)
        commands.append(Command(["events", "run", "-c", str(gateway.config_path)], tmp_path / "events.log"))
        gateway.start()
        admin = httpx.Client(base_url=gateway.admin_url, headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
                             timeout=10)
        address = {"street": "2 Oak Ave", "city": "Springfield", "zip": "12399", "valid_from": VALID_FROM.isoformat()}
        with httpx.Client(base_url=gateway.url, timeout=10) as client:
            matching = client.put("/customers/42/address", json=address, headers={"x-correlation-id": "req-match"})
            assert matching.status_code == 200 and matching.json()["street"] == "2 Oak Ave"

            def journey(cid: str, stage: str) -> dict[str, Any] | None:
                response = admin.get(f"/changes/{cid}")
                return response.json() if response.status_code == 200 and response.json()["stage"] == stage else None

            reconciled = eventually(lambda: journey("req-match", "reconciled"), 90, "req-match to be reconciled",
                                    commands)
            new.zip_suffix = "-0000"
            differing = client.put("/customers/43/address", json=dict(address, street="5 Pine Rd"),
                                   headers={"x-correlation-id": "req-differ"})
            assert differing.status_code == 200
            failed = eventually(lambda: journey("req-differ", "exception"), 90, "req-differ to be an exception",
                                commands)

        # the matching request: trusted, every stage recorded for entity 42
        assert reconciled["trusted"] is True
        [change] = reconciled["changes"]
        assert change["entity_key"] == "42" and change["capability"] == "profile"
        assert list(change["stages"]) == ["accepted", "applied", "propagated", "reconciled"]
        # the differing one: not trusted, and the ledger says which field under which rule
        assert failed["trusted"] is False
        [change] = failed["changes"]
        assert change["entity_key"] == "43"
        assert change["exception"] == f"outcome differs: /zip ({classification})"
        divergences = eventually(
            lambda: [d for d in admin.get("/divergences", params={"capability": "profile"}).json()["divergences"]
                     if d["source"] == "outcome"], 30, "the outcome divergence to be stored", commands)
        [zip_divergence] = divergences
        assert (zip_divergence["field"], zip_divergence["classification"], zip_divergence["correlation_id"]) == (
            "/zip", classification, "req-differ")
        assert (zip_divergence["primary_value"], zip_divergence["other_value"]) == ("12399", "12399-0000")
        [report] = admin.get("/report", params={"capability": "profile"}).json()["capabilities"]
        assert report["outcomes"] == {"match": 1, "divergence": 1, "missing": 0}
        # the legacy side's event is the typed, mapped one, with the business time from the row
        legacy_events = [orjson.loads(v or b"") for _, v in consume_all(bootstrap, domain_topic, expected=2)]
        assert [(e["aggregate_id"], e["correlation_id"], e["payload"]["zip"]) for e in legacy_events] == [
            ("42", "req-match", "12399"), ("43", "req-differ", "12399")]
        assert legacy_events[0]["effective_time"].startswith(VALID_FROM.isoformat())
        assert legacy_events[0]["source"] == "legacy.crm" and legacy_events[0]["event_type"] == EVENT
        assert (tmp_path / "dead-letters.jsonl").read_text() == ""
    finally:
        gateway.stop()
        for command in reversed(commands):
            command.stop()
        legacy.server.stop()
        new.server.stop()
        new.producer = None  # type: ignore[assignment]  # its client threads go with the last reference
        with psycopg.connect(legacy_db.dsn, autocommit=True) as conn:  # the slot would keep the database busy
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                         "WHERE slot_name = %s AND NOT active", (f"slot_{suffix}",))

