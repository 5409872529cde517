"""The hot path's upstream client: the `UpstreamClient` port over HTTP/1.1 connections (`http1.py`).

A proxy needs little of a general HTTP client (no cookies, redirects, decompression or retries: the gateway
decides those) and pays for all of it on every request: with aiohttp's per-request objects, multidicts
and timers the gateway used about twice the CPU per request it uses with this client (bench/RESULTS.md,
"Proxy benchmark"). Per upstream and
worker: a pool of at most `pool_size` keep-alive connections, the most recently used first; requests over
the limit wait for one up to `timeout`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator, Sequence
from urllib.parse import urlsplit

from strangler.gateway.config import UpstreamConfig
from strangler.gateway.errors import ConnectFailed, UpstreamTimeout, UpstreamUnavailable
from strangler.gateway.http1 import Http1Connection
from strangler.gateway.upstream import UpstreamRequest, UpstreamResponse

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_FRAMING = ("content-length", "transfer-encoding")  # the client frames the body itself


class Http1Response:
    """An answer whose head has arrived; its body streams from the connection, which goes back to the
    pool as soon as the last byte is taken (or is dropped at `close` if the body was not read to the end)."""

    __slots__ = ("status", "headers", "_client", "_conn")

    def __init__(self, client: Http1UpstreamClient, conn: Http1Connection) -> None:
        self._client = client
        self._conn: Http1Connection | None = conn
        self.status = conn.status
        self.headers: Sequence[tuple[bytes, bytes]] = conn.headers

    async def body(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while conn is not None:
            if conn.chunks:
                data = conn.take()
                if conn.complete:
                    self._release()  # before the consumer gets the last bytes: the next request may go on it
                    conn = None
                yield data
            elif conn.complete:
                self._release()
                return
            elif conn.error is not None:
                raise conn.error
            else:
                await conn.more_body()

    async def close(self) -> None:
        self._release()

    def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._client.release(conn)


class Http1UpstreamClient:
    """One upstream (see the module docstring). `ssl_context` applies to an https upstream; by default the
    system's trusted certificates and hostname checking."""

    def __init__(self, name: str, config: UpstreamConfig, *, ssl_context: ssl.SSLContext | None = None) -> None:
        url = urlsplit(config.url)
        https = url.scheme == "https"
        self.name = name
        self._host = url.hostname or ""
        self._port = url.port or (443 if https else 80)
        self._ssl = (ssl_context or ssl.create_default_context()) if https else None
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._host_line = f"host: {host}\r\n" if url.port in (None, 443 if https else 80) else (
            f"host: {host}:{self._port}\r\n"
        )
        self._prefix = url.path.rstrip("/")
        self._connect_timeout = config.connect_timeout
        self._timeout = config.timeout
        self._limit = config.pool_size
        self._idle: list[Http1Connection] = []  # a stack: the most recently used on top
        self._open = 0  # connections open or being opened
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        body = request.body
        head, length = self._head(request)
        head_only = request.method == "HEAD"
        conn = await self._acquire()
        if body is None or isinstance(body, bytes):
            try:
                conn.start(head + body if body else head, head_only)
                await conn.response_head()
            except BaseException:  # failed, timed out or cancelled: an answer may still come, to nobody
                conn.abort()
                raise
            return Http1Response(self, conn)
        # Nothing goes out before the body's first bytes are in hand: a request whose body never comes
        # (the client left, or sent a chunk its parser refused) reaches no upstream at all.
        chunks = aiter(body)
        try:
            first = await anext(chunks, None)
            while first == b"":
                first = await anext(chunks, None)
        except BaseException:
            self._put_back(conn)  # unused
            raise
        while conn.closed:  # the upstream closed it meanwhile, unused: nothing was sent on it
            conn = await self._acquire()
        try:
            await self._send_body(conn, head, head_only, first, chunks, length)
            await conn.response_head()
        except BaseException:
            conn.abort()
            raise
        return Http1Response(self, conn)

    @property
    def idle_connections(self) -> int:
        """Kept-alive connections waiting for a request (some may have been closed by the upstream meanwhile)."""
        return len(self._idle)

    def release(self, conn: Http1Connection) -> None:
        """Take a connection back after its exchange: kept for the next one if it can carry one."""
        conn.active = False
        if conn.reusable and not self._closed:
            self._idle.append(conn)
            if self._waiters:
                self._wake_one()
        else:
            conn.abort()  # `_lost` frees its place in the pool

    def _put_back(self, conn: Http1Connection) -> None:
        """Return a connection nothing was sent on."""
        if conn.closed or self._closed:
            conn.abort()
        else:
            self._idle.append(conn)
            if self._waiters:
                self._wake_one()

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.abort()

    # -- the request

    def _head(self, request: UpstreamRequest) -> tuple[bytes, int | None]:
        """The request head with this hop's framing, and the body length to send (None: chunked)."""
        lines = [self._host_line]
        length: int | None = None
        for name, value in request.headers:
            lower = name.lower()
            if lower == "host":
                lines[0] = ""  # the client's Host (preserve_host): ours goes
            elif lower in _FRAMING:
                if lower == "content-length":
                    length = int(value)
                continue
            lines.append(f"{name}: {value}\r\n")
        body = request.body
        if body is None:
            if length is not None or request.method in _BODY_METHODS:
                lines.append("content-length: 0\r\n")
        elif isinstance(body, bytes):
            lines.append(f"content-length: {len(body)}\r\n")
        elif request.chunked or length is None:
            lines.append("transfer-encoding: chunked\r\n")
            length = None
        else:
            lines.append(f"content-length: {length}\r\n")
        fields = "".join(lines)
        # A line break inside a name or value would end the field early and let the rest pass as fields
        # (or a second request) of its own: every line must be one that was put there above.
        if fields.count("\n") != len(lines) - (lines[0] == "") or fields.count("\r") != fields.count("\n"):
            raise UpstreamUnavailable(f"a header for upstream {self.name!r} contains a line break; not sent")
        start = f"{request.method} {self._prefix}{request.target} HTTP/1.1\r\n"
        return start.encode("latin-1") + fields.encode("utf-8") + b"\r\n", length

    async def _send_body(
        self, conn: Http1Connection, head: bytes, head_only: bool, first: bytes | None,
        chunks: AsyncIterator[bytes], length: int | None,
    ) -> None:
        """Stream the body after its head (chunked when `length` is None); stop early if the upstream
        answers before it has taken all of it."""
        chunked = length is None
        if first is None:
            conn.start(head + b"0\r\n\r\n" if chunked else head, head_only)
            sent = 0
        else:
            # Never more than the declared length: the excess would reach the upstream as a request of its own.
            conn.start(head + (b"%x\r\n%b\r\n" % (len(first), first) if chunked else first[:length]), head_only)
            sent = len(first)
            async for chunk in chunks:
                if not chunk:
                    continue
                if conn.head_done:
                    conn.request_unfinished = True  # the rest is not sent: the upstream still expects it
                    return
                if chunked:
                    await conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                elif sent < length:  # type: ignore[operator]
                    await conn.write(chunk[: length - sent])  # type: ignore[operator]
                sent += len(chunk)
            if chunked:
                await conn.write(b"0\r\n\r\n")
        if not chunked and sent != length:
            conn.request_unfinished = True
            if not conn.head_done:
                raise UpstreamUnavailable(f"the request body for upstream {self.name!r} had {sent} bytes, "
                                          f"not the {length} declared")

    # -- the pool

    async def _acquire(self) -> Http1Connection:
        deadline = 0.0
        while True:
            idle = self._idle
            while idle:
                conn = idle.pop()
                if not conn.closed:  # else the upstream closed it while idle: nothing was sent on it
                    return conn
            if self._open < self._limit:
                return await self._connect()
            loop = asyncio.get_running_loop()
            if not deadline:
                deadline = loop.time() + self._timeout
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            except BaseException as exc:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # woken, but leaving: the place goes to the next in line
                else:
                    try:
                        self._waiters.remove(waiter)
                    except ValueError:
                        pass
                if isinstance(exc, TimeoutError):
                    raise UpstreamTimeout(
                        f"no connection to upstream {self.name!r} came free within {self._timeout:g} s "
                        f"(pool_size {self._limit})"
                    ) from None
                raise

    async def _connect(self) -> Http1Connection:
        self._open += 1
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(
                    self._protocol, self._host, self._port, ssl=self._ssl,
                    server_hostname=self._host if self._ssl is not None else None,
                )
        except BaseException as exc:
            self._open -= 1
            if self._waiters:
                self._wake_one()
            if isinstance(exc, TimeoutError):
                raise UpstreamTimeout(
                    f"cannot connect to upstream {self.name!r} within {self._connect_timeout:g} s"
                ) from None
            if isinstance(exc, OSError):
                raise ConnectFailed(f"cannot connect to upstream {self.name!r}: {exc}") from exc
            raise
        if conn.closed:  # gone before it could be used: nothing was sent
            self._open -= 1
            raise ConnectFailed(f"upstream {self.name!r} closed the connection as soon as it was made")
        conn.on_lost = self._lost
        return conn

    def _protocol(self) -> Http1Connection:
        return Http1Connection(self.name, self._timeout)

    def _lost(self, conn: Http1Connection) -> None:
        self._open -= 1
        if not conn.active:
            try:
                self._idle.remove(conn)
            except ValueError:
                pass
        if self._waiters:
            self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
