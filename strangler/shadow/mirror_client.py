"""A lean HTTP/1.1 client for mirrored requests: the `UpstreamClient` port on asyncio and httptools.

A mirror's answer is read whole (up to `shadow.max_body`) and compared, never streamed to a client, so
a general client's machinery (aiohttp: cookie jar, tracing, redirects, multidicts) buys nothing here and
measured about five times the CPU per request of this one: most of what shadow mode added to each
proxied request. Connections are kept alive and pooled per upstream and worker.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence

import httptools
from yarl import URL

from strangler.gateway.config import UpstreamConfig
from strangler.gateway.errors import ConnectFailed, UpstreamTimeout, UpstreamUnavailable
from strangler.gateway.upstream import UpstreamRequest, UpstreamResponse

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                         "proxy-connection", "content-length", "expect"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_HIGH_WATER = 256 * 1024  # buffered body bytes before the socket stops being read


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one exchange at a time; httptools parses the answers."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._head: asyncio.Future[None] | None = None
        self._wake: asyncio.Future[None] | None = None
        self._error: Exception | None = None
        self._head_only = False
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.received = False  # any byte of the answer
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.delimited_by_close = True

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamUnavailable(f"invalid response from the mirror: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.headers_done and not self.complete and self.delimited_by_close and not self._head_only:
            self._finish()  # a body without length ends with the connection
        elif not self.complete:
            self._fail(UpstreamUnavailable("the mirror closed the connection before answering completely"))

    # -- httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        lower = name.lower()
        if lower == b"content-length" or (lower == b"transfer-encoding" and b"chunked" in value.lower()):
            self.delimited_by_close = False

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        if 100 <= self.status < 200:  # an interim answer (100 Continue): the real one follows
            self.headers = []
            return
        self.headers_done = True
        self.keep_alive = self._parser.should_keep_alive()  # asked now: the parser forgets once the answer ends
        if self.status in (204, 304):
            self.delimited_by_close = False
        self._resolve(self._head)
        if self._head_only:  # httptools cannot be told a HEAD answer has no body: end it here
            self._finish()

    def on_body(self, body: bytes) -> None:
        if self._head_only:
            return
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()
        self._resolve(self._wake)

    def on_message_complete(self) -> None:
        if self.headers_done and not self.complete:
            self._finish()

    # -- the exchange

    async def exchange(self, head: bytes, body: bytes | None, head_only: bool, timeout: float) -> None:
        """Send a request and wait for its status and headers (the body follows through `chunk`)."""
        if self.transport is None or self.closed:
            raise UpstreamUnavailable("the connection to the mirror is closed")
        self._reset()
        self._head_only = head_only
        self._error = None
        self._head = asyncio.get_running_loop().create_future()
        self.transport.write(head + body if body else head)
        async with asyncio.timeout(timeout):
            await self._head
        if self._error is not None:
            raise self._error

    async def chunks_of_body(self, timeout: float) -> AsyncIterator[bytes]:
        while True:
            if self.chunks:
                chunks, self.chunks, self.buffered = self.chunks, [], 0
                if self.transport is not None and not self.closed:
                    self.transport.resume_reading()
                for chunk in chunks:
                    yield chunk
                continue
            if self._error is not None:
                raise self._error
            if self.complete:
                return
            self._wake = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self._wake
            except TimeoutError:
                raise UpstreamTimeout("the mirror stopped sending its answer") from None

    @property
    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed and not self._head_only

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _finish(self) -> None:
        self.complete = True
        self._resolve(self._wake)

    def _fail(self, error: Exception) -> None:
        if self._error is None:
            self._error = error
        self._resolve(self._head)
        self._resolve(self._wake)

    @staticmethod
    def _resolve(waiter: asyncio.Future[None] | None) -> None:
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _MirrorResponse:
    __slots__ = ("status", "headers", "_client", "_conn")

    def __init__(self, client: MirrorClient, conn: _Connection) -> None:
        self._client = client
        self._conn = conn
        self.status = conn.status
        self.headers: Sequence[tuple[bytes, bytes]] = conn.headers

    def body(self) -> AsyncIterator[bytes]:
        return self._conn.chunks_of_body(self._client.timeout)

    async def close(self) -> None:
        self._client.release(self._conn)


class MirrorClient:
    """One upstream as the mirror sees it (see the module docstring)."""

    def __init__(self, name: str, config: UpstreamConfig) -> None:
        self.name = name
        url = URL(config.url)
        self._host = url.host or ""
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if url.scheme == "https" else None
        default_port = url.port is None or url.port == (443 if url.scheme == "https" else 80)
        self._host_header = url.raw_host if default_port else f"{url.raw_host}:{url.port}"
        self._prefix = url.raw_path.rstrip("/")
        self._connect_timeout = config.connect_timeout
        self.timeout = config.timeout
        self._pool_size = config.pool_size
        self._idle: list[_Connection] = []

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        body = await _bytes(request.body)
        head = self._head(request, body)
        head_only = request.method == "HEAD"
        while self._idle:  # a kept-alive connection, unless the server has closed it meanwhile
            conn = self._idle.pop()
            if conn.closed:
                continue
            try:
                await conn.exchange(head, body, head_only, self.timeout)
            except UpstreamUnavailable:
                conn.close()
                if not conn.received and request.method in _SAFE_METHODS:
                    continue  # the server closed it unread: safe to try another connection
                raise
            except TimeoutError:
                conn.close()
                raise UpstreamTimeout(f"mirror {self.name!r} did not answer in time") from None
            except BaseException:  # cancelled: the answer may still come, on a connection nobody reads
                conn.close()
                raise
            return _MirrorResponse(self, conn)
        conn = await self._connect()
        try:
            await conn.exchange(head, body, head_only, self.timeout)
        except TimeoutError:
            conn.close()
            raise UpstreamTimeout(f"mirror {self.name!r} did not answer in time") from None
        except BaseException:
            conn.close()
            raise
        return _MirrorResponse(self, conn)

    def release(self, conn: _Connection) -> None:
        if conn.reusable and len(self._idle) < self._pool_size:
            self._idle.append(conn)
        else:
            conn.close()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(
                    _Connection, self._host, self._port, ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                )
        except TimeoutError:
            raise UpstreamTimeout(f"cannot connect to mirror {self.name!r} in time") from None
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to mirror {self.name!r}: {exc}") from exc
        return conn

    def _head(self, request: UpstreamRequest, body: bytes | None) -> bytes:
        lines = [f"{request.method} {self._prefix}{request.target} HTTP/1.1"]
        has_host = False
        for name, value in request.headers:
            lower = name.lower()
            if lower in _HOP_BY_HOP:
                continue
            has_host = has_host or lower == "host"
            lines.append(f"{name}: {value}")
        if not has_host:
            lines.insert(1, f"host: {self._host_header}")
        if body:
            lines.append(f"content-length: {len(body)}")
        elif request.method in _BODY_METHODS:
            lines.append("content-length: 0")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


async def _bytes(body: AsyncIterator[bytes] | bytes | None) -> bytes | None:
    if body is None or isinstance(body, bytes):
        return body
    return b"".join([chunk async for chunk in body])


class MirrorClients(Mapping[str, MirrorClient]):
    """A mirror client per configured upstream; a lifecycle part of the proxy process (closes them at stop)."""

    def __init__(self, upstreams: Mapping[str, UpstreamConfig]) -> None:
        self._clients = {name: MirrorClient(name, config) for name, config in upstreams.items()}

    def __getitem__(self, name: str) -> MirrorClient:
        return self._clients[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._clients)

    def __len__(self) -> int:
        return len(self._clients)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        for client in self._clients.values():
            await client.aclose()
