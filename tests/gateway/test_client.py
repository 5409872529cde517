"""The hot path's upstream client against real servers on loopback: framing both ways, keep-alive and the
pool, flow control, and hostile upstreams (resets, half answers, stalls, garbage, stale connections)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from strangler.gateway.client import Http1UpstreamClient
from strangler.gateway.config import UpstreamConfig
from strangler.gateway.errors import ConnectFailed, UpstreamTimeout, UpstreamUnavailable
from strangler.gateway.http1 import HIGH_WATER
from strangler.gateway.upstream import UpstreamRequest
from tests.support.echo import EchoUpstream, header_values, pattern_sha256
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoUpstream]:
    upstream = EchoUpstream("upstream").start()
    yield upstream
    upstream.stop()


def client_for(url: str, **options: Any) -> Http1UpstreamClient:
    return Http1UpstreamClient("up", UpstreamConfig(url=url, **options))


async def fetch(
    client: Http1UpstreamClient, method: str = "GET", target: str = "/a?b=1",
    headers: list[tuple[str, str]] | None = None, body: bytes | AsyncIterator[bytes] | None = None,
    chunked: bool = False,
) -> tuple[int, dict[str, str], bytes]:
    response = await client.send(UpstreamRequest(method, target, headers or [], body, chunked=chunked))
    try:
        data = b"".join([chunk async for chunk in response.body()])
    finally:
        await response.close()
    return response.status, {k.decode().lower(): v.decode("latin-1") for k, v in response.headers}, data


async def pieces(*chunks: bytes, pause: float = 0.0) -> AsyncIterator[bytes]:
    for chunk in chunks:
        if pause:
            await asyncio.sleep(pause)
        yield chunk


class Scripted:
    """A TCP server in the test's own loop that runs `handler` for each connection; counts what it saw."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []  # request heads, in the order read
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> Scripted:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
        """One request: its head and its body (Content-Length or chunked)."""
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(head)
        lines = (line.partition(b":") for line in head.split(b"\r\n")[1:])
        fields = {name.strip().lower(): value.strip() for name, _, value in lines}
        if fields.get(b"transfer-encoding") == b"chunked":
            body = b""
            while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
                body += (await reader.readexactly(size + 2))[:-2]
            await reader.readuntil(b"\r\n")
            return head, body
        return head, await reader.readexactly(int(fields.get(b"content-length", b"0")))


