"""Request framing that uvicorn's parser accepts but a proxy must refuse (RFC 9112 2.3, 3.2, 6.1).

llhttp already refuses most ambiguous framing (Content-Length with Transfer-Encoding, repeated or signed
Content-Length, bad chunk sizes, obs-fold, bare LF). It lets through a few requests that the upstream could
read differently from the gateway; they are refused here, from the ASGI scope, before anything is forwarded.
"""

from __future__ import annotations

from collections.abc import Iterable

SUPPORTED_VERSIONS = frozenset({"1.0", "1.1"})


class FramingRejected(ValueError):
    """A request whose framing the gateway will not forward; `status` is the answer (400 or 505)."""

    def __init__(self, detail: str, status: int = 400) -> None:
        super().__init__(detail)
        self.status = status


def check_framing(http_version: str, headers: Iterable[tuple[bytes, bytes]]) -> None:
    """Raise FramingRejected unless the request is HTTP/1.0 or 1.1 with unambiguous Host and body framing.

    HTTP/1.1 needs exactly one Host. Transfer-Encoding must be a single `chunked` (the gateway forwards the
    body re-chunked, so any other coding would be silently lost) and is refused in HTTP/1.0, where it
    means faulty framing.
    """
    if http_version not in SUPPORTED_VERSIONS:
        raise FramingRejected(f"HTTP/{http_version} is not supported", status=505)
    hosts = 0
    codings: list[bytes] = []
    for name, value in headers:
        if name == b"host":
            hosts += 1
        elif name == b"transfer-encoding":
            codings.append(value)
    if hosts > 1 or (hosts == 0 and http_version == "1.1"):
        raise FramingRejected("an HTTP/1.1 request needs exactly one Host header")
    if codings:
        if http_version == "1.0":
            raise FramingRejected("Transfer-Encoding in an HTTP/1.0 request")
        if len(codings) > 1 or codings[0].strip(b" \t").lower() != b"chunked":
            raise FramingRejected("Transfer-Encoding other than a single 'chunked'")
