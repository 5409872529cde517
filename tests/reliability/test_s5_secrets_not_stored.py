"""S5: after shadow traffic that carries tokens, cookies and configured PII fields (with `store_bodies: true`,
the most that is ever stored), no secret or PII value is found in any column of any row of any table of
the store, in any of the forms a value could take there (as sent, upper-cased, JSON-escaped, URL-encoded)."""

from __future__ import annotations

import sqlite3
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.reliability.report import record
from tests.support.echo import ThreadedUvicorn
from tests.support.gateway import ADMIN_TOKEN, GatewayProcess

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

REQUEST_SECRETS = {
    "authorization": "Bearer tok-CLIENT-9d8c7b6a5f4e",
    "cookie": "session=sess-CLIENT-1a2b3c4d; theme=dark",
    "x-api-key": "key-CLIENT-77aa88bb",
    "proxy-authorization": "Basic cHJveHktdXNlcjpwcm94eS1wdw==",
}
REDACT = ["/ssn", "/card/number", "/contact", "/by_email", "/customers/*/ssn", "/token"]


def pii(side: str, i: int) -> dict[str, str]:
    return {"ssn": f"ssn-{side}-{i:03d}-45-6789", "card": f"4111-{side}-{i:04d}", "email": f"{side}.{i}@pii.example",
            "phone": f"+33-{side}-{i:06d}", "token": f"apitok-{side}-{i:05d}", "child_ssn": f"kid-{side}-{i:03d}",
            "cookie": f"sid-{side}-{i:08d}"}


def document(side: str, i: int) -> dict[str, Any]:
    v = pii(side, i)
    return {"id": i, "name": "Ada", "ssn": v["ssn"], "card": {"number": v["card"], "expiry": "12/30"},
            "contact": {"email": v["email"], "phone": v["phone"]}, "by_email": {v["email"]: {"orders": i}},
            "customers": [{"ssn": v["child_ssn"], "plan": side}], "token": v["token"], "side": side}


class PiiService:
    def __init__(self, side: str) -> None:
        self.side = side
        self.server = ThreadedUvicorn(self)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        i = int(scope["path"].rsplit("/", 1)[-1])
        body = orjson.dumps(document(self.side, i))
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"set-cookie", f"sid={pii(self.side, i)['cookie']}; HttpOnly".encode()),
            (b"x-api-key", pii(self.side, i)["token"].encode())]})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def services() -> Iterator[dict[str, PiiService]]:
    sides = {side: PiiService(side) for side in ("legacy", "new")}
    for service in sides.values():
        service.server.start()
    yield sides
    for service in sides.values():
        service.server.stop()


@pytest.fixture
def gateway(tmp_path: Path, services: dict[str, PiiService]) -> Iterator[GatewayProcess]:
    config = {
        "workers": 2,
        "upstreams": {side: {"url": s.server.url} for side, s in services.items()},
        "default_upstream": "legacy",
        "capabilities": {"profile": {
            "legacy": "legacy", "new": "new", "mode": "shadow", "routes": ["GET /profiles/{id}"],
            "shadow": {"store_bodies": True, "noise_sample": 1.0},
            "compare": {"redact": REDACT, "headers": ["content-type", "set-cookie", "x-api-key"]},
        }},
    }
    process = GatewayProcess(config, tmp_path / "gateway").start()
    yield process
    process.stop()


def forms(secret: str) -> set[str]:
    core = secret.split("=", 1)[-1].removeprefix("Bearer ").removeprefix("Basic ")
    out = {secret, core, core.upper(), core.lower(), urllib.parse.quote(core), urllib.parse.quote_plus(core),
           orjson.dumps(core).decode()[1:-1]}
    return {f for f in out if len(f) >= 8}


def test_no_secret_or_pii_value_is_stored(gateway: GatewayProcess) -> None:
    n = 40
    secrets = {**REQUEST_SECRETS}
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        for i in range(n):
            assert client.get(f"/profiles/{i}", headers=REQUEST_SECRETS).status_code == 200
            for side in ("legacy", "new"):
                for name, value in pii(side, i).items():
                    secrets[f"{side}.{name}.{i}"] = value
    deadline = time.monotonic() + 20
    while True:  # the batch writer stores within a second or so
        report = httpx.get(f"{gateway.admin_url}/report?capability=profile&format=json", timeout=10,
                           headers={"authorization": f"Bearer {ADMIN_TOKEN}"}).json()
        if report["capabilities"][0]["comparisons"] >= n or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    database = Path(str(gateway.config["store"]).removeprefix("sqlite:///"))
    needles = {form: name for name, secret in secrets.items() for form in forms(secret)}
    rows = values = 0
    found: list[tuple[str, str, str]] = []
    with sqlite3.connect(database) as conn:
        tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):  # noqa: S608 - names from sqlite_master
                rows += 1
                for value in row:
                    values += 1
                    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
                    found += [(table, needles[needle], text[:200]) for needle in needles if needle in text]
        divergent_fields = {f for (f,) in conn.execute("SELECT DISTINCT field FROM shadow_divergences")}
        bodies = conn.execute("SELECT COUNT(*) FROM shadow_divergences WHERE primary_body IS NOT NULL "
                              "OR other_body IS NOT NULL").fetchone()[0] if _has_bodies(conn) else None
    record("S5", f"store after {n} shadowed requests with tokens, cookies and PII ({len(secrets)} secret values)",
           f"{len(found)} found in {rows} rows / {values} values of {len(tables)} tables")
    kinds = sorted({(table, name.split(".")[1] if "." in name else name) for table, name, _ in found})
    assert found == [], (kinds, found[:3])
    # not vacuous: the differing PII fields were compared and stored, masked
    assert {"/ssn", "/card/number", "/token", "header:set-cookie", "header:x-api-key"} <= divergent_fields
    assert any(f.startswith("/contact") for f in divergent_fields) and rows > 3 * n
    assert bodies is None or bodies > 0


def _has_bodies(conn: sqlite3.Connection) -> bool:
    columns = {row[1] for row in conn.execute("PRAGMA table_info(shadow_divergences)")}
    return {"primary_body", "other_body"} <= columns


@pytest.mark.parametrize(
    ("path", "stored"),
    [("/by_email/ada@pii.example/orders", "/by_email"), ("/customers/ada@pii.example/ssn", "/customers/*/ssn"),
     ("/customers/0/ssn", "/customers/0/ssn"), ("/customers/4111111111111111/ssn", "/customers/*/ssn"),
     ("/ssn/x~1y", "/ssn"), ("/ssn", "/ssn"), ("/name", "/name"), ("header:set-cookie", "header:set-cookie"),
     ("status", "status")],
)
def test_a_path_beneath_a_redacted_pattern_is_stored_as_the_pattern(path: str, stored: str) -> None:
    from strangler.shadow.records import Redactor

    assert Redactor(REDACT).path(path) == stored
