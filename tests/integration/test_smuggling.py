"""Malformed and ambiguous requests on a raw socket: refused, and nothing of them reaches the upstream.

A request that two HTTP parsers could frame differently (request smuggling, RFC 9112 6.3 and 11.2) must
never be forwarded. The corpus is answered 400 (or the connection is closed without an answer) by
uvicorn's parser (llhttp) or by the gateway's own checks.
"""

from __future__ import annotations

import time

import orjson
import pytest

from tests.support.echo import EchoUpstream
from tests.support.gateway import GatewayProcess
from tests.support.rawhttp import exchange, parse_responses
from tests.support.rawhttp import request as raw_request

pytestmark = pytest.mark.integration

CHUNKED_POST = b"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"

CORPUS = {
    "cl-and-te": b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n"
    b"Connection: close\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    "te-and-cl": b"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n"
    b"Connection: close\r\n\r\n5c\r\nGPOST / HTTP/1.1\r\n\r\n0\r\n\r\n",
    "duplicate-cl": b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n"
    b"Connection: close\r\n\r\nhello",
    "conflicting-cl": b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n"
    b"Connection: close\r\n\r\nhello!",
    "cl-list": b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\nConnection: close\r\n\r\nhello",
    "signed-cl": b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\nConnection: close\r\n\r\nhello",
    "negative-cl": b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\nConnection: close\r\n\r\nhello",
    "hex-cl": b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\nConnection: close\r\n\r\nhello",
    "te-identity": b"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\nConnection: close\r\n\r\nhello",
    "te-gzip-chunked": b"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n"
    b"\r\n5\r\nhello\r\n0\r\n\r\n",
    "te-split-gzip-chunked": b"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked"
    b"\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "te-chunked-gzip": b"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\nConnection: close\r\n"
    b"\r\n5\r\nhello\r\n0\r\n\r\n",
    "te-xchunked": b"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\nConnection: close\r\n\r\n"
    b"5\r\nhello\r\n0\r\n\r\n",
    "te-repeated": b"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"
    b"Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "te-space-before-colon": b"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\nConnection: close\r\n"
    b"\r\n5\r\nhello\r\n0\r\n\r\n",
    "te-in-http10": b"POST /s HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "bare-lf-in-chunk-extension": CHUNKED_POST + b"5;a\nb\r\nhello\r\n0\r\n\r\n",
    "bare-lf-after-chunk-size": CHUNKED_POST + b"5\nhello\r\n0\r\n\r\n",
    "bare-lf-after-chunk-data": CHUNKED_POST + b"5\r\nhello\n0\r\n\r\n",
    "invalid-chunk-size": CHUNKED_POST + b"zz\r\nhello\r\n0\r\n\r\n",
    "negative-chunk-size": CHUNKED_POST + b"-5\r\nhello\r\n0\r\n\r\n",
    "prefixed-chunk-size": CHUNKED_POST + b"0x5\r\nhello\r\n0\r\n\r\n",
    "overflowing-chunk-size": CHUNKED_POST + b"FFFFFFFFFFFFFFFFF5\r\nhello\r\n0\r\n\r\n",
    "space-after-chunk-size": CHUNKED_POST + b"5 \r\nhello\r\n0\r\n\r\n",
    "chunk-data-too-long": CHUNKED_POST + b"5\r\nhelloXX0\r\n\r\n",
    "quoted-crlf-in-chunk-extension": CHUNKED_POST + b'5;a="b\r\nc"\r\nhello\r\n0\r\n\r\n',
    "content-length-in-trailer": CHUNKED_POST + b"0\r\nContent-Length: 50\r\n\r\n",
    "obs-fold": b"GET /s HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\nConnection: close\r\n\r\n",
    "obs-fold-tab": b"GET /s HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\nConnection: close\r\n\r\n",
    "space-before-colon": b"GET /s HTTP/1.1\r\nHost: x\r\nX-A : a\r\nConnection: close\r\n\r\n",
    "nul-in-value": b"GET /s HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\nConnection: close\r\n\r\n",
    "nul-in-name": b"GET /s HTTP/1.1\r\nHost: x\r\nX\x00A: a\r\nConnection: close\r\n\r\n",
    "control-in-value": b"GET /s HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\nConnection: close\r\n\r\n",
    "bare-cr-in-value": b"GET /s HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\nConnection: close\r\n\r\n",
    "bare-lf-line-ends": b"GET /s HTTP/1.1\nHost: x\nConnection: close\n\n",
    "bare-lf-in-header-block": b"GET /s HTTP/1.1\r\nHost: x\nX-A: b\r\nConnection: close\r\n\r\n",
    "no-colon": b"GET /s HTTP/1.1\r\nHost: x\r\nX-A a\r\nConnection: close\r\n\r\n",
    "empty-name": b"GET /s HTTP/1.1\r\nHost: x\r\n: a\r\nConnection: close\r\n\r\n",
    "leading-whitespace-first-header": b"GET /s HTTP/1.1\r\n Host: x\r\nConnection: close\r\n\r\n",
    "two-hosts": b"GET /s HTTP/1.1\r\nHost: x\r\nHost: y\r\nConnection: close\r\n\r\n",
    "no-host-in-http11": b"GET /s HTTP/1.1\r\nConnection: close\r\n\r\n",
    "space-in-target": b"GET /s x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    "unknown-version": b"GET /s HTTP/1.2\r\nHost: x\r\nConnection: close\r\n\r\n",
    "connect": b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\nConnection: close\r\n\r\n",
    "asterisk-form": b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
}

