"""What the upstream receives is what the client sent (after normalisation), and the response comes back intact."""

from __future__ import annotations

import hashlib
import os
import socket
import time
import uuid

import httpx
import orjson
import pytest

from tests.support.echo import EchoUpstream, header_values, pattern_sha256
from tests.support.gateway import GatewayProcess, metric_value
from tests.support.raw_upstream import RawUpstream
from tests.support.rawhttp import parse_responses
from tests.support.rawhttp import request as raw_request

pytestmark = pytest.mark.integration


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_method_path_and_query_are_forwarded_byte_exact(
    gateway: GatewayProcess, legacy_echo: EchoUpstream, method: str
) -> None:
    target = b"/items/%c3%a9t%C3%A9/a;b=c/%7Euser/x%2Ay?b=2&a=1&x=%2F&y=a+b&e=&z=%zz&%C3%A9"
    response = raw_request(
        gateway.port,
        method.encode() + b" " + target + b" HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 0\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert response.status == 200
    record = orjson.loads(response.body)
    assert record["method"] == method
    assert record["raw_path"] == "/items/%C3%A9t%C3%A9/a;b=c/~user/x%2Ay"
    assert record["query_string"] == "b=2&a=1&x=%2F&y=a+b&e=&z=%zz&%C3%A9"


@pytest.mark.parametrize(
    "body",
    [b"", os.urandom(1024 * 1024), bytes(range(256)) * 17 + b"\x00\r\n\r\n\xff"],
    ids=["empty", "1MB", "binary"],
)
def test_request_body_with_content_length_arrives_intact(
    client: httpx.Client, legacy_echo: EchoUpstream, body: bytes
) -> None:
    response = client.post("/upload", content=body)
    assert response.status_code == 200
    record = response.json()
    assert record["body_length"] == len(body)
    assert record["body_sha256"] == sha256(body)
    assert header_values(record, "content-length") == [str(len(body)).encode()]


def test_chunked_upload_arrives_intact(client: httpx.Client) -> None:
    pieces = [os.urandom(n) for n in (1, 4096, 65536, 7, 300_000)]
    response = client.put("/upload/chunked", content=iter(pieces))  # no length: httpx sends it chunked
    assert response.status_code == 200
    record = response.json()
    body = b"".join(pieces)
    assert record["method"] == "PUT"
    assert record["body_length"] == len(body)
    assert record["body_sha256"] == sha256(body)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_download_is_streamed_back(client: httpx.Client, chunked: bool) -> None:
    size = 1024 * 1024
    headers = {"x-echo-download": str(size)}
    if chunked:
        headers["x-echo-chunked"] = "1"
    digest = hashlib.sha256()
    pieces = 0
    with client.stream("GET", "/download", headers=headers) as response:
        assert response.status_code == 200
        if chunked:
            assert response.headers["transfer-encoding"] == "chunked"
            assert "content-length" not in response.headers
        else:
            assert response.headers["content-length"] == str(size)
        for piece in response.iter_raw():
            digest.update(piece)
            pieces += 1
    assert digest.hexdigest() == pattern_sha256(size)
    assert pieces > 1


def test_utf8_header_values_roundtrip(client: httpx.Client) -> None:
    value = "Zoë Åström – 東京 ✓".encode()
    response = client.get("/headers", headers={"x-name": value, "x-reflect-x-name-back": value})
    assert response.status_code == 200
    assert header_values(response.json(), "x-name") == [value]
    assert [v for k, v in response.headers.raw if k.lower() == b"x-name-back"] == [value]


def test_request_header_that_is_not_utf8_is_rejected(client: httpx.Client, legacy_echo: EchoUpstream) -> None:
    # obs-text that is latin-1 but not UTF-8: the upstream port carries headers as text, so it is refused
    before = legacy_echo.count
    response = client.get("/headers", headers={"x-name": b"caf\xe9"})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert "x-name" in response.json()["detail"]
    assert legacy_echo.count == before


def test_response_header_with_latin1_bytes_is_passed_back_byte_exact(
    client: httpx.Client, canned_upstream: RawUpstream
) -> None:
    canned_upstream.response = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Latin: caf\xe9 cr\xe8me \xa9\r\nX-Utf8: \xc3\xa9\r\n"
        b"Connection: close\r\n\r\nok"
    )
    response = client.get("/canned/latin1")
    assert response.status_code == 200
    raw = dict((k.lower(), v) for k, v in response.headers.raw)
    assert raw[b"x-latin"] == b"caf\xe9 cr\xe8me \xa9"
    assert raw[b"x-utf8"] == b"\xc3\xa9"
    assert response.content == b"ok"


HOP_BY_HOP = ["connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "proxy-connection",
              "proxy-authorization"]


