"""Reconciliation of a PostgreSQL side against an HTTP read API served by a real server on loopback."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest

from strangler.config import load_config_text
from strangler.reconcile.service import Reconciliation
from strangler.store import create_store_engine, upgrade_schema
from tests.support.postgres import PostgresDatabase

pytestmark = pytest.mark.integration

ROWS = 600


class CustomerApi:
    """GET /customers/{id} from a dict; counts requests in flight and records when each arrived."""

    def __init__(self, documents: dict[str, Any], delay: float = 0.0) -> None:
        self.documents = documents
        self.delay = delay
        self.in_flight = 0
        self.max_in_flight = 0
        self.arrivals: list[float] = []
        self.lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                with api.lock:
                    api.in_flight += 1
                    api.max_in_flight = max(api.max_in_flight, api.in_flight)
                    api.arrivals.append(time.monotonic())
                try:
                    time.sleep(api.delay)
                    key = self.path.rsplit("/", 1)[-1]
                    document = api.documents.get(key)
                    body = json.dumps(document).encode() if document is not None else b'{"title": "not found"}'
                    self.send_response(200 if document is not None else 404)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                finally:
                    with api.lock:
                        api.in_flight -= 1

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def legacy_rows(db: PostgresDatabase) -> None:
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        conn.execute(f"""
            CREATE TABLE customers (id bigint PRIMARY KEY, full_name text, balance numeric(10,2), since timestamptz);
            INSERT INTO customers
            SELECT g, 'Name ' || g, g / 4.0, timestamptz '2024-05-01 10:00+00' + g * interval '1 h'
            FROM generate_series(1, {ROWS}) g;""")


def documents() -> dict[str, Any]:
    """The new service's view: nested JSON, numbers as JSON numbers, times with a +02:00 offset."""
    out = {}
    for g in range(1, ROWS + 1):
        since = dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC) + dt.timedelta(hours=g)
        out[str(g)] = {"id": g, "profile": {"name": f" Name {g} "}, "account": {"balance": g / 4},
                       "since": since.astimezone(dt.timezone(dt.timedelta(hours=2))).isoformat()}
    return out


def config(db: PostgresDatabase, api: CustomerApi, rate: float = 2000, concurrency: int = 4) -> str:
    return f"""
store: {db.url()}
precedence:
  entities:
    customer: {{groups: {{all: {{fields: [/full_name, /balance, /since], authority: legacy}}}}}}
reconcile:
  jobs:
    api:
      entity: customer
      legacy: {{url: "{db.url()}", table: customers, key: [id]}}
      new: {{http: "{api.url}/customers/{{cid}}", key: [cid], concurrency: {concurrency}, rate: {rate}}}
      fields:
        full_name: /profile/name
        balance: /account/balance
        since: /since
"""


@pytest.fixture
def api() -> Iterator[CustomerApi]:
    docs = documents()
    docs["7"]["profile"]["name"] = "Someone Else"
    docs["8"]["account"]["balance"] = 2.5  # legacy holds 2.00
    del docs["9"]
    docs["10"]["since"] = "2024-05-01T20:00:01+00:00"
    server = CustomerApi(docs, delay=0.002)
    yield server
    server.close()


def run(db: PostgresDatabase, text: str) -> dict[str, Any]:
    cfg = load_config_text(text)
    upgrade_schema(cfg.store)
    return Reconciliation(cfg, create_store_engine(cfg.store), lambda: dt.datetime.now(dt.UTC)).run_job(
        "api", {}).as_dict()


def test_http_side_differences_found_with_bounded_concurrency(pg_database: PostgresDatabase,
                                                              api: CustomerApi) -> None:
    legacy_rows(pg_database)
    report = run(pg_database, config(pg_database, api, concurrency=4))
    found = {(e["entity_key"], f["field"]): f for e in report["drifted"] for f in e["fields"]}
    assert set(found) == {("7", "full_name"), ("8", "balance"), ("9", "(row)"), ("10", "since")}
    assert (found["8", "balance"]["legacy"], found["8", "balance"]["new"]) == ("2.00", "2.50")
    assert found["10", "since"]["new"] == "2024-05-01 20:00:01"
    assert found["9", "(row)"]["classification"] == "non-authoritative"
    assert report["compared"] == ROWS and report["error_count"] == 0
    assert len(api.arrivals) == ROWS
    assert api.max_in_flight <= 4


def test_http_side_rate_limit(pg_database: PostgresDatabase, api: CustomerApi) -> None:
    legacy_rows(pg_database)
    with psycopg.connect(pg_database.dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM customers WHERE id > 60")
    started = time.monotonic()
    report = run(pg_database, config(pg_database, api, rate=100, concurrency=16))
    elapsed = time.monotonic() - started
    assert report["compared"] == 60
    spread = api.arrivals[-1] - api.arrivals[0]
    assert spread >= 59 / 100 * 0.95  # 60 requests at 100 per second are spread over at least ~0.6 s
    assert elapsed < 10


def test_http_errors_are_reported_not_taken_for_drift(pg_database: PostgresDatabase) -> None:
    legacy_rows(pg_database)
    server = CustomerApi({})
    server.close()  # nothing listens any more: every read fails
    text = config(pg_database, server).replace("concurrency: 4", "concurrency: 4, retries: 0, timeout: 0.5")
    with psycopg.connect(pg_database.dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM customers WHERE id > 5")
    report = run(pg_database, text)
    assert report["error_count"] == 5 and report["drifted"] == [] and report["compared"] == 0