UNSUPPORTED_VERSIONS = {
    "http-0.9": b"GET /s\r\n\r\n",
    "http-2.0-over-http1": b"GET /s HTTP/2.0\r\nHost: x\r\nConnection: close\r\n\r\n",
}


def send_and_count(gateway: GatewayProcess, echo: EchoUpstream, data: bytes) -> tuple[list[int], int]:
    before = echo.count
    received = exchange(gateway.port, data, timeout=2.0)
    time.sleep(0.05)  # anything forwarded would have reached the upstream before the answer; be generous
    return [response.status for response in parse_responses(received)], echo.count - before


@pytest.mark.parametrize("data", CORPUS.values(), ids=CORPUS.keys())
def test_malformed_request_is_refused_and_not_forwarded(
    gateway: GatewayProcess, legacy_echo: EchoUpstream, data: bytes
) -> None:
    statuses, forwarded = send_and_count(gateway, legacy_echo, data)
    assert statuses in ([400], [])
    assert forwarded == 0


@pytest.mark.parametrize("data", UNSUPPORTED_VERSIONS.values(), ids=UNSUPPORTED_VERSIONS.keys())
def test_unsupported_http_version_is_refused_and_not_forwarded(
    gateway: GatewayProcess, legacy_echo: EchoUpstream, data: bytes
) -> None:
    statuses, forwarded = send_and_count(gateway, legacy_echo, data)
    assert statuses in ([400], [505], [])
    assert forwarded == 0


def test_well_formed_requests_on_one_connection_are_each_forwarded(
    gateway: GatewayProcess, legacy_echo: EchoUpstream
) -> None:
    # the control for the corpus: the same framing, valid, is forwarded request by request
    data = (
        b"POST /one HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        + b"POST /two HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\n\r\n"
        + b"GET /three HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    statuses, forwarded = send_and_count(gateway, legacy_echo, data)
    assert statuses == [200, 200, 200]
    assert forwarded == 3
    assert [(r["raw_path"], r["body_length"]) for r in legacy_echo.records[-3:]] == [
        ("/one", 5), ("/two", 5), ("/three", 0)
    ]


@pytest.mark.parametrize(
    ("target", "forwarded"),
    [
        (b"/a/../b", b"/b"),
        (b"/a/./b/", b"/a/b/"),
        (b"/a//b", b"/a/b"),
        (b"/x/%2e%2e/y", b"/y"),
        (b"/x/%2E%2e/%2e/y", b"/y"),
        (b"/../../etc/passwd", b"/etc/passwd"),
        (b"/a%252fb", b"/a%252fb"),
        (b"/caf%c3%a9", b"/caf%C3%A9"),
        (b"/%7euser/%41", b"/~user/A"),
        (b"/a/b?q=/../x", b"/a/b?q=/../x"),
    ],
)
def test_path_is_normalised_and_the_upstream_receives_exactly_that(
    gateway: GatewayProcess, target: bytes, forwarded: bytes
) -> None:
    response = raw_request(gateway.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert response.status == 200
    record = orjson.loads(response.body)
    path, _, query = forwarded.partition(b"?")
    assert record["raw_path"].encode("latin-1") == path
    assert record["query_string"].encode("latin-1") == query


@pytest.mark.parametrize(
    "target", [b"/a%2fb", b"/a%2Fb", b"/a%5cb", b"/a\\b", b"/a%00b", b"/a%zzb", b"/a%2"],
    ids=["%2f", "%2F", "%5c", "backslash", "%00", "bad-escape", "short-escape"],
)
def test_path_that_cannot_be_normalised_is_400(
    gateway: GatewayProcess, legacy_echo: EchoUpstream, target: bytes
) -> None:
    before = legacy_echo.count
    response = raw_request(gateway.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert response.status == 400
    assert response.header(b"content-type") == b"application/problem+json"
    assert legacy_echo.count == before
