"""Field-by-field comparison of two captured responses (a pure function: no I/O, no clock).

Status, the configured headers and the body are compared. Raw bytes are compared first; JSON bodies are
parsed only when they differ and then walked structurally, every difference reported as a JSON Pointer
with both values. When the primary body is canonical compact JSON, the bytes locate the one value that
can differ and only that is parsed and walked on the other side (`splice`); otherwise whole documents.
Options per capability: `ignore`, `unordered`, `numeric_tolerance`, timestamps equal within a tolerance,
case-insensitive strings. Non-JSON bodies are equal or different, with hashes.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from strangler.shadow.config import CompareConfig
from strangler.shadow.splice import Splice, splice

MISSING = "<missing>"


@dataclass(frozen=True, slots=True)
class CapturedResponse:
    """One side's outcome: status, compared headers (lower-case names), body (None: not captured)."""

    status: int
    headers: Mapping[str, str]
    body: bytes | None
    content_type: str = ""


@dataclass(frozen=True, slots=True)
class FieldDifference:
    path: str  # "/a/0/b" (JSON Pointer), "status", "header:<name>" or "body"
    primary: Any
    other: Any


@dataclass(slots=True)
class _Node:
    children: dict[str, _Node] = field(default_factory=dict)
    ignore: bool = False
    unordered: bool = False
    casefold: bool = False
    timestamp: float | None = None


def pointer(parts: tuple[str, ...] | list[str]) -> str:
    return "".join(["/" + _token(p) for p in parts])


def split_pointer(pattern: str) -> list[str]:
    if pattern == "":
        return []
    return [p.replace("~1", "/").replace("~0", "~") for p in pattern[1:].split("/")]


class PointerPatterns:
    """JSON Pointer patterns (`*` matches one segment) compiled into a trie of per-path options."""

    def __init__(self, config: CompareConfig) -> None:
        self.root = _Node()
        for pattern in config.ignore:
            self._node(pattern).ignore = True
        for pattern in config.unordered:
            self._node(pattern).unordered = True
        for pattern in config.case_insensitive:
            self._node(pattern).casefold = True
        for pattern, tolerance in config.timestamps.items():
            self._node(pattern).timestamp = tolerance
        self.empty = not (config.ignore or config.unordered or config.case_insensitive or config.timestamps)

    def _node(self, pattern: str) -> _Node:
        node = self.root
        for part in split_pointer(pattern):
            node = node.children.setdefault(part, _Node())
        return node

    @staticmethod
    def advance(nodes: tuple[_Node, ...], key: str) -> tuple[_Node, ...]:
        if not nodes:
            return nodes
        out = []
        for node in nodes:
            child = node.children.get(key)
            if child is not None:
                out.append(child)
            star = node.children.get("*")
            if star is not None:
                out.append(star)
        return tuple(out)


class PointerSet:
    """`covers(path)`: is `path` at or beneath one of the patterns (`*` = one segment)?"""

    def __init__(self, patterns: list[str]) -> None:
        self.patterns = [split_pointer(p) for p in patterns]

    def covers(self, path: str) -> bool:
        if not self.patterns or not (path == "" or path.startswith("/")):
            return False
        parts = split_pointer(path)
        return any(
            len(p) <= len(parts) and all(a == "*" or a == b for a, b in zip(p, parts, strict=False))
            for p in self.patterns
        )

    def matches_exactly(self, parts: list[str]) -> bool:
        return any(
            len(p) == len(parts) and all(a == "*" or a == b for a, b in zip(p, parts, strict=True))
            for p in self.patterns
        )


@functools.lru_cache(maxsize=256)
def is_json(content_type: str) -> bool:
    ct = content_type.split(";", 1)[0].strip().lower()
    return ct == "application/json" or ct.endswith("+json")


