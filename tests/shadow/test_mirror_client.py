"""The lean mirror client against real servers on loopback: framing, keep-alive, failures, timeouts."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from strangler.gateway.config import UpstreamConfig
from strangler.gateway.errors import ConnectFailed, UpstreamTimeout, UpstreamUnavailable
from strangler.gateway.upstream import UpstreamRequest
from strangler.shadow.mirror_client import MirrorClient, MirrorClients
from tests.support.echo import EchoUpstream, header_values, pattern_sha256
from tests.support.ports import free_port
from tests.support.raw_upstream import RawUpstream

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoUpstream]:
    upstream = EchoUpstream("mirror").start()
    yield upstream
    upstream.stop()


def client_for(url: str, **options: Any) -> MirrorClient:
    return MirrorClient("m", UpstreamConfig(url=url, **options))


async def fetch(client: MirrorClient, method: str = "GET", target: str = "/a?b=1",
                headers: list[tuple[str, str]] | None = None, body: bytes | None = None) -> tuple[int, dict[str, str],
                                                                                               bytes]:
    response = await client.send(UpstreamRequest(method, target, headers or [], body))
    try:
        data = b"".join([chunk async for chunk in response.body()])
    finally:
        await response.close()
    return response.status, {k.decode().lower(): v.decode() for k, v in response.headers}, data


async def test_a_get_arrives_as_sent(echo: EchoUpstream) -> None:
    client = client_for(echo.url)
    status, headers, body = await fetch(client, headers=[("x-correlation-id", "c-1"), ("x-strangler-shadow", "1")])
    record = orjson.loads(body)
    assert (status, headers["content-type"], record["method"], record["raw_path"], record["query_string"]) == (
        200, "application/json", "GET", "/a", "b=1")
    assert header_values(record, "host") == [f"127.0.0.1:{echo.port}".encode()]
    assert header_values(record, "x-correlation-id") == [b"c-1"]
    assert header_values(record, "x-strangler-shadow") == [b"1"]
    await client.aclose()


async def test_a_body_is_sent_with_its_length_whatever_the_original_framing(echo: EchoUpstream) -> None:
    client = client_for(echo.url)
    payload = bytes(range(256)) * 1000
    headers = [("transfer-encoding", "chunked"), ("content-length", "5"), ("connection", "close")]
    _, _, body = await fetch(client, "POST", "/upload", headers, payload)
    record = orjson.loads(body)
    assert (record["body_length"], record["body_sha256"]) == (len(payload), hashlib.sha256(payload).hexdigest())
    assert header_values(record, "content-length") == [str(len(payload)).encode()]
    assert header_values(record, "transfer-encoding") == [] and header_values(record, "connection") == []
    _, _, body = await fetch(client, "POST", "/empty")
    assert header_values(orjson.loads(body), "content-length") == [b"0"]
    await client.aclose()


async def test_connections_are_kept_alive_and_reused(echo: EchoUpstream) -> None:
    client = client_for(echo.url)
    await fetch(client)
    [conn] = client.pool._idle
    for _ in range(5):
        assert (await fetch(client))[0] == 200
    assert client.pool._idle == [conn]
    await client.aclose()
    assert conn.closed


async def test_concurrent_requests_use_several_connections(echo: EchoUpstream) -> None:
    client = client_for(echo.url)
    results = await asyncio.gather(*(fetch(client, target=f"/c/{i}") for i in range(10)))
    assert [orjson.loads(body)["raw_path"] for _, _, body in results] == [f"/c/{i}" for i in range(10)]
    assert 1 < len(client.pool._idle) <= 10
    await client.aclose()


@pytest.mark.parametrize("size", [0, 1, 70_000, 3 * 1024 * 1024])
@pytest.mark.parametrize("chunked", [False, True])
async def test_bodies_arrive_whole(echo: EchoUpstream, size: int, chunked: bool) -> None:
    client = client_for(echo.url)
    headers = [("x-echo-download", str(size))] + ([("x-echo-chunked", "1")] if chunked else [])
    for _ in range(2):  # and the connection is fit for the next answer
        status, response_headers, body = await fetch(client, headers=headers)
        assert status == 200 and len(body) == size
        assert hashlib.sha256(body).hexdigest() == pattern_sha256(size)
        assert ("transfer-encoding" in response_headers) is chunked
    await client.aclose()


async def test_a_body_read_only_in_part_does_not_return_its_connection(echo: EchoUpstream) -> None:
    client = client_for(echo.url)
    response = await client.send(UpstreamRequest("GET", "/big", [("x-echo-download", str(5 * 1024 * 1024))], None))
    async for _ in response.body():
        break  # too large for the mirror: it stops reading
    await response.close()
    assert client.pool._idle == []
    assert (await fetch(client))[0] == 200
    await client.aclose()


async def test_head_answers_have_no_body(echo: EchoUpstream) -> None:
    client = client_for(echo.url)
    status, headers, body = await fetch(client, "HEAD")
    assert (status, body) == (200, b"") and int(headers["content-length"]) > 0
    assert (await fetch(client))[0] == 200
    await client.aclose()


@pytest.mark.parametrize(
    ("raw", "status", "body"),
    [
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", 200, b"until the end"),
        (b"HTTP/1.0 200 OK\r\n\r\nold style", 200, b"old style"),
        (b"HTTP/1.1 204 No Content\r\n\r\n", 204, b""),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok", 201, b"ok"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", 200, b"abcde"),
    ],
)
async def test_framings(raw: bytes, status: int, body: bytes) -> None:
    upstream = RawUpstream("canned", raw).start()
    try:
        client = client_for(upstream.url)
        assert (await fetch(client))[::2] == (status, body)
        await client.aclose()
    finally:
        upstream.stop()


async def test_an_idle_connection_the_server_closed_is_not_used() -> None:
    upstream = RawUpstream("canned", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").start()  # then closes
    try:
        client = client_for(upstream.url)
        assert await fetch(client) == (200, {"content-length": "2"}, b"ok")
        await asyncio.sleep(0.1)
        assert await fetch(client) == (200, {"content-length": "2"}, b"ok")
        assert upstream.requests == 2
        await client.aclose()
    finally:
        upstream.stop()


class OneAnswerPerConnection:
    """Answers the first request on each connection with keep-alive, then closes at the next one unanswered:
    what a client sees when an upstream's idle timeout ends a connection as a request goes out on it."""

    def __init__(self) -> None:
        self.requests: list[tuple[int, bytes]] = []  # (connection number, request line)
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        try:
            for answered in (False, True):
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append((number, head.split(b"\r\n")[0]))
                if answered:
                    break
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