def test_hop_by_hop_request_headers_are_removed(client: httpx.Client) -> None:
    headers = [
        ("Connection", "keep-alive, X-Hop-Nominated"),
        ("Connection", "x-hop-second"),
        ("Keep-Alive", "timeout=99"),
        ("TE", "trailers"),
        ("Trailer", "X-Checksum"),
        ("Upgrade", "example/1"),
        ("Proxy-Connection", "keep-alive"),
        ("Proxy-Authorization", "Basic c2VjcmV0OnNlY3JldA=="),
        ("X-Hop-Nominated", "drop me"),
        ("X-Hop-Second", "drop me too"),
        ("X-End-To-End", "keep me"),
    ]
    response = client.post("/hop", content=iter([b"chunked ", b"body"]), headers=headers)
    assert response.status_code == 200
    record = response.json()
    received = {name for name, _ in record["headers"]}
    for name in [*HOP_BY_HOP, "x-hop-nominated", "x-hop-second"]:
        if name in ("connection", "transfer-encoding"):
            continue  # the gateway's own hop may carry its own; checked by value below
        assert name not in received, name
    for value in header_values(record, "connection"):
        assert b"x-hop" not in value.lower()
    assert header_values(record, "x-end-to-end") == [b"keep me"]
    assert record["body_length"] == len(b"chunked body")


