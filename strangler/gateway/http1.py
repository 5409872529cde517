"""One HTTP/1.1 connection to an upstream: an asyncio protocol that writes a request and parses the answer
with httptools as its bytes arrive, one exchange at a time.

Flow control both ways: the answer's body is buffered up to `HIGH_WATER` bytes, then the socket is not
read until the consumer takes them; a request body waits while the transport's write buffer is full. The
read timeout costs one timer per connection, not per wait: a wait only moves the deadline, and the timer,
when it fires early, sets itself again for the deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httptools

from strangler.gateway.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable

HIGH_WATER = 256 * 1024  # buffered body bytes before the socket stops being read
_BODYLESS_STATUS = (204, 304)


def _ignore(_: Http1Connection) -> None:
    return None


class Http1Connection(asyncio.Protocol):
    """A keep-alive connection; `start` begins an exchange, the waits below follow it to its end.

    Every failure ends up in `error` (the first one wins) and wakes whoever waits; the connection is not
    used again after one (`reusable`). Bytes that arrive between exchanges (a server's parting 408, say)
    close it.
    """

    def __init__(self, name: str, timeout: float) -> None:
        self.name = name
        self.timeout = timeout
        self.on_lost: Callable[[Http1Connection], None] = _ignore  # set by the pool once it counts this one
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set by connection_made
        self.closed = False
        self.active = False  # between `start` and the pool taking the connection back
        self._parser = httptools.HttpResponseParser(self)
        self._stale_parser = False  # after a HEAD answer the parser still expects a body: use a new one
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._write_paused = False
        self._read_paused = False
        self.head_only = False
        self.request_unfinished = False  # a request body was cut short: the upstream still expects bytes
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.head_done = False
        self.complete = False
        self.keep_alive = False
        self.error: UpstreamError | None = None

    # -- the exchange

    def start(self, data: bytes, head_only: bool) -> None:
        """Begin an exchange: forget the previous answer and write the request (or its head)."""
        if self._stale_parser:
            self._parser = httptools.HttpResponseParser(self)
            self._stale_parser = False
        self.head_only = head_only
        self.request_unfinished = False
        self.status = 0
        self.headers = []
        self.chunks = []
        self.buffered = 0
        self.head_done = self.complete = self.keep_alive = False
        self.error = None
        self.active = True
        self.transport.write(data)

    async def write(self, data: bytes) -> None:
        """Write part of the request body; wait while the write buffer is full (not once an answer is here)."""
        if self.closed:
            if self.head_done:
                return  # an early answer, then the upstream closed: the caller stops sending
            raise self.error or self._broken("before it read the whole request")
        self.transport.write(data)
        while self._write_paused and not self.closed and not self.head_done:
            await self._wait()

    async def response_head(self) -> None:
        """Wait for the answer's status line and headers (or raise the exchange's error)."""
        while not self.head_done:
            if self.error is not None:
                raise self.error
            await self._wait()

    async def more_body(self) -> None:
        """Wait for body bytes, the end of the answer, or an error."""
        if not self.chunks and not self.complete and self.error is None:
            await self._wait()

    def take(self) -> bytes:
        """The body bytes received so far, in one piece; reading resumes if it was paused."""
        chunks = self.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.chunks = []
        self.buffered = 0
        if self._read_paused and not self.closed:
            self._read_paused = False
            self.transport.resume_reading()
        return data

    @property
    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed and not self.request_unfinished

    def abort(self) -> None:
        """Drop the connection at once (unsent bytes too); the pool hears of it through `on_lost`."""
        if not self.closed:
            self.closed = True
            self.transport.abort()

    async def _wait(self) -> None:
        loop = self.loop
        self._deadline = loop.time() + self.timeout
        if self._timer is None:
            self._timer = loop.call_at(self._deadline, self._check_deadline)
        self._waiter = waiter = loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def _check_deadline(self) -> None:
        self._timer = None
        if self._waiter is None or self.closed:
            return  # nobody waits for the upstream now; the next wait sets the timer again
        if self.loop.time() < self._deadline:
            self._timer = self.loop.call_at(self._deadline, self._check_deadline)
            return
        if self._write_paused and not self.head_done:
            self._fail(UpstreamTimeout(
                f"upstream {self.name!r} took none of the request body for {self.timeout:g} s"))
        elif not self.head_done:
            self._fail(UpstreamTimeout(f"upstream {self.name!r} did not answer within {self.timeout:g} s"))
        else:
            self._fail(UpstreamTimeout(f"upstream {self.name!r} sent nothing more for {self.timeout:g} s"))
        self.abort()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    def _broken(self, when: str) -> UpstreamUnavailable:
        return UpstreamUnavailable(f"upstream {self.name!r} closed the connection {when}")

    def _ends_with_close(self) -> bool:
        """Whether the answer's body is delimited by the end of the connection (no length, not chunked)."""
        if self.head_only or self.status in _BODYLESS_STATUS:
            return False
        for name, value in self.headers:
            lower = name.lower()
            if lower == b"content-length" or (lower == b"transfer-encoding" and b"chunked" in value.lower()):
                return False
        return True

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.active or self.complete:  # nothing was asked: the connection is out of step
            self.abort()
            return
        if self._waiter is not None:
            self._deadline = self.loop.time() + self.timeout
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamUnavailable(f"upstream {self.name!r} switched protocols, which is not proxied"))
            self.abort()
        except httptools.HttpParserError as exc:
            self._fail(UpstreamUnavailable(f"upstream {self.name!r} sent an invalid response: {exc}"))
            self.abort()

    def eof_received(self) -> bool | None:
        return None  # close; `connection_lost` decides whether that ended the answer or broke it

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.active and not self.complete:
            if not self.head_done:
                self._fail(self._broken(f"before it answered{f' ({exc})' if exc else ''}"))
            elif self._ends_with_close():
                self.complete = True  # a body without a length ends with the connection
            else:
                self._fail(self._broken(f"in the middle of its answer{f' ({exc})' if exc else ''}"))
        self._wake()
        self.on_lost(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake()

    # -- httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:  # an interim answer (100 Continue, 103 Early Hints): the final one follows
            self.headers = []
            return
        self.status = status
        self.keep_alive = self._parser.should_keep_alive()  # asked now: the parser forgets once the answer ends
        self.head_done = True
        if self.head_only:  # httptools cannot be told that a HEAD answer has no body: it ends here
            self.complete = True
            self._stale_parser = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.head_only:
            return
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self._read_paused:
            self._read_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.head_done and not self.complete:
            self.complete = True
            self._wake()
