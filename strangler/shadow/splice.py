"""Localising a difference between two JSON bodies in their raw bytes, so that only the differing value is parsed.

When the primary body is exactly what `orjson.dumps` makes of its own parse (compact, no whitespace, keys in
document order: the output of many serializers), the byte span of every value in it is known from its
children's serialised lengths. The first byte where the bodies differ lies in a chain of nested values; the
deepest of them whose following bytes are the same in both bodies (at their own offsets) holds every
difference. The other body's bytes at that span are parsed alone: if they form one JSON value, the other
document *is* the primary one with that value replaced (everything around it is byte-identical, and the
primary's bytes around it are canonical, so the replacement cannot merge with them), and comparing the two
values compares the documents, bool and number told apart. Anything else (not canonical, bytes that do not parse
alone) answers None and the caller compares whole documents.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class Splice:
    """The only value where two documents can differ: its path (keys and indexes) and both sides' values."""

    parts: tuple[str | int, ...]
    primary: Any
    other: Any


def common_prefix(a: bytes, b: bytes) -> int:
    """The length of the longest common prefix of `a` and `b` (bisection on slices: memcmp in C)."""
    lo, hi = 0, min(len(a), len(b))
    if a[:hi] == b[:hi]:
        return hi
    while hi - lo > 1:  # a[:lo] == b[:lo] and a[:hi] != b[:hi]
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def splice(raw_a: bytes, doc_a: Any, raw_b: bytes, stop: Callable[[tuple[str | int, ...]], bool] | None = None
           ) -> Splice | None:
    """Where `raw_b` can differ from `raw_a` (whose parse is `doc_a`), or None if that cannot be told cheaply.

    `stop(parts)` may veto descending below a path (an ignored or unordered pattern there): the value at
    that path is then the deepest candidate. The caller has checked that the bodies differ.
    """
    # not canonical (indented, or spaced as Python's json writes: seen in the first key), then the proof;
    # a search of the whole body for '": ' would cost most of what the serialisation does
    if b"\n" in raw_a or b'": ' in raw_a[:64] or orjson.dumps(doc_a) != raw_a:
        return None  # spans cannot be derived from the parse
    na, nb = len(raw_a), len(raw_b)
    lo = common_prefix(raw_a, raw_b)  # the first byte where they differ
    # the values containing that byte, from the root down: (parts, value, start, end)
    candidates: list[tuple[tuple[str | int, ...], Any, int, int]] = [((), doc_a, 0, na)]
    parts: tuple[str | int, ...] = ()
    node, start = doc_a, 0
    while stop is None or not stop(parts):
        child = _child_containing(node, start, lo)
        if child is None:
            break
        key, node, start, end = child
        parts += (key,)
        candidates.append((parts, node, start, end))
    # the deepest whose surroundings are byte-identical on both sides and whose span parses on the other
    for parts, value, start, end in reversed(candidates):
        other_end = nb - (na - end)
        if other_end < start or raw_a[end:] != raw_b[other_end:]:
            continue  # the bodies also differ after this value
        try:
            other = orjson.loads(raw_b[start:other_end])
        except orjson.JSONDecodeError:
            continue  # e.g. an element inserted after this value: try its container
        return Splice(parts, value, other)
    return None


_KEY_LENGTHS: dict[str, int] = {}  # a key's serialised length plus its ":"; keys repeat from body to body


def _child_containing(node: Any, start: int, lo: int) -> tuple[str | int, Any, int, int] | None:
    """The child of the container `node` (serialised at `start`) whose span contains byte `lo`, if one does."""
    dumps = orjson.dumps
    pos = start + 1  # after "{" or "["
    if type(node) is dict:
        key_lengths = _KEY_LENGTHS
        for key, value in node.items():
            length = key_lengths.get(key)
            if length is None:
                if len(key_lengths) >= 4096:
                    key_lengths.clear()
                length = key_lengths[key] = len(dumps(key)) + 1
            begin = pos + length
            if begin > lo:
                return None  # the byte is in a key or a separator
            pos = begin + len(dumps(value))
            if lo < pos:
                return key, value, begin, pos
            pos += 1  # ","
        return None
    if type(node) is list:
        for index, value in enumerate(node):
            if pos > lo:
                return None
            begin = pos
            pos = begin + len(dumps(value))
            if lo < pos:
                return index, value, begin, pos
            pos += 1
    return None
