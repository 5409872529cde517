"""Shadow mode end to end: `strangler serve` as a process, real HTTP services on loopback as legacy and new.

One gateway serves several capabilities, each a scenario with its own routes, so that the scenarios do not
see each other's comparisons: identical services, one changed field, a random field (noise), a slow and a
down mirror, writes under `skip` and `dry-run`, secrets to redact, and gates fed by the comparisons.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.support.echo import ThreadedUvicorn
from tests.support.gateway import ADMIN_TOKEN, GatewayProcess, metric_value
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

AUTH = {"authorization": f"Bearer {ADMIN_TOKEN}"}
SLOW_SECONDS = 5.0
MIRROR_TIMEOUT = 1.0

# Secret values the client and both services exchange in the redaction scenario; none may reach the store.
SECRETS = {
    "authorization": "Bearer tok-client-7f3a9c1e5b",
    "cookie": "session=sess-client-44d2e8a1",
    "legacy_set_cookie": "sid=sid-legacy-0b9d7c3e",
    "new_set_cookie": "sid=sid-new-6a1f4e2d",
    "legacy_ssn": "ssn-legacy-123-45-6789",
    "new_ssn": "ssn-new-987-65-4321",
    "legacy_card": "card-legacy-4111111111111111",
    "new_card": "card-new-5500000000000004",
    "new_card_2": "card-new-340000000000009",
    "legacy_token": "apitoken-legacy-a81c",
    "new_token": "apitoken-new-f29e",
    "legacy_profile_ssn": "ssn-profile-legacy-555",
    "legacy_raw": "rawsecret-legacy-91ab",
    "new_raw": "rawsecret-new-27cd",
}

Reply = tuple[int, list[tuple[str, str]], bytes]


def json_reply(doc: Any, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Reply:
    return status, [("content-type", "application/json"), *(headers or [])], orjson.dumps(doc)


class ScriptedService:
    """An HTTP service whose answers a function computes from the request; it keeps every request it got."""

    def __init__(self, name: str, respond: Callable[[dict[str, Any]], Reply], delay: float = 0.0) -> None:
        self.name = name
        self.respond = respond
        self.delay = delay
        self.requests: list[dict[str, Any]] = []
        self._server = ThreadedUvicorn(self)

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> ScriptedService:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def received(self, path_prefix: str) -> list[dict[str, Any]]:
        return [r for r in list(self.requests) if r["path"].startswith(path_prefix)]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
        request = {
            "method": scope["method"],
            "path": scope["path"],
            "headers": {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
            "body": body,
        }
        self.requests.append(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        status, headers, payload = self.respond(request)
        raw = [(k.encode(), v.encode()) for k, v in headers] + [(b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": payload})


def item(path: str) -> dict[str, Any]:
    return {"id": path.rsplit("/", 1)[-1], "name": "Widget", "price": 10, "tags": ["a", "b"]}


def legacy_answer(request: dict[str, Any]) -> Reply:
    path = request["path"]
    if request["method"] == "POST":
        return json_reply({"created": True}, status=201)
    if path.startswith("/changed/users/"):
        return json_reply({"id": path.rsplit("/", 1)[-1], "name": "Ada", "price": 10})
    if path.startswith("/noisy/"):
        return json_reply({**item(path), "nonce": uuid.uuid4().hex})
    if path.startswith("/secrets/raw"):
        return 200, [("content-type", "text/plain")], f"token={SECRETS['legacy_raw']}".encode()
    if path.startswith("/secrets/"):
        doc = {
            "user": {"name": "Ada", "ssn": SECRETS["legacy_ssn"],
                     "cards": [{"number": SECRETS["legacy_card"], "brand": "visa"}]},
            "token": SECRETS["legacy_token"],
            "profile": {"ssn": SECRETS["legacy_profile_ssn"], "city": "Paris"},
            "seen_authorization": request["headers"].get("authorization", ""),
        }
        return json_reply(doc, headers=[("set-cookie", SECRETS["legacy_set_cookie"]), ("set-cookie", "theme=dark")])
    return json_reply(item(path))


def new_answer(request: dict[str, Any]) -> Reply:
    path = request["path"]
    if path.startswith("/changed/items/"):
        return json_reply({**item(path), "price": 12})  # the one intended-or-not change
    if path.startswith("/noisy/"):
        return json_reply({**item(path), "nonce": uuid.uuid4().hex})
    if path.startswith("/secrets/raw"):
        return 200, [("content-type", "text/plain")], f"token={SECRETS['new_raw']}".encode()
    if path.startswith("/secrets/"):
        doc = {
            "user": {"name": "Ada", "ssn": SECRETS["new_ssn"],
                     "cards": [{"number": SECRETS["new_card"], "brand": "visa"}, {"number": SECRETS["new_card_2"]}]},
            "token": SECRETS["new_token"],
            "seen_authorization": request["headers"].get("authorization", "").upper(),
        }
        return json_reply(doc, headers=[("set-cookie", SECRETS["new_set_cookie"])])
    return legacy_answer(request)


@pytest.fixture(scope="module")
def services() -> Iterator[dict[str, ScriptedService]]:
    started = {
        "legacy": ScriptedService("legacy", legacy_answer).start(),
        "new": ScriptedService("new", new_answer).start(),
        "slow": ScriptedService("slow", legacy_answer, delay=SLOW_SECONDS).start(),
    }
    yield started
    for service in started.values():
        service.stop()


def capability(routes: list[str], **extra: Any) -> dict[str, Any]:
    return {"legacy": "legacy", "new": "new", "mode": "shadow", "routes": routes, **extra}


@pytest.fixture(scope="module")
def gateway(services: dict[str, ScriptedService], tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    directory = tmp_path_factory.mktemp("shadow-gateway")
    config = {
        "workers": 2,
        "store": f"sqlite:///{directory}/strangler.db",
        "upstreams": {
            "legacy": {"url": services["legacy"].url},
            "new": {"url": services["new"].url},
            "slow": {"url": services["slow"].url},
            "down": {"url": f"http://127.0.0.1:{free_port()}"},
        },
        "default_upstream": "legacy",
        "capabilities": {
            "same": capability(["GET /same/{id}", "POST /same/{id}"]),
            "changed": capability(["GET /changed/items/{id}", "GET /changed/users/{id}"],
                                  gate={"min_samples": 5, "max_divergence_rate": 0.01}),
            "noisy": capability(["GET /noisy/{id}"], shadow={"noise_sample": 1.0},
                                gate={"min_samples": 5, "max_divergence_rate": 0.0}),
            "baseline": {"legacy": "legacy", "new": "slow", "mode": "legacy", "routes": ["GET /baseline/{id}"]},
            "slow": {"legacy": "legacy", "new": "slow", "mode": "shadow", "routes": ["GET /slow/{id}"],
                     "shadow": {"timeout": MIRROR_TIMEOUT, "max_in_flight": 2}},
            "down": {"legacy": "legacy", "new": "down", "mode": "shadow", "routes": ["GET /down/{id}"]},
            "writes-skip": capability(["POST /skip/orders"]),
            "writes-dry-run": capability(["POST /dry/orders"], shadow={"writes": "dry-run"}),
            "secrets": capability(
                ["GET /secrets/{id}"],
                compare={"headers": ["content-type", "set-cookie"],
                         "redact": ["/user/ssn", "/user/cards/*/number", "/token", "/profile/ssn",
                                    "/seen_authorization"]},
            ),
            "gated": capability(["GET /gated/{id}"], gate={"min_samples": 5, "max_divergence_rate": 0.0}),
        },
    }
    process = GatewayProcess(config, directory).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def client(gateway: GatewayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30.0) as http:
        yield http


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def report(gateway: GatewayProcess, name: str) -> dict[str, Any]:
    response = httpx.get(f"{gateway.admin_url}/report", params={"capability": name}, headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    [data] = response.json()["capabilities"]
    assert data["capability"] == name
    return data


def report_with(gateway: GatewayProcess, name: str, comparisons: int) -> dict[str, Any]:
    """The report once at least `comparisons` comparisons of `name` are stored."""
    return wait_for(lambda: (lambda r: r if r["comparisons"] >= comparisons else None)(report(gateway, name)),
                    what=f"{comparisons} comparisons of {name}")


def cli_report(gateway: GatewayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "strangler", "report", "-c", str(gateway.config_path), *args]
    env = {**os.environ, "COLUMNS": "200"}  # the table report is as wide as the terminal
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False, env=env)
    assert done.returncode == 0, done.stderr
    return done


def flip(gateway: GatewayProcess, name: str, mode: str) -> httpx.Response:
    return httpx.put(f"{gateway.admin_url}/flags/{name}", json={"mode": mode, "reason": "shadow evidence test"},
                     headers=AUTH, timeout=30)


def test_identical_services_show_no_divergence(gateway: GatewayProcess, client: httpx.Client) -> None:
    for i in range(20):
        assert client.get(f"/same/{i}").status_code == 200
    data = report_with(gateway, "same", 20)
    assert (data["comparisons"], data["divergent"], data["divergence_rate"]) == (20, 0, 0.0)
    assert data["fields"] == [] and data["status_mismatches"] == 0 and data["mirror_failures"] == {}
    assert data["latency_ms"]["legacy"]["count"] == 20 and data["latency_ms"]["new"]["count"] == 20


def test_mirrored_requests_carry_the_shadow_header_and_the_same_correlation_id(
    gateway: GatewayProcess, client: httpx.Client, services: dict[str, ScriptedService]
) -> None:
    response = client.get("/same/cid-check", headers={"x-correlation-id": "shadow-live-cid-1"})
    assert response.headers["x-correlation-id"] == "shadow-live-cid-1"
    response = client.get("/same/cid-generated")
    generated = response.headers["x-correlation-id"]
    # the serving side may also get a noise call (same path, same id), so pick each path's first request
    legacy_given = services["legacy"].received("/same/cid-check")[0]
    legacy_generated = services["legacy"].received("/same/cid-generated")[0]
    mirrored = wait_for(lambda: len(services["new"].received("/same/cid-")) == 2 and services["new"].received(
        "/same/cid-"), what="two mirrored requests")
    by_path = {r["path"]: r for r in mirrored}
    assert "x-strangler-shadow" not in legacy_given["headers"]
    assert legacy_given["headers"]["x-correlation-id"] == "shadow-live-cid-1"
    assert by_path["/same/cid-check"]["headers"]["x-strangler-shadow"] == "1"
    assert by_path["/same/cid-check"]["headers"]["x-correlation-id"] == "shadow-live-cid-1"
    assert legacy_generated["headers"]["x-correlation-id"] == generated
    assert by_path["/same/cid-generated"]["headers"]["x-correlation-id"] == generated
    assert by_path["/same/cid-generated"]["headers"]["x-strangler-shadow"] == "1"


def test_one_changed_field_is_reported_for_its_route_only(gateway: GatewayProcess, client: httpx.Client) -> None:
    for i in range(20):
        assert client.get(f"/changed/items/{i}").json()["price"] == 10  # the client sees legacy's answer
        assert client.get(f"/changed/users/{i}").status_code == 200
    data = report_with(gateway, "changed", 40)
    assert (data["comparisons"], data["divergent"], data["divergence_rate"]) == (40, 20, 0.5)
    [price] = [f for f in data["fields"] if f["classification"] == "divergence"]
    assert (price["route"], price["field"], price["differed"]) == ("GET /changed/items/{id}", "/price", 20)
    assert price["rate"] == pytest.approx(1.0) and price["noise_rate"] == 0.0
    assert price["examples"] and (price["examples"][0]["primary_value"], price["examples"][0]["other_value"]) == (
        10, 12)
    assert not [f for f in data["fields"] if f["route"] == "GET /changed/users/{id}"]
    assert data["gate"]["passes"] is False

    cli = orjson.loads(cli_report(gateway, "--capability", "changed", "--format", "json").stdout)
    [cli_data] = cli["capabilities"]
    assert (cli_data["comparisons"], cli_data["divergent"]) == (40, 20)
    assert [(f["route"], f["field"], f["rate"]) for f in cli_data["fields"]] == [
        ("GET /changed/items/{id}", "/price", 1.0)
    ]

    divergences = httpx.get(f"{gateway.admin_url}/divergences", params={"capability": "changed", "limit": 5},
                            headers=AUTH).json()["divergences"]
    assert len(divergences) == 5
    assert {(d["field"], d["primary_value"], d["other_value"], d["classification"]) for d in divergences} == {
        ("/price", 10, 12, "regression")}

    refused = flip(gateway, "changed", "new")
    assert refused.status_code == 412
    assert refused.json()["evidence"]["divergent"] == 20


def test_a_random_field_is_noise_not_divergence(gateway: GatewayProcess, client: httpx.Client) -> None:
    for i in range(20):
        assert client.get(f"/noisy/{i}").status_code == 200
    data = wait_for(lambda: (lambda r: r if r["comparisons"] >= 20 and r["noise_samples"] >= 20 else None)(
        report(gateway, "noisy")), what="noisy comparisons and noise samples")
    assert (data["divergent"], data["divergence_rate"]) == (0, 0.0)
    [nonce] = data["fields"]
    assert (nonce["field"], nonce["classification"]) == ("/nonce", "noise")
    assert nonce["rate"] == 1.0 and nonce["noise_rate"] == 1.0
    # every comparison differed in /nonce, and still the gate passes: the noise was removed
    assert data["gate"]["passes"] is True
    assert flip(gateway, "noisy", "new").status_code == 200


def test_a_slow_or_down_mirror_leaves_the_primary_alone(
    gateway: GatewayProcess, client: httpx.Client, services: dict[str, ScriptedService]
) -> None:
    timings: dict[str, list[float]] = {"baseline": [], "slow": [], "down": []}
    for i in range(30):
        for name in timings:
            started = time.perf_counter()
            response = client.get(f"/{name}/{i}")
            timings[name].append(time.perf_counter() - started)
            assert response.status_code == 200 and response.json()["id"] == str(i)
    p50 = {name: statistics.median(values) for name, values in timings.items()}
    for name in ("slow", "down"):
        assert p50[name] < p50["baseline"] * 3 + 0.05, p50
        assert max(timings[name]) < SLOW_SECONDS / 2, timings[name]

    def counted() -> dict[str, float] | None:
        text = gateway.metrics()

        def value(name: str, capability: str, **labels: str) -> float:
            return metric_value(text, f"strangler_shadow_{name}_total", capability=capability, **labels)

        values = {
            "timeout": value("failed", "slow", reason="timeout"),
            "dropped": value("dropped", "slow"),
            "mirrored_slow": value("mirrored", "slow"),
            "skipped_slow": value("skipped", "slow", reason="circuit_open"),  # the breaker opened after timeouts
            "error": value("failed", "down", reason="error"),
            "failed_open_down": value("failed", "down", reason="circuit_open"),
            "skipped_down": value("skipped", "down", reason="circuit_open"),
            "mirrored_down": value("mirrored", "down"),
        }
        settled = values["error"] + values["failed_open_down"] == values["mirrored_down"]
        return values if values["timeout"] >= 1 and settled else None

    values = wait_for(counted, timeout=MIRROR_TIMEOUT + 15, what="mirror timeouts and errors in /metrics")
    # every request is accounted for: mirrored, dropped at the in-flight cap, or skipped while the breaker is open
    assert values["dropped"] >= 1 and values["mirrored_slow"] + values["dropped"] + values["skipped_slow"] == 30
    assert values["error"] >= 1 and values["mirrored_down"] + values["skipped_down"] == 30
    assert len(services["slow"].received("/slow/")) <= values["mirrored_slow"]
    data = wait_for(lambda: (lambda r: r if r["mirror_failures"].get("timeout") else None)(report(gateway, "slow")),
                    what="timeouts in the report")
    assert data["mirror_failures"]["dropped"] == values["dropped"]
    down = report(gateway, "down")["mirror_failures"]
    assert set(down) <= {"error", "circuit_open"} and sum(down.values()) == 30 and down["error"] >= 1


def test_writes_are_skipped_or_sent_as_dry_runs(
    gateway: GatewayProcess, client: httpx.Client, services: dict[str, ScriptedService]
) -> None:
    for i in range(3):
        assert client.post("/skip/orders", json={"n": i}).status_code == 201
        assert client.post("/dry/orders", json={"n": i}, headers={"x-correlation-id": f"dry-{i}"}).status_code == 201
    dry = wait_for(lambda: len(services["new"].received("/dry/")) == 3 and services["new"].received("/dry/"),
                   what="three dry-run writes at the mirror")
    assert [r["headers"]["x-strangler-shadow"] for r in dry] == ["dry-run"] * 3
    assert sorted(orjson.loads(r["body"])["n"] for r in dry) == [0, 1, 2]
    assert {r["headers"]["x-correlation-id"] for r in dry} == {"dry-0", "dry-1", "dry-2"}
    assert len(services["legacy"].received("/skip/")) == 3
    time.sleep(1.0)  # the skipped writes had every chance to arrive
    assert services["new"].received("/skip/") == []
    assert metric_value(gateway.metrics(), "strangler_shadow_skipped_total", capability="writes-skip",
                        reason="unsafe_method") == 3


def test_no_secret_reaches_the_store(gateway: GatewayProcess, client: httpx.Client) -> None:
    headers = {"authorization": SECRETS["authorization"], "cookie": SECRETS["cookie"]}
    for i in range(5):
        assert client.get(f"/secrets/{i}", headers=headers).status_code == 200
        assert client.get("/secrets/raw", headers=headers).status_code == 200
    data = report_with(gateway, "secrets", 10)
    fields = {f["field"] for f in data["fields"]}
    assert {"/user/ssn", "/user/cards/0/number", "/user/cards/1", "/token", "/profile", "/seen_authorization",
            "header:set-cookie", "body"} <= fields
    database = Path(str(gateway.config["store"]).removeprefix("sqlite:///"))
    rows = 0
    with sqlite3.connect(database) as conn:
        tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        assert {"shadow_comparisons", "shadow_divergences"} <= set(tables)
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):  # noqa: S608 - names from sqlite_master
                rows += 1
                text = " ".join(str(value) for value in row)
                for name, secret in SECRETS.items():
                    core = secret.split("=", 1)[-1].removeprefix("Bearer ")
                    assert core not in text and core.upper() not in text, f"{name} found in {table}: {text[:300]}"
        stored = conn.execute(
            "SELECT field, primary_value, other_value FROM shadow_divergences WHERE capability = 'secrets'"
        ).fetchall()
    assert rows > 50
    values = {field: (orjson.loads(a), orjson.loads(b)) for field, a, b in stored}
    assert values["/user/ssn"] == ("***", "***")
    assert values["header:set-cookie"] == ("***", "***")
    assert values["/profile"][0] == {"ssn": "***", "city": "Paris"}
    assert values["/user/cards/1"][1] == {"number": "***"}
    assert re.fullmatch(r"sha256:[0-9a-f]{64} \(\d+ bytes\)", values["body"][0])


def test_the_html_report_is_one_self_contained_page(
    gateway: GatewayProcess, client: httpx.Client, tmp_path: Path
) -> None:
    for i in range(5):
        client.get(f"/changed/items/html-{i}")
    report_with(gateway, "changed", 5)
    response = httpx.get(f"{gateway.admin_url}/report", params={"format": "html", "capability": "changed"},
                         headers=AUTH)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    out = tmp_path / "report.html"
    cli_report(gateway, "--format", "html", "-o", str(out))
    for page in (response.text, out.read_text(encoding="utf-8")):
        assert page.lstrip().lower().startswith("<!doctype html>") and page.rstrip().endswith("</html>")
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|\bsrc\s*=|\bhref\s*=|@import|url\(", page, re.I)
        assert "changed" in page and "/price" in page and "GET /changed/items/{id}" in page
        assert "100.00%" in page  # the field's rate
        assert "<svg" in page  # the divergence rate over time, inline
    assert "same" in out.read_text(encoding="utf-8")  # without --capability: every capability


def test_the_gate_refuses_a_flip_until_enough_clean_comparisons(
    gateway: GatewayProcess, client: httpx.Client
) -> None:
    refused = flip(gateway, "gated", "new")
    assert refused.status_code == 412
    evidence = refused.json()["evidence"]
    assert (evidence["samples"], evidence["min_samples"], evidence["allowed"]) == (0, 5, False)
    assert report(gateway, "gated")["gate"]["passes"] is False
    for i in range(5):
        assert client.get(f"/gated/{i}").status_code == 200
    report_with(gateway, "gated", 5)
    allowed = flip(gateway, "gated", "new")
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["mode"] == "new"
    back = flip(gateway, "gated", "legacy")  # backwards is always allowed
    assert back.status_code == 200


def test_report_endpoints_refuse_bad_input(gateway: GatewayProcess) -> None:
    def get(path: str, **params: str) -> httpx.Response:
        return httpx.get(f"{gateway.admin_url}{path}", params=params, headers=AUTH)

    assert get("/report", capability="nope").status_code == 404
    assert get("/report", format="xml").status_code == 422
    assert get("/divergences", limit="many").status_code == 422
    assert get("/divergences", capability="nope").status_code == 404
    assert httpx.get(f"{gateway.admin_url}/report").status_code == 401
    every = get("/report").json()["capabilities"]
    assert {c["capability"] for c in every} >= {"same", "changed", "noisy", "slow", "down", "secrets", "gated"}


def test_the_table_report(gateway: GatewayProcess, client: httpx.Client) -> None:
    client.get("/changed/items/table")
    report_with(gateway, "changed", 1)
    out = cli_report(gateway, "--capability", "changed").stdout
    assert "changed" in out and "/price" in out and "GET /changed/items/{id}" in out
