"""Canary stickiness: a request's key (from its path, a header, a cookie or the query) -> bucket 0..9999.

The bucket is a stable hash of capability and key, so the same key always lands on the same side, and
since canary sends buckets below `percent * 100` to new, raising the percentage only moves keys forward.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from http.cookies import CookieError, SimpleCookie
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
        for key, value in headers:
            if key == b"cookie":
                try:
                    jar = SimpleCookie(value.decode("latin-1"))
                except CookieError:
                    continue
                if name in jar and jar[name].value:
                    return jar[name].value
        return None
    if source == "query":
        for key_text, value_text in parse_qsl(query.decode("latin-1"), keep_blank_values=False):
            if key_text == name:
                return value_text
        return None
    return None