def test_hop_by_hop_response_headers_are_removed(client: httpx.Client, canned_upstream: RawUpstream) -> None:
    canned_upstream.response = (
        b"HTTP/1.1 200 OK\r\n"
        b"Connection: close, X-Hop-Nominated\r\n"
        b"Keep-Alive: timeout=99\r\n"
        b"Proxy-Connection: keep-alive\r\n"
        b"Proxy-Authenticate: Basic realm=upstream\r\n"
        b"Trailer: X-Checksum\r\n"
        b"Upgrade: example/1\r\n"
        b"TE: trailers\r\n"
        b"X-Hop-Nominated: drop me\r\n"
        b"X-End-To-End: keep me\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    response = client.get("/canned/hop")
    assert response.status_code == 200
    assert response.content == b"hello world"
    names = {k.lower() for k, _ in response.headers.raw}
    for name in [b"keep-alive", b"proxy-connection", b"proxy-authenticate", b"trailer", b"upgrade", b"te",
                 b"x-hop-nominated"]:
        assert name not in names, name
    assert b"x-hop-nominated" not in response.headers.get("connection", "").encode().lower()
    assert response.headers["x-end-to-end"] == "keep me"


@pytest.mark.parametrize("nominated", ["X-Forwarded-For", "Host", "X-Correlation-Id", "Forwarded"])
def test_connection_may_not_nominate_what_the_gateway_sets(
    client: httpx.Client, legacy_echo: EchoUpstream, nominated: str
) -> None:
    before = legacy_echo.count
    response = client.get("/nominate", headers={"Connection": f"keep-alive, {nominated}"})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert legacy_echo.count == before


FORGED = {
    "X-Forwarded-For": "203.0.113.7",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "forged.example",
    "Forwarded": "for=203.0.113.7;proto=https",
    "X-Real-IP": "203.0.113.7",
}


def test_forwarding_headers_from_an_untrusted_peer_are_replaced(gateway: GatewayProcess) -> None:
    # trusted_proxies is 127.0.0.1/32: a client connecting from 127.0.0.2 is not trusted
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(transport=transport, base_url=gateway.url, timeout=10) as untrusted:
        response = untrusted.get("/forwarded", headers={**FORGED, "Host": "shop.example"})
    assert response.status_code == 200
    record = response.json()
    assert record["client"] == "127.0.0.1"  # the gateway's own connection
    assert header_values(record, "x-forwarded-for") == [b"127.0.0.2"]
    assert header_values(record, "x-forwarded-proto") == [b"http"]
    assert header_values(record, "x-forwarded-host") == [b"shop.example"]
    assert header_values(record, "forwarded") == []
    assert header_values(record, "x-real-ip") == []


def test_forwarding_headers_from_a_trusted_proxy_are_kept_and_appended(client: httpx.Client) -> None:
    response = client.get("/forwarded", headers={**FORGED, "Host": "shop.example"})
    assert response.status_code == 200
    record = response.json()
    assert header_values(record, "x-forwarded-for") == [b"203.0.113.7, 127.0.0.1"]
    assert header_values(record, "x-forwarded-proto") == [b"https"]
    assert header_values(record, "x-forwarded-host") == [b"forged.example"]
    assert header_values(record, "forwarded") == [b"for=203.0.113.7;proto=https"]


def test_host_is_the_upstreams_by_default(client: httpx.Client, legacy_echo: EchoUpstream) -> None:
    response = client.get("/host", headers={"Host": "shop.example:8443"})
    record = response.json()
    assert header_values(record, "host") == [f"127.0.0.1:{legacy_echo.port}".encode()]
    assert header_values(record, "x-forwarded-host") == [b"shop.example:8443"]


def test_host_is_the_clients_with_preserve_host(client: httpx.Client) -> None:
    response = client.get("/preserved/host", headers={"Host": "shop.example:8443"})
    record = response.json()
    assert record["raw_path"] == "/preserved/host"
    assert header_values(record, "host") == [b"shop.example:8443"]


def test_well_formed_correlation_id_is_kept(client: httpx.Client) -> None:
    cid = "order-42.retry:1_abc-DEF"
    response = client.get("/cid", headers={"X-Correlation-Id": cid})
    assert response.headers["x-correlation-id"] == cid
    assert header_values(response.json(), "x-correlation-id") == [cid.encode()]


@pytest.mark.parametrize("bad", ["has space", "x" * 129, "semi;colon", "ünï"], ids=["space", "long", "semi", "utf8"])
def test_malformed_correlation_id_is_replaced(client: httpx.Client, bad: str) -> None:
    response = client.get("/cid", headers={"X-Correlation-Id": bad.encode()})
    cid = response.headers["x-correlation-id"]
    assert cid != bad
    uuid.UUID(cid)
    assert header_values(response.json(), "x-correlation-id") == [cid.encode()]


def test_correlation_id_is_generated_when_absent(client: httpx.Client) -> None:
    first = client.get("/cid")
    second = client.get("/cid")
    cid = first.headers["x-correlation-id"]
    uuid.UUID(cid)
    assert header_values(first.json(), "x-correlation-id") == [cid.encode()]
    assert second.headers["x-correlation-id"] != cid



def test_repeated_headers_keep_their_order_both_ways(client: httpx.Client, canned_upstream: RawUpstream) -> None:
    sent = [("X-A", "1"), ("X-B", "x"), ("X-A", "2"), ("Cookie", "a=1"), ("Cookie", "b=2")]
    record = client.get("/repeated", headers=sent).json()
    assert [(k, v) for k, v in record["headers"] if k in ("x-a", "x-b", "cookie")] == [
        (k.lower(), v) for k, v in sent
    ]
    canned_upstream.response = (
        b"HTTP/1.1 404 Not Found\r\nSet-Cookie: a=1; Path=/\r\nSet-Cookie: b=2\r\nContent-Length: 4\r\n"
        b"Connection: close\r\n\r\nnope"
    )
    response = client.get("/canned/repeated")
    assert (response.status_code, response.content) == (404, b"nope")
    assert [v for k, v in response.headers.raw if k == b"set-cookie"] == [b"a=1; Path=/", b"b=2"]


def test_head_response_keeps_content_length_and_has_no_body(client: httpx.Client) -> None:
    head = client.head("/head", headers={"x-echo-download": "1000"})
    assert head.status_code == 200
    assert head.headers["content-length"] == "1000"
    assert head.content == b""
    assert client.get("/head").status_code == 200  # and the connection is still in step


def test_expect_100_continue_is_answered_before_the_body_is_sent(gateway: GatewayProcess) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(
            b"POST /expect HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n"
            b"Connection: close\r\n\r\n"
        )
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue\r\n")
        sock.sendall(b"hello")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    response = parse_responses(received)[0]
    assert response.status == 200
    record = orjson.loads(response.body)
    assert record["body_length"] == 5
    assert "expect" not in {name for name, _ in record["headers"]}


@pytest.mark.parametrize(
    "upstream_response",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n",
    ],
    ids=["content-length", "chunked"],
)
def test_response_the_upstream_breaks_off_is_not_completed_for_the_client(
    gateway: GatewayProcess, client: httpx.Client, canned_upstream: RawUpstream, upstream_response: bytes
) -> None:
    # the status line is gone already: the client must see an incomplete message, never a shorter "whole" one
    canned_upstream.response = upstream_response
    log_before = gateway.log()
    broken = metric_value(gateway.metrics(), "strangler_upstream_broken_responses_total", upstream="canned")
    cid = uuid.uuid4().hex
    with pytest.raises(httpx.RemoteProtocolError):
        client.get("/canned/broken", headers={"x-correlation-id": cid})
    deadline = time.monotonic() + 3
    while cid not in gateway.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    logged = gateway.log()[len(log_before):]
    assert [line for line in logged.splitlines() if cid in line] == [
        line for line in logged.splitlines() if "broke off its response" in line]
    assert len(logged.strip().splitlines()) == 1, logged  # one line, no traceback, nothing from uvicorn
    assert metric_value(gateway.metrics(), "strangler_upstream_broken_responses_total", upstream="canned") == (
        broken + 1)


def test_client_that_goes_away_mid_response_releases_the_upstream(
    gateway: GatewayProcess, legacy_echo: EchoUpstream
) -> None:
    # uvicorn drops what is sent after a disconnect without telling: the gateway must notice by itself,
    # or a long (or endless) response keeps the upstream busy until it ends
    drip_id = uuid.uuid4().hex.encode()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(b"GET /drip HTTP/1.1\r\nHost: x\r\nx-echo-drip: 500\r\nx-drip-id: " + drip_id + b"\r\n\r\n")
        received = b""
        while received.count(b"d" * 1024) < 3:
            received += sock.recv(65536)
    deadline = time.monotonic() + 3
    while not legacy_echo.drips[drip_id].get("disconnected") and time.monotonic() < deadline:
        time.sleep(0.02)
    progress = legacy_echo.drips[drip_id]
    assert progress["disconnected"] is True
    assert progress["sent"] < 200
