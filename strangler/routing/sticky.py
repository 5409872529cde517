"""Canary stickiness: a request's key (from its path, a header, a cookie or the query) -> bucket 0..9999.

The bucket is a stable hash of capability and key, so the same key always lands on the same side, and
since canary sends buckets below `percent * 100` to new, raising the percentage only moves keys forward.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from urllib.parse import parse_qsl

BUCKETS = 10_000


def sticky_bucket(capability: str, key: str) -> int:
    digest = hashlib.blake2b(f"{capability}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def request_key(
    spec: str, params: Mapping[str, str], headers: Sequence[tuple[bytes, bytes]], query: bytes
) -> str | None:
    """The sticky key named by `spec` (`path:NAME`, `header:NAME`, `cookie:NAME`, `query:NAME`), or None."""
    source, _, name = spec.partition(":")
    if source == "path":
        return params.get(name) or None
    if source == "header":
        wanted = name.lower().encode()
        for key, value in headers:
            if key == wanted and value:
                return value.decode("latin-1")
        return None
    if source == "cookie":
        wanted = name.encode()
        for key, value in headers:
            if key == b"cookie":
                found = cookie_value(value, wanted)
                if found:
                    return found
        return None
    if source == "query":
        for key_text, value_text in parse_qsl(query.decode("latin-1"), keep_blank_values=False):
            if key_text == name:
                return value_text
        return None
    return None


def cookie_value(header: bytes, name: bytes) -> str | None:
    """The value of cookie `name` in a `Cookie` header, or None.

    Split on `;` as browsers send it (RFC 6265 5.4), not with `http.cookies`, which gives up on the
    whole header at the first cookie it finds malformed (a JSON value, a space, a bare name) and would
    silently lose the canary key of every request that carries such a neighbour.
    """
    for pair in header.split(b";"):
        key, sep, value = pair.partition(b"=")
        if sep and key.strip() == name:
            value = value.strip()
            if len(value) >= 2 and value[:1] == b'"' and value[-1:] == b'"':
                value = value[1:-1]
            if value:
                return value.decode("latin-1")
    return None