class Comparator:
    def __init__(self, config: CompareConfig) -> None:
        self.config = config
        self.patterns = PointerPatterns(config)
        self.tolerance = config.numeric_tolerance

    def compare(self, primary: CapturedResponse, other: CapturedResponse) -> list[FieldDifference]:
        out: list[FieldDifference] = []
        if primary.status != other.status:
            out.append(FieldDifference("status", primary.status, other.status))
        for name in self.config.headers:
            a, b = primary.headers.get(name), other.headers.get(name)
            if a != b:
                out.append(FieldDifference(f"header:{name}", a, b))
        if primary.body is None or other.body is None or primary.body == other.body:
            return out
        if is_json(primary.content_type) or is_json(other.content_type):
            try:
                a_doc = orjson.loads(primary.body)
                spliced = splice(primary.body, a_doc, other.body, self._stop)
                if spliced is not None:
                    found = self._spliced(spliced)
                else:
                    found = self._documents(a_doc, orjson.loads(other.body))
            except orjson.JSONDecodeError:
                pass
            else:
                out += found
                return out
        out.append(FieldDifference("body", _digest(primary.body), _digest(other.body)))
        return out

    def _spliced(self, spliced: Splice) -> list[FieldDifference]:
        """The differences of two documents that are byte-identical around one value (`splice`)."""
        nodes = self._nodes_at(spliced.parts)
        if nodes is None:
            return []
        path = pointer([str(part) for part in spliced.parts])
        return self._documents(spliced.primary, spliced.other, path, nodes)

    def _nodes_at(self, parts: tuple[str | int, ...]) -> tuple[_Node, ...] | None:
        """The pattern nodes that apply at `parts`; None if it is at or beneath an ignored pattern."""
        if self.patterns.empty:
            return ()
        nodes: tuple[_Node, ...] = (self.patterns.root,)
        for part in parts:
            if any(n.ignore for n in nodes):
                return None
            nodes = _advance(nodes, str(part))
        return None if any(n.ignore for n in nodes) else nodes

    def _stop(self, parts: tuple[str | int, ...]) -> bool:
        """Whether a splice must not descend below `parts`: an ignored or unordered pattern applies there."""
        if self.patterns.empty:
            return False
        nodes = self._nodes_at(parts)
        return nodes is None or any(n.unordered for n in nodes)

    def _documents(self, a: Any, b: Any, path: str = "", nodes: tuple[_Node, ...] | None = None
                   ) -> list[FieldDifference]:
        """The differences of two parsed documents.

        Subtrees that Python finds equal (`==`, in C) are skipped, and confirmed all at once afterwards:
        Python's `==` takes true for 1, JSON does not. The skipped subtrees' serialisations are compared
        (as they are, then with sorted keys); should they differ (a bool met a number, or 1 met 1.0), the
        documents are walked again confirming each subtree on its own.
        """
        if nodes is None:
            nodes = () if self.patterns.empty else (self.patterns.root,)
        found: list[FieldDifference] = []
        skipped: list[Any] = []  # pairs of equal-looking subtrees, flattened: a0, b0, a1, b1, ...
        self._walk(a, b, path, nodes, found, skipped)
        if skipped:
            left, right = skipped[0::2], skipped[1::2]
            if orjson.dumps(left) != orjson.dumps(right) and _canonical(left) != _canonical(right):
                found = []
                self._walk(a, b, path, nodes, found, None)
        return found

    def _walk(self, a: Any, b: Any, path: str, nodes: tuple[_Node, ...], out: list[FieldDifference],
              skipped: list[Any] | None) -> None:
        """Walk two parsed documents; equal scalars and equal-looking subtrees are skipped without a call.

        With `skipped` a list, skipped subtrees are appended to it for one confirmation at the end; with
        None, each is confirmed on the spot.
        """
        for node in nodes:
            if node.ignore:
                return
        ta, tb = type(a), type(b)
        if ta is dict and tb is dict:
            for key, va in a.items():
                if key in b:
                    vb = b[key]
                    tva = type(va)
                    if tva is type(vb) and va == vb:
                        if tva in _SCALARS:
                            continue
                        if skipped is not None:
                            skipped += (va, vb)
                            continue
                        if _canonical(va) == _canonical(vb):
                            continue
                    self._walk(va, vb, path + "/" + _token(key), _advance(nodes, key) if nodes else nodes, out,
                               skipped)
                elif not (nodes and _ignored(nodes, key)):
                    out.append(FieldDifference(path + "/" + _token(key), va, MISSING))
            for key, vb in b.items():
                if key not in a and not (nodes and _ignored(nodes, key)):
                    out.append(FieldDifference(path + "/" + _token(key), MISSING, vb))
            return
        if ta is list and tb is list:
            if nodes and any(n.unordered for n in nodes):
                if sorted(map(_canonical, a)) != sorted(map(_canonical, b)):
                    out.append(FieldDifference(path, a, b))
                return
            for i in range(min(len(a), len(b))):
                va, vb = a[i], b[i]
                tva = type(va)
                if tva is type(vb) and va == vb:
                    if tva in _SCALARS:
                        continue
                    if skipped is not None:
                        skipped += (va, vb)
                        continue
                    if _canonical(va) == _canonical(vb):
                        continue
                key = str(i)
                self._walk(va, vb, path + "/" + key, _advance(nodes, key) if nodes else nodes, out, skipped)
            for i in range(len(b), len(a)):
                if not (nodes and _ignored(nodes, str(i))):
                    out.append(FieldDifference(f"{path}/{i}", a[i], MISSING))
            for i in range(len(a), len(b)):
                if not (nodes and _ignored(nodes, str(i))):
                    out.append(FieldDifference(f"{path}/{i}", MISSING, b[i]))
            return
        if ta is tb and a == b:
            return
        if self._scalars_equal(a, b, nodes):
            return
        out.append(FieldDifference(path, a, b))

    def _scalars_equal(self, a: Any, b: Any, nodes: tuple[_Node, ...]) -> bool:
        ta, tb = type(a), type(b)
        if ta in (int, float) and tb in (int, float):  # bool is its own type here: true != 1
            return bool(abs(a - b) <= self.tolerance)
        if ta is str and tb is str and nodes:
            for node in nodes:
                if node.casefold and a.casefold() == b.casefold():
                    return True
                if node.timestamp is not None:
                    ta_, tb_ = _parse_time(a), _parse_time(b)
                    if ta_ is not None and tb_ is not None and abs((ta_ - tb_).total_seconds()) <= node.timestamp:
                        return True
        return False


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _token(key: str) -> str:
    if "~" in key or "/" in key:
        return key.replace("~", "~0").replace("/", "~1")
    return key


def _advance(nodes: tuple[_Node, ...], key: str) -> tuple[_Node, ...]:
    return PointerPatterns.advance(nodes, key)


def _ignored(nodes: tuple[_Node, ...], key: str) -> bool:
    return any(n.ignore for n in PointerPatterns.advance(nodes, key))


def _canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _digest(body: bytes) -> str:
    return f"sha256:{hashlib.sha256(body).hexdigest()} ({len(body)} bytes)"


def _parse_time(value: str) -> dt.datetime | None:
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


def compare_responses(
    primary: CapturedResponse, other: CapturedResponse, config: CompareConfig
) -> list[FieldDifference]:
    """Convenience wrapper; hot paths keep one `Comparator` per capability."""
    return Comparator(config).compare(primary, other)
