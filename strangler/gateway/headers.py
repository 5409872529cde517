"""Header handling for one hop: hop-by-hop removal (RFC 9110 7.6.1), forwarding headers, correlation id.

Header lists are ASGI's: `[(lowercase name bytes, value bytes), ...]`.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import re
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"proxy-connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
FORWARDING = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded", b"x-real-ip"})
CORRELATION = b"x-correlation-id"
# Headers a client may not nominate in `Connection`: doing so would let it strip what the proxy adds.
PROTECTED = FORWARDING | {b"host", CORRELATION, b"content-length"}
_CORRELATION_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")  # fullmatch: `$` would accept a final b"\n"


class HeaderRejected(ValueError):
    """A request header set that must not be forwarded; the message names the header."""


def connection_nominated(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    """Names listed in every `Connection` header (lower-cased)."""
    names: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            for token in value.split(b","):
                token = token.strip().lower()
                if token:
                    names.add(token)
    return names


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @classmethod
    def parse(cls, items: Sequence[str]) -> TrustedProxies:
        return cls(tuple(ipaddress.ip_network(item, strict=False) for item in items))

    def trusts(self, peer: str | None) -> bool:
        if not self.networks or not peer:
            return False
        try:
            addr = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(addr in net for net in self.networks)


@dataclass(slots=True)
class PreparedRequestHeaders:
    upstream: list[tuple[str, str]]
    host: bytes
    correlation_id: str
    content_length: int | None
    chunked: bool


def prepare_request_headers(
    headers: Sequence[tuple[bytes, bytes]],
    *,
    peer: str | None,
    scheme: str,
    trusted: bool,
    preserve_host: bool,
    new_id: Callable[[], str] | None = None,
) -> PreparedRequestHeaders:
    """Headers to send upstream, or HeaderRejected.

    Strips hop-by-hop and `Connection`-nominated headers, replaces forwarding headers (kept and appended
    only when the peer is a trusted proxy), keeps or generates the correlation id. Rejects what could
    make the upstream read a different request than the gateway did: a repeated `Host`, a repeated or
    invalid `Content-Length`, or `Content-Length` together with `Transfer-Encoding` (RFC 9112 6.3).
    """
    nominated = connection_nominated(headers)
    forbidden = nominated & PROTECTED
    if forbidden:
        raise HeaderRejected(f"Connection may not name {b', '.join(sorted(forbidden)).decode('latin-1')}")
    out: list[tuple[str, str]] = []
    host: bytes | None = None
    correlation = b""
    prior_for: list[str] = []
    prior_proto = ""
    prior_host = ""
    prior_forwarded: list[str] = []
    content_length: int | None = None
    chunked = False
    for name, value in headers:
        if name in HOP_BY_HOP or name in nominated:
            if name == b"transfer-encoding":
                chunked = True
            continue
        if name in FORWARDING:
            if trusted:
                if name == b"x-forwarded-for":
                    prior_for.append(_text(name, value))
                elif name == b"x-forwarded-proto":
                    prior_proto = _text(name, value)
                elif name == b"x-forwarded-host":
                    prior_host = _text(name, value)
                elif name == b"forwarded":
                    prior_forwarded.append(_text(name, value))
            continue
        if name == b"host":
            if host is not None:
                raise HeaderRejected("repeated Host")
            host = value
            if not preserve_host:
                continue
        elif name == CORRELATION:
            if not correlation and _CORRELATION_ID.fullmatch(value):
                correlation = value
            continue
        elif name == b"content-length":
            if content_length is not None or not value.isdigit():
                raise HeaderRejected("invalid or repeated Content-Length")
            content_length = int(value)
        elif name == b"expect":
            continue  # the proxy answers 100-continue itself; the upstream gets the body as it comes
        out.append((_text(name, name), _text(name, value)))
    if chunked and content_length is not None:
        raise HeaderRejected("Content-Length together with Transfer-Encoding")
    correlation_id = correlation.decode("ascii") if correlation else (new_id or new_correlation_id)()
    client = peer or "unknown"
    out.append(("x-forwarded-for", ", ".join([*prior_for, client])))
    out.append(("x-forwarded-proto", prior_proto or scheme))
    if prior_host or host:
        out.append(("x-forwarded-host", prior_host or _text(b"host", host or b"")))
    for text in prior_forwarded:
        out.append(("forwarded", text))
    out.append(("x-correlation-id", correlation_id))
    return PreparedRequestHeaders(out, host or b"", correlation_id, content_length, chunked)


def new_correlation_id() -> str:
    """A random (version 4) UUID in its text form; formatted from os.urandom, a third of uuid4()'s cost."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:32]}"


class CorrelationIds:
    """New correlation ids in the text form of a random (version 4) UUID, each unique: 74 random bits drawn
    once (and again in a forked child), then a 48-bit counter. A correlation id must be unique, not
    unpredictable (clients send their own), and a random draw per request is a system call."""

    __slots__ = ("_prefix", "_count", "__weakref__")

    def __init__(self) -> None:
        self._prefix = ""
        self._count = itertools.count()
        self._draw()
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _redraw(ref))

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._count):012x}"

    def _draw(self) -> None:
        self._prefix = new_correlation_id()[:24]  # "xxxxxxxx-xxxx-4xxx-yxxx-": the counter fills the last group
        self._count = itertools.count()


def _redraw(ref: weakref.ref[CorrelationIds]) -> None:
    ids = ref()
    if ids is not None:
        ids._draw()  # a forked child must not repeat its parent's ids


def client_correlation_id(headers: Sequence[tuple[bytes, bytes]]) -> str:
    """The client's well-formed correlation id, or a new one (for answers the gateway gives itself)."""
    for name, value in headers:
        if name == CORRELATION and _CORRELATION_ID.fullmatch(value):
            return value.decode("ascii")
    return new_correlation_id()


def _text(name: bytes, value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise HeaderRejected(f"header {name.decode('latin-1')!r} has a value that is not UTF-8") from None


def filter_response_headers(raw: Sequence[tuple[bytes, bytes]], correlation_id: bytes) -> list[tuple[bytes, bytes]]:
    """Response headers for the client: hop-by-hop and nominated ones removed, correlation id set."""
    out = []
    nominated: set[bytes] | None = None
    for name, value in raw:
        lower = name.lower()
        if lower in HOP_BY_HOP or lower == CORRELATION:
            if lower == b"connection":
                tokens = {t.strip().lower() for t in value.split(b",")} - HOP_BY_HOP - {b"", b"close"}
                nominated = tokens if nominated is None else nominated | tokens
            continue
        out.append((lower, value))
    if nominated:  # usually none: `Connection: keep-alive` or `close` names only what goes anyway
        out = [(name, value) for name, value in out if name not in nominated]
    out.append((CORRELATION, correlation_id))
    return out
