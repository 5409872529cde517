"""S4: hop-by-hop headers (RFC 9110 7.6.1) and every header `Connection` nominates are not forwarded, in
either direction; forwarding headers (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`) are kept only from a trusted
proxy and otherwise replaced by what the gateway saw."""

from __future__ import annotations

import httpx
import pytest

from tests.reliability.report import record
from tests.support.echo import header_values
from tests.support.gateway import GatewayProcess

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

HOP_BY_HOP = ["keep-alive", "te", "trailer", "upgrade", "proxy-connection", "proxy-authorization",
              "proxy-authenticate"]
NOMINATED = ["x-hop-one", "x-hop-two", "x-api-key"]
FORGED = {
    "x-forwarded-for": "203.0.113.7",
    "x-forwarded-proto": "https",
    "x-forwarded-host": "forged.example",
    "forwarded": "for=203.0.113.7;proto=https;host=forged.example",
    "x-real-ip": "203.0.113.7",
}


def test_hop_by_hop_and_nominated_request_headers_are_not_forwarded(hostile_gateway: GatewayProcess) -> None:
    headers = [
        ("Connection", "keep-alive, X-Hop-One"),
        ("Connection", "x-hop-two,  X-API-Key"),
        ("Keep-Alive", "timeout=99"),
        ("TE", "trailers"),
        ("Trailer", "X-Checksum"),
        ("Upgrade", "websocket"),
        ("Proxy-Connection", "keep-alive"),
        ("Proxy-Authorization", "Basic c2VjcmV0OnNlY3JldA=="),
        ("Proxy-Authenticate", "Basic realm=x"),
        ("X-Hop-One", "1"),
        ("X-Hop-Two", "2"),
        ("X-API-Key", "secret"),
        ("X-End-To-End", "kept"),
    ]
    response = httpx.post(f"{hostile_gateway.url}/hop", content=iter([b"a ", b"body"]), headers=headers, timeout=10)
    assert response.status_code == 200
    received = response.json()
    names = [name for name, _ in received["headers"]]
    leaked = [n for n in [*HOP_BY_HOP, *NOMINATED] if n in names]
    leaked += [v for v in header_values(received, "connection") if any(h.encode() in v.lower() for h in NOMINATED)]
    assert leaked == []
    assert header_values(received, "x-end-to-end") == [b"kept"]
    assert received["body_length"] == len(b"a body")
    record("S4", "hop-by-hop or nominated request headers forwarded", f"{len(leaked)} of {len(HOP_BY_HOP) + 3}")


def test_hop_by_hop_and_nominated_response_headers_are_not_returned(hostile_gateway: GatewayProcess) -> None:
    reflect = {
        "x-reflect-connection": "x-hop-one, X-Hop-Two",
        "x-reflect-x-hop-one": "1",
        "x-reflect-x-hop-two": "2",
        "x-reflect-keep-alive": "timeout=99",
        "x-reflect-proxy-authenticate": "Basic realm=upstream",
        "x-reflect-proxy-connection": "keep-alive",
        "x-reflect-trailer": "X-Checksum",
        "x-reflect-upgrade": "websocket",
        "x-reflect-x-end-to-end": "kept",
    }
    response = httpx.get(f"{hostile_gateway.url}/hop-response", headers=reflect, timeout=10)
    assert response.status_code == 200
    names = {k.lower() for k, _ in response.headers.raw}
    leaked = [n for n in [b"x-hop-one", b"x-hop-two", b"keep-alive", b"proxy-authenticate", b"proxy-connection",
                          b"trailer", b"upgrade"] if n in names]
    assert leaked == []
    assert response.headers["x-end-to-end"] == "kept"
    record("S4", "hop-by-hop or nominated response headers returned", f"{len(leaked)} of 7")


def test_forged_forwarding_headers_from_an_untrusted_client_are_replaced(hostile_gateway: GatewayProcess) -> None:
    # trusted_proxies is 127.0.0.1/32: a client on 127.0.0.2 is not trusted
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=10) as untrusted:
        response = untrusted.get(f"{hostile_gateway.url}/forwarded", headers={**FORGED, "host": "shop.example"})
    received = response.json()
    seen = {name: header_values(received, name) for name in FORGED}
    assert seen == {
        "x-forwarded-for": [b"127.0.0.2"],
        "x-forwarded-proto": [b"http"],
        "x-forwarded-host": [b"shop.example"],
        "forwarded": [],
        "x-real-ip": [],
    }
    forged_kept = sum(1 for name, value in FORGED.items() if value.encode() in b" ".join(seen[name]))
    record("S4", "forged forwarding values kept from an untrusted client", f"{forged_kept} of {len(FORGED)}")


def test_forwarding_headers_from_a_trusted_proxy_are_kept_and_appended(hostile_gateway: GatewayProcess) -> None:
    response = httpx.get(f"{hostile_gateway.url}/forwarded", headers={**FORGED, "host": "shop.example"}, timeout=10)
    received = response.json()
    assert header_values(received, "x-forwarded-for") == [b"203.0.113.7, 127.0.0.1"]
    assert header_values(received, "x-forwarded-proto") == [b"https"]
    assert header_values(received, "x-forwarded-host") == [b"forged.example"]
    assert header_values(received, "forwarded") == [FORGED["forwarded"].encode()]


@pytest.mark.parametrize("nominated", ["X-Forwarded-For", "Host", "X-Correlation-Id", "Forwarded", "Content-Length"])
def test_connection_may_not_strip_what_the_gateway_sets(hostile_gateway: GatewayProcess, nominated: str) -> None:
    response = httpx.get(f"{hostile_gateway.url}/nominate", headers={"connection": f"close, {nominated}"}, timeout=10)
    assert response.status_code == 400