async def test_a_safe_request_on_a_connection_closed_as_it_went_out_goes_again_on_another() -> None:
    upstream = OneAnswerPerConnection()
    client = client_for(await upstream.start())
    try:
        assert (await fetch(client, target="/1"))[::2] == (200, b"ok")
        assert (await fetch(client, target="/2"))[::2] == (200, b"ok")
        assert upstream.requests == [(1, b"GET /1 HTTP/1.1"), (1, b"GET /2 HTTP/1.1"), (2, b"GET /2 HTTP/1.1")]
        with pytest.raises(UpstreamUnavailable):  # a write is never sent twice
            await fetch(client, "POST", "/3", body=b"x")
        assert upstream.requests[3:] == [(2, b"POST /3 HTTP/1.1")]
    finally:
        await client.aclose()
        assert upstream.server is not None
        upstream.server.close()


async def test_a_refused_connection_is_connect_failed() -> None:
    client = client_for(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ConnectFailed):
        await fetch(client)


@pytest.mark.parametrize(("behaviour", "error"), [("reset", UpstreamUnavailable), ("reset-early", UpstreamUnavailable),
                                                  ("hang", UpstreamTimeout)])
async def test_failures_are_the_ports_errors(behaviour: str, error: type[Exception]) -> None:
    upstream = RawUpstream(behaviour).start()  # type: ignore[arg-type]
    try:
        client = client_for(upstream.url, timeout=0.3)
        with pytest.raises(error):
            await fetch(client)
        assert client.pool._idle == []
    finally:
        upstream.stop()


async def test_an_invalid_answer_is_upstream_unavailable() -> None:
    upstream = RawUpstream("canned", b"HTTP/1.1 abc nonsense\r\n\r\n").start()
    try:
        with pytest.raises(UpstreamUnavailable):
            await fetch(client_for(upstream.url))
    finally:
        upstream.stop()


async def test_a_path_prefix_of_the_upstream_url_is_kept(echo: EchoUpstream) -> None:
    client = client_for(f"{echo.url}/base/")
    _, _, body = await fetch(client, target="/x?y=1")
    assert orjson.loads(body)["raw_path"] == "/base/x"
    await client.aclose()


async def test_mirror_clients_close_their_connections_at_stop(echo: EchoUpstream) -> None:
    clients = MirrorClients({"echo": UpstreamConfig(url=echo.url), "other": UpstreamConfig(url=echo.url)})
    assert sorted(clients) == ["echo", "other"] and len(clients) == 2
    await fetch(clients["echo"])
    [conn] = clients["echo"].pool._idle
    await clients.start()
    await clients.stop()
    assert conn.closed and clients["echo"].pool._idle == []
