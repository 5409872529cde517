"""Normalise a request path once, so that the path routing matches is the path that is forwarded.

Percent-decodes unreserved characters, upper-cases the remaining escapes, merges `//`, removes dot
segments (RFC 3986 5.2.4). Rejects what cannot be normalised safely: encoded `/` or `\\`, a raw `\\`,
NUL (raw or encoded), control characters, invalid escapes, and anything that is not an origin-form path.
"""

from __future__ import annotations

import re

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset(b"0123456789ABCDEFabcdef")
_ALLOWED_RAW = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/%")
_SIMPLE = re.compile(rb"(?:/[A-Za-z0-9\-_~!$&'()*+,;=:@]+(?:\.[A-Za-z0-9\-_~!$&'()*+,;=:@]+)*)*/?")


class PathRejected(ValueError):
    """The path cannot be normalised safely; the message says why (sent to the client with a 400)."""


def normalize_path(raw: bytes) -> str:
    """Return the normalised path for `raw` (the request target without its query), or raise PathRejected."""
    # Fast path: the common path (no escapes, no dot segments, no empty segments) is already normal.
    # fullmatch, not match: `$` would also match before a final b"\n" and let it through.
    if raw and _SIMPLE.fullmatch(raw):
        return raw.decode("ascii")
    if not raw.startswith(b"/"):
        raise PathRejected("the request target must be an absolute path")
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c == 0x25:  # '%'
            if i + 2 >= n:
                raise PathRejected("invalid percent escape")
            h1, h2 = raw[i + 1], raw[i + 2]
            if h1 not in _HEX or h2 not in _HEX:
                raise PathRejected("invalid percent escape")
            value = int(raw[i + 1 : i + 3], 16)
            if value in (0x2F, 0x5C):
                raise PathRejected("encoded '/' or '\\' in path")
            if value < 0x20 or value == 0x7F:
                raise PathRejected("encoded control character in path")
            if value in _UNRESERVED:
                out.append(value)
            else:
                out += b"%" + raw[i + 1 : i + 3].upper()
            i += 3
            continue
        if c == 0x5C:
            raise PathRejected("'\\' in path")
        if c not in _ALLOWED_RAW:
            raise PathRejected(f"character 0x{c:02X} not allowed in path")
        out.append(c)
        i += 1
    return _remove_dot_segments(out.decode("ascii"))


def _remove_dot_segments(path: str) -> str:
    segments = path.split("/")[1:]
    result: list[str] = []
    for seg in segments:
        if seg == "..":
            if result:
                result.pop()
        elif seg in (".", ""):
            continue
        else:
            result.append(seg)
    trailing = segments[-1] in ("", ".", "..") if segments else False
    normal = "/" + "/".join(result)
    if trailing and result:
        normal += "/"
    return normal
