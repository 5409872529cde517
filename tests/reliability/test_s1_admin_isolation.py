"""S1: the admin API is served on its own listener only, behind a bearer token. Its paths sent to the proxy
port are ordinary traffic (the upstream answers them, the gateway never does, a token unlocks nothing), and
on the admin port a missing or wrong token is 401."""

from __future__ import annotations

import httpx
import pytest

from strangler.gateway.admin import OPEN_PATHS
from tests.reliability.report import record
from tests.support.echo import EchoUpstream
from tests.support.gateway import ADMIN_TOKEN, GatewayProcess

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

ADMIN_REQUESTS = [
    ("GET", "/flags"),
    ("PUT", "/flags/users"),
    ("GET", "/flags/users/history"),
    ("GET", "/divergences"),
    ("GET", "/report"),
    ("GET", "/changes/abc"),
    ("GET", "/maturity"),
    ("GET", "/drift"),
    ("POST", "/outcomes/legacy"),
    ("GET", "/openapi.json"),
    ("GET", "/metrics"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
]
PROTECTED = [(m, p) for m, p in ADMIN_REQUESTS if p not in OPEN_PATHS]
BAD_CREDENTIALS = {
    "none": None,
    "wrong": "Bearer wrong-token-0123456789abcdef",
    "basic": f"Basic {ADMIN_TOKEN}",
    "prefix": f"Bearer {ADMIN_TOKEN[:-1]}",
    "extended": f"Bearer {ADMIN_TOKEN}x",
    "bearer-only": "Bearer",
}


@pytest.mark.parametrize("token", [None, ADMIN_TOKEN], ids=["no-token", "admin-token"])
def test_admin_paths_on_the_proxy_port_are_forwarded_never_served(
    hostile_gateway: GatewayProcess, legacy_upstream: EchoUpstream, token: str | None
) -> None:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    served = 0
    for method, path in ADMIN_REQUESTS:
        before = legacy_upstream.count
        body = b'{"mode": "new", "reason": "x", "force": true}' if method in ("PUT", "POST") else None
        response = httpx.request(method, hostile_gateway.url + path, headers=headers, content=body, timeout=10)
        assert response.status_code == 200, (method, path, response.text[:200])
        record_ = response.json()
        assert (record_["server"], record_["method"], record_["raw_path"]) == ("legacy", method, path)
        assert legacy_upstream.count == before + 1
        served += record_["server"] != "legacy"
    flags = httpx.get(f"{hostile_gateway.admin_url}/flags", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert {f["capability"]: f["mode"] for f in flags.json()["flags"]}["users"] == "new-only"  # the PUT did nothing
    record("S1", f"admin paths on the proxy port ({'with' if token else 'without'} a token) served by the gateway",
           f"{served} of {len(ADMIN_REQUESTS)}")


@pytest.mark.parametrize("authorization", BAD_CREDENTIALS.values(), ids=BAD_CREDENTIALS.keys())
def test_admin_port_refuses_a_missing_or_wrong_token(
    hostile_gateway: GatewayProcess, authorization: str | None
) -> None:
    headers = {"authorization": authorization} if authorization else {}
    statuses = set()
    for method, path in PROTECTED:
        response = httpx.request(method, hostile_gateway.admin_url + path, headers=headers, json={}, timeout=10)
        statuses.add(response.status_code)
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"].startswith("Bearer")
    record("S1", f"admin port, credentials '{authorization and authorization[:12]}...'", sorted(statuses))


def test_admin_port_accepts_the_token(hostile_gateway: GatewayProcess) -> None:
    response = httpx.get(f"{hostile_gateway.admin_url}/flags", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 200
