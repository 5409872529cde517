"""The admin API's OpenAPI document: served open at /openapi.json, describes every admin route, and a
running admin API answers whatever schemathesis generates from it without a server error."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import Mount, Route

from strangler.openapi import openapi_document
from strangler.shadow.outcome_service import OutcomeService
from tests.dashboard.estate import TOKEN, build_estate, seed_comparisons
from tests.support.echo import ThreadedUvicorn

AUTH = {"authorization": f"Bearer {TOKEN}"}


def _routes(app: Any) -> set[tuple[str, str]]:
    """(path, method) of every route of the admin app, mounts expanded."""
    starlette = app.app  # inside BearerTokenMiddleware
    out: set[tuple[str, str]] = set()

    def walk(routes: Any, prefix: str) -> None:
        for route in routes:
            if isinstance(route, Mount):
                walk(route.routes, prefix + route.path)
            elif isinstance(route, Route):
                for method in route.methods or ():
                    if method != "HEAD":
                        out.add((prefix + route.path, method.lower()))

    walk(starlette.routes, "")
    return out


def test_every_admin_route_is_in_the_document(tmp_path: Path) -> None:
    _, parts = build_estate(tmp_path)
    documented = {(path, method) for path, item in openapi_document()["paths"].items() for method in item}
    routes = _routes(parts.app)
    assert routes - documented == set()
    assert documented - routes == set()


async def test_the_document_is_served_open_as_json(tmp_path: Path) -> None:
    _, parts = build_estate(tmp_path)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=parts.app), base_url="http://admin") as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.json()["openapi"].startswith("3.")
    assert response.json() == openapi_document()


@pytest.fixture(scope="module")
def admin_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config, parts = build_estate(tmp_path_factory.mktemp("fuzz"))
    seed_comparisons(config)
    # the outcome comparison takes events once it has restored its state (503 before: documented); the
    # lifecycle that restores it in `strangler serve` does not run here, so restore it now
    for part in parts.lifecycle:
        if isinstance(part, OutcomeService):
            asyncio.run(part.restore())
    server = ThreadedUvicorn(parts.app)
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def api_schema(admin_api: str) -> Any:
    return schemathesis.openapi.from_url(f"{admin_api}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[
    HealthCheck.filter_too_much, HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
def test_no_operation_answers_a_server_error(case: Any) -> None:
    case.call_and_validate(headers=AUTH, checks=[not_a_server_error, status_code_conformance,
                                                 content_type_conformance, response_schema_conformance])