async def eventually(condition: Callable[[], bool], limit: float = 10.0) -> None:
    """Wait until `condition` holds (events on loopback arrive within milliseconds; the limit is generous)."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.01)


def reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    writer.transport.abort()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def answering(*answers: bytes, then_close: bool = False) -> Callable[[Scripted], Handler]:
    """A handler that reads a request and answers the next of `answers` (the last repeats), keeping the
    connection for more unless `then_close`."""

    def make(server: Scripted) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                await server.read_request(reader)
                writer.write(answers[min(len(server.requests), len(answers)) - 1])
                await writer.drain()
                if then_close:
                    return

        return handle

    return make


async def scripted(make: Callable[[Scripted], Handler]) -> Scripted:
    server = Scripted(lambda r, w: asyncio.sleep(0))
    server.handler = make(server)
    return await server.__aenter__()


# -- what arrives upstream


async def test_a_request_arrives_as_sent_with_nothing_added_but_host(echo: EchoUpstream) -> None:
    client = client_for(echo.url)
    sent = [("accept", "application/json"), ("x-a", "1"), ("x-b", "Zoë ✓"), ("x-a", "2"), ("x-correlation-id", "c-1")]
    status, headers, body = await fetch(client, target="/items/%C3%A9;v=1?b=2&a=%2F&&z", headers=sent)
    record = orjson.loads(body)
    assert (status, headers["content-type"]) == (200, "application/json")
    assert (record["method"], record["raw_path"], record["query_string"]) == (
        "GET", "/items/%C3%A9;v=1", "b=2&a=%2F&&z")
    assert record["headers"] == [["host", f"127.0.0.1:{echo.port}"]] + [
        [k, v.encode().decode("latin-1")] for k, v in sent
    ]
    await client.aclose()


async def test_the_clients_host_replaces_the_upstreams_and_a_path_prefix_is_kept(echo: EchoUpstream) -> None:
    client = client_for(f"{echo.url}/base/")
    _, _, body = await fetch(client, target="/x?y=1", headers=[("host", "shop.example")])
    record = orjson.loads(body)
    assert record["raw_path"] == "/base/x"
    assert header_values(record, "host") == [b"shop.example"]
    await client.aclose()


@pytest.mark.parametrize(
    ("method", "body", "chunked", "framing"),
    [
        ("GET", None, False, {}),
        ("POST", None, False, {"content-length": [b"0"]}),
        ("POST", b"x" * 70_000, False, {"content-length": [b"70000"]}),
        ("PUT", "sized", False, {"content-length": [b"300007"]}),
        ("PATCH", "stream", True, {"transfer-encoding": [b"chunked"]}),
    ],
    ids=["get", "post-empty", "bytes", "sized-stream", "chunked-stream"],
)
async def test_bodies_arrive_whole_with_this_hops_framing(
    echo: EchoUpstream, method: str, body: Any, chunked: bool, framing: dict[str, list[bytes]]
) -> None:
    client = client_for(echo.url)
    payload = os.urandom(300_007) if isinstance(body, str) else (body or b"")
    headers = [("content-length", str(len(payload)))] if body == "sized" else []
    if isinstance(body, str):
        body = pieces(payload[:7], payload[7:100_007], payload[100_007:], pause=0.01)
    for _ in range(2):  # and the connection is in step for the next request
        status, _, answer = await fetch(client, method, "/upload", headers, body, chunked)
        record = orjson.loads(answer)
        assert (status, record["body_length"], record["body_sha256"]) == (
            200, len(payload), hashlib.sha256(payload).hexdigest())
        for name in ("content-length", "transfer-encoding"):
            assert header_values(record, name) == framing.get(name, [])
        if not isinstance(body, bytes | None):
            break  # a stream is read once
    await client.aclose()


async def test_a_header_with_a_line_break_is_not_sent(echo: EchoUpstream) -> None:
    client = client_for(echo.url)
    before = echo.count
    for value in ("a\r\nx-injected: 1", "a\nb", "a\rb"):
        with pytest.raises(UpstreamUnavailable, match="line break"):
            await fetch(client, headers=[("x-v", value)])
    assert echo.count == before


# -- what comes back


@pytest.mark.parametrize("size", [0, 1, 70_000, 3 * 1024 * 1024])
@pytest.mark.parametrize("chunked", [False, True])
async def test_answers_stream_back_whole(echo: EchoUpstream, size: int, chunked: bool) -> None:
    client = client_for(echo.url)
    headers = [("x-echo-download", str(size))] + ([("x-echo-chunked", "1")] if chunked else [])
    for _ in range(2):
        status, response_headers, body = await fetch(client, headers=headers)
        assert status == 200 and len(body) == size
        assert hashlib.sha256(body).hexdigest() == pattern_sha256(size)
        assert ("transfer-encoding" in response_headers) is chunked
    assert len(client._idle) == 1
    await client.aclose()


async def test_an_unread_answer_stops_being_read_from_the_socket(echo: EchoUpstream) -> None:
    client = client_for(echo.url)
    response = await client.send(UpstreamRequest("GET", "/big", [("x-echo-download", str(50 * 1024 * 1024))], None))
    body = response.body()
    first = await body.__anext__()
    conn = response._conn  # type: ignore[attr-defined]
    await asyncio.sleep(0.5)  # the upstream would send 50 MB in this time if nothing stopped it
    assert conn.buffered <= HIGH_WATER + 256 * 1024
    received = len(first)
    async for chunk in body:
        received += len(chunk)
    assert received == 50 * 1024 * 1024
    await response.close()
    await client.aclose()


async def test_a_slow_body_within_the_timeout_arrives() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in (b"a", b"bc", b"def"):
            await asyncio.sleep(0.15)
            writer.write(b"%x\r\n%b\r\n" % (len(piece), piece))
        writer.write(b"0\r\n\r\n")
        await reader.read()

    async with Scripted(handle) as server:
        client = client_for(server.url, timeout=0.4)
        assert (await fetch(client))[::2] == (200, b"abcdef")
        assert len(client._idle) == 1
        await client.aclose()


@pytest.mark.parametrize(
    ("raw", "status", "body", "reused"),
    [
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", 200, b"until the end", False),
        (b"HTTP/1.0 200 OK\r\n\r\nold style", 200, b"old style", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", 200, b"ok", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", 200, b"ok", False),
        (b"HTTP/1.1 204 No Content\r\n\r\n", 204, b"", True),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 120\r\n\r\n", 304, b"", True),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok", 201, b"ok", True),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", 200, b"abcde", True),
    ],
    ids=["close-delimited", "http-1.0", "http-1.0-keep-alive", "connection-close", "204", "304", "100", "chunked"],
)
async def test_framings(raw: bytes, status: int, body: bytes, reused: bool) -> None:
    server = await scripted(answering(raw, then_close=not reused))
    try:
        client = client_for(server.url)
        for _ in range(2):
            assert (await fetch(client))[::2] == (status, body)
        assert server.connections == (1 if reused else 2)
        await client.aclose()
    finally:
        await server.__aexit__()


async def test_head_answers_have_no_body_and_leave_the_connection_in_step(echo: EchoUpstream) -> None:
    client = client_for(echo.url)
    status, headers, body = await fetch(client, "HEAD", headers=[("x-echo-download", "1000")])
    assert (status, body, headers["content-length"]) == (200, b"", "1000")
    [conn] = client._idle
    status, _, body = await fetch(client, headers=[("x-echo-download", "5")])
    assert (status, len(body)) == (200, 5)
    assert client._idle == [conn]
    await client.aclose()


# -- keep-alive and the pool


async def test_connections_are_kept_alive_and_reused(echo: EchoUpstream) -> None:
    client = client_for(echo.url)
    await fetch(client)
    [conn] = client._idle
    for _ in range(5):
        assert (await fetch(client))[0] == 200
    assert client._idle == [conn]
    await client.aclose()
    await asyncio.sleep(0)
    assert conn.closed


async def test_the_pool_never_opens_more_than_pool_size_connections() -> None:
    open_now, most = [0], [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        open_now[0] += 1
        most[0] = max(most[0], open_now[0])
        try:
            while True:
                await server.read_request(reader)
                await asyncio.sleep(0.05)
                writer.write(OK)
        finally:
            open_now[0] -= 1

    async with Scripted(handle) as server:
        client = client_for(server.url, pool_size=2)
        results = await asyncio.gather(*(fetch(client, target=f"/{i}") for i in range(7)))
        assert [r[::2] for r in results] == [(200, b"ok")] * 7
        assert (server.connections, most[0], len(server.requests)) == (2, 2, 7)
        await client.aclose()


async def test_waiting_for_a_free_connection_is_bounded_by_the_timeout() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
        for _ in range(10):  # a byte every 0.1 s: the first request holds the only connection for 1 s
            await asyncio.sleep(0.1)
            writer.write(b"x")
        await reader.read()

    async with Scripted(handle) as server:
        client = client_for(server.url, pool_size=1, timeout=0.3)
        first = asyncio.create_task(fetch(client))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout, match="came free"):
            await fetch(client)
        assert time.monotonic() - started >= 0.28  # the wait's own timeout, not the first request's
        assert (await first)[::2] == (200, b"x" * 10)
        assert server.connections == 1
        await client.aclose()


async def test_a_cancelled_call_drops_its_connection_and_frees_its_place() -> None:
    gone = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        if len(server.requests) == 1:
            assert await reader.read() == b""  # the client closed the connection
            gone.set()
            return
        writer.write(OK)
        await reader.read()

    async with Scripted(handle) as server:
        client = client_for(server.url, pool_size=1)
        call = asyncio.create_task(fetch(client))
        while not server.requests:
            await asyncio.sleep(0.01)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await asyncio.wait_for(gone.wait(), 10)
        assert (await fetch(client))[::2] == (200, b"ok")
        await client.aclose()


async def test_an_idle_connection_the_server_closed_is_not_used() -> None:
    server = await scripted(answering(OK, then_close=True))
    try:
        client = client_for(server.url)
        assert (await fetch(client))[::2] == (200, b"ok")
        [conn] = client._idle
        await eventually(lambda: conn.closed)  # the server's FIN has arrived
        assert (await fetch(client))[::2] == (200, b"ok")
        assert (server.connections, len(server.requests)) == (2, 2)
        await client.aclose()
    finally:
        await server.__aexit__()


async def test_a_connection_closed_as_the_next_request_arrives_is_an_error_and_not_sent_again() -> None:
    """The server reads the second request and closes without an answer: that request may have been
    acted on, so the client reports it; whether to try again is the gateway's decision (retry.py)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(OK)
        await server.read_request(reader)

    async with Scripted(handle) as server:
        client = client_for(server.url)
        assert (await fetch(client, "POST", body=b"one"))[::2] == (200, b"ok")
        with pytest.raises(UpstreamUnavailable) as raised:
            await fetch(client, "POST", body=b"two")
        assert not isinstance(raised.value, ConnectFailed)
        assert (server.connections, len(server.requests)) == (1, 2)
        await client.aclose()


