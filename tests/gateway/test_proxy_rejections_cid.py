"""Answers the gateway gives before it prepares the upstream headers still carry a correlation id."""

from __future__ import annotations

import httpx
import pytest

from strangler.config import load_config_text
from strangler.gateway.proxy import ProxyApp

CONFIG = """
upstreams: {legacy: {url: "http://127.0.0.1:9"}}
capabilities:
  customers: {legacy: legacy, routes: ["GET /customers/{id}"]}
"""


@pytest.mark.parametrize(
    ("path", "status"),
    [("/a%2fb", 400), ("/unrouted", 503)],
)
async def test_early_rejection_echoes_the_clients_correlation_id(path: str, status: int) -> None:
    app = ProxyApp(load_config_text(CONFIG))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        response = await client.get(path, headers={"x-correlation-id": "abc-123"})
    assert response.status_code == status
    assert response.headers["x-correlation-id"] == "abc-123"
    assert response.json()["correlation_id"] == "abc-123"


async def test_early_rejection_generates_a_correlation_id_when_the_client_sent_none() -> None:
    app = ProxyApp(load_config_text(CONFIG))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        response = await client.get("/a%2fb", headers={"x-correlation-id": "bad id with spaces"})
    assert response.status_code == 400
    generated = response.headers["x-correlation-id"]
    assert generated != "bad id with spaces" and len(generated) == 36
