from __future__ import annotations

from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter
from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from strangler.gateway.admin import build_admin_app, registry_metrics

OPS_TOKEN = "ops-0123456789abcdef"
CI_TOKEN = "ci-fedcba9876543210"


async def whoami(request: Request) -> Response:
    return JSONResponse({"token": request.scope["state"]["admin_token_name"]})


async def flip(request: Request) -> Response:
    return JSONResponse({"flipped": request.path_params["name"]}, status_code=202)


def admin_client(ready: bool = True) -> httpx.AsyncClient:
    registry = CollectorRegistry()
    Counter("strangler_test_events", "events", registry=registry).inc(3)

    def readiness() -> tuple[bool, dict[str, Any]]:
        return ready, {"workers": {"alive": 2 if ready else 1, "configured": 2}}

    app = build_admin_app(
        tokens={"ops": SecretStr(OPS_TOKEN), "ci": SecretStr(CI_TOKEN)},
        metrics=registry_metrics(registry),
        readiness=readiness,
        routes=[Route("/whoami", whoami), Route("/flags/{name}", flip, methods=["PUT"])],
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin")


async def test_healthz_is_open() -> None:
    response = await admin_client().get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


@pytest.mark.parametrize(("ready", "status"), [(True, 200), (False, 503)])
async def test_readyz_is_open_and_reports_readiness(ready: bool, status: int) -> None:
    response = await admin_client(ready).get("/readyz")
    assert response.status_code == status
    assert response.json()["ready"] is ready
    assert response.json()["workers"]["configured"] == 2


async def test_metrics_are_open_in_prometheus_text() -> None:
    response = await admin_client().get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "strangler_test_events_total 3.0" in response.text


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        f"Basic {OPS_TOKEN}",
        f"Token {OPS_TOKEN}",
        "Bearer wrong-token-0123456789",
        f"Bearer {OPS_TOKEN[:-1]}",
        f"Bearer {OPS_TOKEN}x",
        f"Bearer {OPS_TOKEN.upper()}",
    ],
)
@pytest.mark.parametrize(("method", "path"), [("GET", "/whoami"), ("PUT", "/flags/customer-profile"), ("GET", "/nope")])
async def test_other_paths_need_a_valid_bearer_token(authorization: str | None, method: str, path: str) -> None:
    headers = {"authorization": authorization} if authorization is not None else {}
    response = await admin_client().request(method, path, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="strangler-admin"'
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 401


@pytest.mark.parametrize(("token", "name"), [(OPS_TOKEN, "ops"), (CI_TOKEN, "ci")])
async def test_a_valid_token_passes_and_its_name_is_recorded(token: str, name: str) -> None:
    response = await admin_client().get("/whoami", headers={"authorization": f"Bearer {token}"})
    assert (response.status_code, response.json()) == (200, {"token": name})


async def test_the_bearer_scheme_is_case_insensitive() -> None:
    response = await admin_client().get("/whoami", headers={"authorization": f"bearer {OPS_TOKEN}"})
    assert response.status_code == 200


async def test_an_authorized_request_reaches_the_added_route() -> None:
    response = await admin_client().put("/flags/customer-profile", headers={"authorization": f"Bearer {OPS_TOKEN}"})
    assert (response.status_code, response.json()) == (202, {"flipped": "customer-profile"})


async def test_an_authorized_request_to_an_unknown_path_is_404_not_401() -> None:
    response = await admin_client().get("/nope", headers={"authorization": f"Bearer {OPS_TOKEN}"})
    assert response.status_code == 404


@pytest.mark.parametrize("path", ["/healthz/", "/metrics/x", "/readyz%2F..%2Fwhoami", "/Healthz"])
async def test_only_the_exact_open_paths_are_open(path: str) -> None:
    response = await admin_client().get(path)
    assert response.status_code == 401


async def test_no_token_configured_means_everything_but_the_open_paths_is_closed() -> None:
    app = build_admin_app(
        tokens={}, metrics=lambda: b"", readiness=lambda: (True, {}), routes=[Route("/whoami", whoami)]
    )
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin")
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/whoami", headers={"authorization": "Bearer "})).status_code == 401
    assert (await client.get("/whoami", headers={"authorization": f"Bearer {OPS_TOKEN}"})).status_code == 401