async def test_bytes_between_exchanges_put_the_connection_out_of_use() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(OK)
        await asyncio.sleep(0.05)
        writer.write(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")  # unasked
        await reader.read()

    async with Scripted(handle) as server:
        client = client_for(server.url)
        await fetch(client)
        await eventually(lambda: client._idle == [])
        assert (await fetch(client))[::2] == (200, b"ok")
        assert server.connections == 2
        await client.aclose()


# -- hostile upstreams


async def test_a_refused_connection_is_connect_failed() -> None:
    client = client_for(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ConnectFailed):
        await fetch(client)
    assert client._open == 0


async def test_a_connection_that_is_never_accepted_times_out_at_the_connect_timeout() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(4):  # fill the accept queue: further connection attempts get no answer
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        try:
            client = client_for(f"http://127.0.0.1:{port}", connect_timeout=0.3)
            started = time.monotonic()
            with pytest.raises(UpstreamTimeout, match="cannot connect to upstream 'up' within 0.3 s"):
                await fetch(client)
            assert time.monotonic() - started >= 0.28
            assert client._open == 0
        finally:
            for filler in fillers:
                filler.close()


@pytest.mark.parametrize("when", ["before-reading", "after-reading"])
async def test_a_reset_is_upstream_unavailable(when: str) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if when == "after-reading":
            await server.read_request(reader)
        reset(writer)

    async with Scripted(handle) as server:
        client = client_for(server.url)
        with pytest.raises(UpstreamUnavailable) as raised:
            await fetch(client, "POST", body=b"payload")
        assert not isinstance(raised.value, ConnectFailed)  # bytes were sent: not safe to send again
        assert client._idle == []


async def test_an_upstream_that_never_answers_times_out() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")  # a part of the head, then nothing
        await asyncio.sleep(3600)

    async with Scripted(handle) as server:
        client = client_for(server.url, timeout=0.3)
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout, match="did not answer within 0.3 s"):
            await fetch(client)
        assert time.monotonic() - started >= 0.28


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    ],
    ids=["content-length", "chunked"],
)
async def test_an_answer_broken_off_after_its_head_fails_in_the_body(raw: bytes) -> None:
    server = await scripted(answering(raw, then_close=True))
    try:
        client = client_for(server.url)
        response = await client.send(UpstreamRequest("GET", "/", [], None))
        assert response.status == 200
        received = b""
        with pytest.raises(UpstreamUnavailable, match="in the middle of its answer"):
            async for chunk in response.body():
                received += chunk
        assert received == b"hello"
        await response.close()
        assert client._idle == []
    finally:
        await server.__aexit__()


