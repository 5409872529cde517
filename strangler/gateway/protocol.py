"""uvicorn's httptools protocol with the request head bounded, in size and in time, while it arrives.

Neither llhttp nor uvicorn limits a request head: a client could send a target or headers without end
and the worker would buffer all of it before the proxy's own check (431) ever runs, or trickle a head a
byte at a time and hold the connection for ever (uvicorn times out only idle keep-alive connections).
This protocol answers as soon as a head that is not complete yet is over a limit: 431 for the header
fields (`max_head_bytes`), 414 for a target over 1 MiB, 408 when it has taken `head_timeout` seconds.

A complete head is left to the proxy's check, which counts the fields the same way (a field line with one
space after the colon counts as much there), so the answer does not depend on how the head was split.

What the parser (llhttp) refuses is answered 400 the same way (a problem, then the connection closed once
the client could read it), and only after the requests before it on the connection are answered: uvicorn
itself would answer at once and close, so a pipelined request that the upstream had already carried out
would lose its response.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from strangler.gateway.problems import TITLES, problem_body, problem_headers

# the bytes of a head that are neither target nor field lines: method, version, spaces and line ends
_REQUEST_LINE_AND_END = 64
# more than one read can hold, so that a target is refused (or not) whatever the segmentation
MAX_TARGET_BYTES = 1024 * 1024
_INVALID = "the request is not valid HTTP/1.1 (or is framed ambiguously)"
# how long a refused connection stays half-open, so that a client still sending can read the answer
LINGER_SECONDS = 1.0


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """Set the limits on a subclass (see `bounded_httptools_protocol`)."""

    max_head_bytes = 32 * 1024
    head_timeout = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.holding: HeadHeldBack | None = None  # the response whose head waits to leave with its body
        self._reading_head = True
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._refusing = False  # the parser refused the bytes after the requests being answered

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_timer()  # a connection that never sends a byte is timed out too

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refusing:
            return  # nothing after refused bytes is read
        if self._reading_head:
            self._head_bytes += len(data)
        super().data_received(data)  # the parser's callbacks below may end this head and begin another
        if not self._reading_head or self.transport.is_closing():
            return
        # every byte counted belongs to the unfinished head; the target so far is in `self.url`
        target = len(getattr(self, "url", b""))
        if target > MAX_TARGET_BYTES:
            self._refuse(414, f"request target exceeds {MAX_TARGET_BYTES} bytes")
        elif self._head_bytes - target > self.max_head_bytes + _REQUEST_LINE_AND_END:
            self._refuse(431, f"request headers exceed {self.max_head_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:  # after a keep-alive pause: uvicorn's own timer covered the idle time
            self._start_head_timer()

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._cancel_head_timer()
        previous = self.cycle
        super().on_headers_complete()
        if self.cycle is not None and self.cycle is not previous:
            self.cycle.transport = HeadHeldBack(self.transport, self)  # type: ignore[assignment]

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_head = True
        self._head_bytes = 0

    def send_400_response(self, msg: str) -> None:
        """The parser refused the bytes at hand (uvicorn calls this); answer once earlier requests are."""
        self._refusing = True
        self._cancel_head_timer()
        cycle = self.cycle  # the request parsed last
        if cycle is not None and not cycle.response_complete:
            if cycle.more_body:  # the refused bytes are its body: it goes nowhere
                cycle.disconnected = True
                cycle.message_event.set()
                queued = [entry for entry in self.pipeline if entry[0] is cycle]
                if not queued:  # it is the request being answered: nothing comes before the refusal
                    self._refuse(400, _INVALID)
                    return
                self.pipeline.remove(queued[0])
            self.transport.pause_reading()  # the requests before it are answered first
            return
        self._refuse(400, _INVALID)

    def on_response_complete(self) -> None:
        if self.holding is not None:
            self.holding.flush()  # before anything else is written on the connection
        idle = not self.pipeline  # else the next pipelined request starts now
        super().on_response_complete()
        if self._refusing and idle and not self.transport.is_closing():
            self._refuse(400, _INVALID)

    def _start_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._reading_head or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self._start_head_timer()  # a pipelined head waits for the response before it; answer that first
            return
        self._refuse(408, f"the request head did not arrive within {self.head_timeout:g} seconds")

    def _refuse(self, status: int, detail: str) -> None:
        self._cancel_head_timer()
        if self.holding is not None:
            self.holding.flush()
        body = problem_body(status, detail)
        head = b"".join(name + b": " + value + b"\r\n" for name, value in problem_headers(body, None))
        status_line = f"HTTP/1.1 {status} {TITLES[status]}\r\n".encode()
        self.transport.write(status_line + head + b"connection: close\r\n\r\n" + body)
        # Closing now, with the client's bytes unread, would reset the connection and could destroy the
        # answer before the client reads it; stop reading instead, and close a little later.
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.transport.pause_reading()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)


class HeadHeldBack:
    """A response's transport that holds its first write (the status line and headers) back until the
    next one (the body's first bytes) or the end of this turn of the event loop: a small response then
    leaves in one send instead of two, and a send on loopback costs more than all of the proxy's own
    logic for a request. Anything else flushes what is held first, so the order on the wire is kept."""

    __slots__ = ("_transport", "_protocol", "_held", "_first")

    def __init__(self, transport: asyncio.Transport, protocol: BoundedHttpToolsProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._held: bytes | None = None
        self._first = True

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._protocol.holding = None
            self._transport.writelines((held, data))
        elif self._first:
            self._first = False
            self._held = data
            self._protocol.holding = self
            self._protocol.loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if self._protocol.holding is self:
                self._protocol.holding = None
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def bounded_httptools_protocol(max_head_bytes: int, head_timeout: float) -> type[BoundedHttpToolsProtocol]:
    """A protocol class for `uvicorn.Config(http=...)` with these limits on every request head."""
    limits = {"max_head_bytes": max_head_bytes, "head_timeout": head_timeout}
    return type("BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,), limits)


def abort_response(send: Any) -> bool:
    """Close the client's connection under a response that cannot be finished; False if `send` is not
    uvicorn's httptools cycle (another ASGI server closes the connection itself when the app returns).

    uvicorn logs an error for a response an application leaves unfinished, unless the client is gone:
    the cycle is marked so, since it is, the moment its connection closes.
    """
    cycle = getattr(send, "__self__", None)
    if not isinstance(cycle, RequestResponseCycle):
        return False
    cycle.disconnected = True
    cycle.transport.close()  # what was sent still goes out first; the client sees the message cut short
    return True
