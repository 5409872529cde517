"""uvicorn's httptools protocol with the request head bounded while it arrives.

Neither llhttp nor uvicorn limits the size of a request head: a client could send a target or headers
without end and the worker would buffer all of it before the proxy's own check (431) ever runs. This
protocol counts the bytes of a head that is not complete yet and answers as soon as they are over a
limit: 431 for the header fields (`max_head_bytes`), 414 for a target over 1 MiB. A complete head is left
to the proxy's check, which counts the fields the same way (a field line with one space after the colon
counts as much there), so the answer does not depend on how the head was split into reads.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from strangler.gateway.problems import TITLES, problem_body, problem_headers

# the bytes of a head that are neither target nor field lines: method, version, spaces and line ends
_REQUEST_LINE_AND_END = 64
# more than one read can hold, so that a target is refused (or not) whatever the segmentation
MAX_TARGET_BYTES = 1024 * 1024
# how long a refused connection stays half-open, so that a client still sending can read the answer
LINGER_SECONDS = 1.0


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """Set `max_head_bytes` on a subclass (see `bounded_httptools_protocol`)."""

    max_head_bytes = 32 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading_head = True
        self._head_bytes = 0

    def data_received(self, data: bytes) -> None:
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

    def on_headers_complete(self) -> None:
        self._reading_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_head = True
        self._head_bytes = 0

    def _refuse(self, status: int, detail: str) -> None:
        body = problem_body(status, detail)
        head = b"".join(name + b": " + value + b"\r\n" for name, value in problem_headers(body, None))
        status_line = f"HTTP/1.1 {status} {TITLES[status]}\r\n".encode()
        self.transport.write(status_line + head + b"connection: close\r\n\r\n" + body)
        # Closing now, with the client's bytes unread, would reset the connection and could destroy the
        # answer before the client reads it; stop reading instead, and close a little later.
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.transport.pause_reading()
        asyncio.get_running_loop().call_later(LINGER_SECONDS, self.transport.close)


def bounded_httptools_protocol(max_head_bytes: int) -> type[BoundedHttpToolsProtocol]:
    """A protocol class for `uvicorn.Config(http=...)` that refuses request heads over `max_head_bytes`."""
    return type("BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,), {"max_head_bytes": max_head_bytes})