async def test_an_answer_that_stalls_mid_body_times_out() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
        await asyncio.sleep(3600)

    async with Scripted(handle) as server:
        client = client_for(server.url, timeout=0.3)
        response = await client.send(UpstreamRequest("GET", "/", [], None))
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout, match="sent nothing more"):
            async for _ in response.body():
                pass
        assert time.monotonic() - started >= 0.28
        await response.close()


@pytest.mark.parametrize(
    "raw",
    [b"HTTP/1.1 abc nonsense\r\n\r\n", b"garbage\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
     b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"],
    ids=["status", "garbage", "length", "field", "two-lengths", "chunk-size"],
)
async def test_an_invalid_answer_is_upstream_unavailable(raw: bytes) -> None:
    server = await scripted(answering(raw))
    try:
        client = client_for(server.url)
        with pytest.raises(UpstreamUnavailable, match="invalid response"):
            await fetch(client)
        assert client._idle == []
    finally:
        await server.__aexit__()


async def test_a_head_cut_short_is_upstream_unavailable() -> None:
    server = await scripted(answering(b"HTTP/1.1 200 OK\r\nContent-Le", then_close=True))
    try:
        with pytest.raises(UpstreamUnavailable, match="before it answered"):
            await fetch(client_for(server.url))
    finally:
        await server.__aexit__()


# -- request bodies against an upstream that does not wait for them


async def test_an_early_answer_ends_the_upload_and_is_returned() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.requests.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\n\r\nbig!")
        await asyncio.sleep(0.5)  # never reads the body

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(10_000):
            yield b"x" * 65536  # 655 MB: would fill every buffer
            await asyncio.sleep(0)

    async with Scripted(handle) as server:
        client = client_for(server.url)
        status, _, body = await fetch(client, "POST", "/upload", [], endless(), chunked=True)
        assert (status, body) == (413, b"big!")
        assert client._idle == []  # the upstream still expects the rest of a body


async def test_what_the_body_iterator_raises_comes_out_unchanged() -> None:
    class Gone(Exception):
        pass

    async def failing() -> AsyncIterator[bytes]:
        yield b"first part"
        raise Gone()

    closed = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.requests.append(await reader.readuntil(b"\r\n\r\n"))
        await reader.read()
        closed.set()

    async with Scripted(handle) as server:
        client = client_for(server.url)
        with pytest.raises(Gone):
            await fetch(client, "PUT", "/x", [("content-length", "100")], failing())
        await asyncio.wait_for(closed.wait(), 10)  # the half-sent request's connection is dropped
        assert client._idle == []


async def test_a_body_that_fails_before_its_first_bytes_sends_nothing(echo: EchoUpstream) -> None:
    class Refused(Exception):
        pass

    async def refused() -> AsyncIterator[bytes]:
        raise Refused()
        yield b""  # pragma: no cover

    client = client_for(echo.url)
    await fetch(client)
    [conn] = client._idle
    before = echo.count
    with pytest.raises(Refused):
        await fetch(client, "POST", "/x", [], refused(), chunked=True)
    assert echo.count == before  # not even the head went out
    assert client._idle == [conn]  # and the connection, unused, is kept
    await client.aclose()


async def test_a_body_longer_than_declared_is_cut_at_the_declared_length() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, body = await server.read_request(reader)
        bodies.append(body)
        bodies.append(await reader.read())  # nothing more: the excess would have been a request of its own

    bodies: list[bytes] = []
    async with Scripted(handle) as server:
        client = client_for(server.url)
        smuggled = b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n"
        with pytest.raises(UpstreamUnavailable, match="not the 5 declared"):
            await fetch(client, "POST", "/x", [("content-length", "5")], pieces(b"hel", b"lo" + smuggled))
        await eventually(lambda: len(bodies) == 2)
        assert bodies == [b"hello", b""]


# -- https


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


async def test_an_https_upstream_is_verified_and_reached(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(head), head))

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_context)
    url = f"https://localhost:{server.sockets[0].getsockname()[1]}"
    try:
        trusted = ssl.create_default_context(cafile=cert)
        trusting = Http1UpstreamClient("tls", UpstreamConfig(url=url), ssl_context=trusted)
        for _ in range(2):
            status, _, body = await fetch(trusting, target="/secure")
            assert status == 200 and body.startswith(b"GET /secure HTTP/1.1\r\nhost: localhost:")
        assert len(trusting._idle) == 1
        await trusting.aclose()
        with pytest.raises(ConnectFailed, match="CERTIFICATE_VERIFY_FAILED"):
            await fetch(client_for(url))  # the system's trust store does not know this certificate
    finally:
        server.close()




async def test_an_upstream_that_stops_taking_the_body_times_out() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.requests.append(await reader.readuntil(b"\r\n\r\n"))
        await asyncio.sleep(3600)  # reads no body: the socket buffers fill, then the client must wait

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(10_000):
            yield b"x" * 65536
            await asyncio.sleep(0)

    async with Scripted(handle) as server:
        client = client_for(server.url, timeout=0.3)
        with pytest.raises(UpstreamTimeout, match="took none of the request body for 0.3 s"):
            await fetch(client, "POST", "/upload", [], endless(), chunked=True)
        assert client._idle == []
