"""S3: request smuggling. Every request of the corpus (CL.TE, TE.CL, TE.TE obfuscations, duplicate, empty
and signed Content-Length, bare-LF chunks, obs-fold, ...) is answered 400 and the connection is closed;
the upstream sees exactly the legitimate requests (none of the corpus, and a legitimate request sent ahead
of one on the same connection exactly once)."""

from __future__ import annotations

import time

import pytest

from tests.integration.test_smuggling import CORPUS as INTEGRATION_CORPUS
from tests.reliability.report import record
from tests.support.echo import EchoUpstream
from tests.support.gateway import GatewayProcess
from tests.support.rawhttp import exchange_until_closed, parse_responses

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

POST = b"POST /s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
CORPUS = {
    **INTEGRATION_CORPUS,
    "empty-cl": POST + b"Content-Length: \r\n\r\nhello",
    "cl-with-space-inside": POST + b"Content-Length: 1 0\r\n\r\nhello",
    "cl-trailing-garbage": POST + b"Content-Length: 5x\r\n\r\nhello",
    "cl-overflow": POST + b"Content-Length: 99999999999999999999999\r\n\r\nhello",
    "te-tab-obfuscated": POST + b"Transfer-Encoding:\tchunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    "te-vertical-tab": POST + b"Transfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n",
    "te-cased-twice": POST + b"Transfer-Encoding: chunked\r\nTransfer-encoding: cow\r\n\r\n0\r\n\r\n",
    "te-quoted": POST + b'Transfer-Encoding: "chunked"\r\n\r\n0\r\n\r\n',
    "te-comma-empty": POST + b"Transfer-Encoding: chunked, \r\n\r\n0\r\n\r\n",
    "te-obs-fold": POST + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    "te-and-cl-zero": POST + b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "bare-lf-final-chunk": POST + b"Transfer-Encoding: chunked\r\n\r\n0\n\n",
    "chunk-size-overflow-64": POST + b"Transfer-Encoding: chunked\r\n\r\n10000000000000000\r\nx\r\n0\r\n\r\n",
    "header-name-with-space": POST + b"Content Length: 5\r\n\r\nhello",
    "cr-only-line-end": b"GET /s HTTP/1.1\rHost: x\rConnection: close\r\r",
    "nul-in-method": b"G\x00ET /s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
}
LEGITIMATE = b"GET /legitimate-first HTTP/1.1\r\nHost: x\r\n\r\n"


def upstream_paths(echo: EchoUpstream, since: int) -> list[str]:
    time.sleep(0.1)  # anything forwarded would have reached the upstream before the answer; be generous
    return [r["raw_path"] for r in echo.records[since:]]


@pytest.mark.parametrize("data", CORPUS.values(), ids=CORPUS.keys())
def test_smuggling_attempt_is_400_closed_and_not_forwarded(
    hostile_gateway: GatewayProcess, legacy_upstream: EchoUpstream, data: bytes
) -> None:
    since = len(legacy_upstream.records)
    received, closed = exchange_until_closed(hostile_gateway.port, data, timeout=4.0)
    assert [r.status for r in parse_responses(received)] == [400]
    assert closed
    assert upstream_paths(legacy_upstream, since) == []


@pytest.mark.parametrize("data", CORPUS.values(), ids=CORPUS.keys())
def test_upstream_sees_exactly_the_legitimate_request_sent_ahead(
    hostile_gateway: GatewayProcess, legacy_upstream: EchoUpstream, data: bytes
) -> None:
    since = len(legacy_upstream.records)
    received, closed = exchange_until_closed(hostile_gateway.port, LEGITIMATE + data, timeout=4.0)
    statuses = [r.status for r in parse_responses(received)]
    assert closed
    assert statuses == [200, 400]
    assert upstream_paths(legacy_upstream, since) == ["/legitimate-first"]


def test_corpus_size_is_reported() -> None:
    assert len(CORPUS) >= 60
    record("S3", "smuggling corpus", f"{len(CORPUS)} requests, each alone and behind a legitimate one")
