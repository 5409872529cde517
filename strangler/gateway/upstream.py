"""The upstream port: how the proxy sends a request to an upstream. Its adapter is `client.py`'s
`Http1UpstreamClient`; the tests give the proxy fakes of it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(slots=True)
class UpstreamRequest:
    """`headers` are the ones to forward; the client adds `Host` (unless given) and frames the body itself:
    a streamed body goes chunked when `chunked` is set or no `content-length` is among `headers`."""

    method: str
    target: str  # normalised path plus "?query" when there is one, percent-encoded as forwarded
    headers: Sequence[tuple[str, str]]
    body: AsyncIterator[bytes] | bytes | None
    chunked: bool = False


class UpstreamResponse(Protocol):
    status: int
    headers: Sequence[tuple[bytes, bytes]]

    def body(self) -> AsyncIterator[bytes]:
        """The body as it arrives; raises `UpstreamUnavailable` or `UpstreamTimeout` if it breaks off."""
        ...

    async def close(self) -> None: ...


class UpstreamClient(Protocol):
    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        """Send `request` and return once the response status and headers arrived.

        The caller must `close()` the response after reading its body. Raises `ConnectFailed` when no
        byte was sent, `UpstreamUnavailable` when the connection broke or the response was invalid,
        `UpstreamTimeout` when no answer came in time. Never retries by itself. What the request body's
        iterator raises (the client went away, the body is too large) comes out unchanged. Cancelling the
        call abandons the exchange: its connection is not used again.
        """
        ...

    async def aclose(self) -> None: ...
