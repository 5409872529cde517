"""Route templates (`METHOD /path/{param}/{rest:path}`) compiled once into a segment trie.

Matching walks the trie: a literal segment beats a parameter, a parameter beats a `{rest:path}` tail.
Paths given to `RouteTable.match` must already be normalised (see `strangler.gateway.paths`); literal
segments of a template are normalised the same way, so that `%7e` in a template matches `~` in a path.
A path is the segments after its leading `/`: `/` is one empty segment, like the tail of `/a/`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "*"})
_PARAM = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)(?::(path))?\}$")
_LITERAL = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@%]+")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


class RouteTemplateError(ValueError):
    """A route template that cannot be parsed; the message says what was expected."""


@dataclass(frozen=True, slots=True)
class RouteTemplate:
    """One parsed template. `segments` holds literals, `{name}` params or a final `{name:path}`."""

    method: str
    pattern: str
    segments: tuple[str, ...]

    @property
    def text(self) -> str:
        return f"{self.method} {self.pattern}"


def parse_route(text: str) -> RouteTemplate:
    """Parse `METHOD /path` into a template; raise RouteTemplateError saying what is wrong."""
    parts = text.split()
    if len(parts) != 2:
        raise RouteTemplateError(f"expected 'METHOD /path', got {text!r}")
    method, pattern = parts
    if method not in METHODS:
        raise RouteTemplateError(f"unknown method {method!r}; expected one of {', '.join(sorted(METHODS))}")
    if not pattern.startswith("/"):
        raise RouteTemplateError(f"path must start with '/', got {pattern!r}")
    raw = pattern[1:].split("/")
    segments: list[str] = []
    names: set[str] = set()
    for i, seg in enumerate(raw):
        m = _PARAM.match(seg)
        if m:
            name, kind = m.group(1), m.group(2)
            if name in names:
                raise RouteTemplateError(f"parameter {{{name}}} appears twice in {pattern!r}")
            names.add(name)
            if kind == "path" and i != len(raw) - 1:
                raise RouteTemplateError(f"{{{name}:path}} must be the last segment of {pattern!r}")
            segments.append(seg)
        elif seg == "" and i == len(raw) - 1:
            segments.append("")  # trailing slash is significant
        elif seg in ("", ".", "..") or not _LITERAL.fullmatch(seg):
            raise RouteTemplateError(f"invalid path segment {seg!r} in {pattern!r}")
        else:
            segments.append(_normal_literal(seg, pattern))
    return RouteTemplate(method=method, pattern=pattern, segments=tuple(segments))


def _normal_literal(seg: str, pattern: str) -> str:
    """The segment as path normalisation leaves it in a request: unreserved escapes decoded, others upper-cased."""
    if "%" not in seg:
        return seg
    if _BAD_ESCAPE.search(seg):
        raise RouteTemplateError(f"invalid percent escape in segment {seg!r} of {pattern!r}")

    def normal_escape(m: re.Match[str]) -> str:
        value = int(m.group(1), 16)
        if value in (0x2F, 0x5C) or value < 0x20 or value == 0x7F:
            raise RouteTemplateError(f"segment {seg!r} of {pattern!r} encodes '/', '\\' or a control character")
        return chr(value) if chr(value) in _UNRESERVED else "%" + m.group(1).upper()

    normal = _ESCAPE.sub(normal_escape, seg)
    if normal in (".", ".."):
        raise RouteTemplateError(f"invalid path segment {seg!r} in {pattern!r}: it is a dot segment")
    return normal


def _kind(seg: str) -> str:
    if seg.startswith("{") and seg.endswith(":path}"):
        return "rest"
    if seg.startswith("{"):
        return "param"
    return "literal"


def templates_overlap(a: RouteTemplate, b: RouteTemplate) -> bool:
    """True when some request (method and path) would match both templates."""
    if a.method != b.method and "*" not in (a.method, b.method):
        return False
    return _segments_overlap(a.segments, b.segments)


def _segments_overlap(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    if not a or not b:
        return not a and not b  # a {rest:path} tail needs at least one (possibly empty) segment
    ka, kb = _kind(a[0]), _kind(b[0])
    if ka == "rest" or kb == "rest":
        return True
    if ka == "literal" and kb == "literal" and a[0] != b[0]:
        return False
    if (ka == "param" and b[0] == "") or (kb == "param" and a[0] == ""):
        return False  # a parameter never matches an empty segment
    return _segments_overlap(a[1:], b[1:])


@dataclass(frozen=True, slots=True)
class RouteOverlap:
    """An earlier template that a new one overlaps: its capability, its position in that capability's routes."""

    capability: str
    index: int
    template: RouteTemplate


# (insertion order, capability, index in its routes, template)
_Entry = tuple[int, str, int, RouteTemplate]


@dataclass(slots=True)
class _OverlapNode:
    literals: dict[str, _OverlapNode] = field(default_factory=dict)
    param: _OverlapNode | None = None
    ends: list[_Entry] = field(default_factory=list)  # templates ending here
    rest: list[_Entry] = field(default_factory=list)  # templates whose {rest:path} tail starts here


class OverlapIndex:
    """The templates checked so far, in a segment trie, so that a new template is compared only with those a
    request could match together with it: the walk follows the new template's literal into the same literal
    branch and the parameter branch, a parameter into every non-empty literal branch and the parameter
    branch, a `{rest:path}` tail into the whole subtree. Each step of the walk visits a different node, so a
    lookup costs the branches it can share with others instead of one comparison per stored template; the
    method is compared at the candidates found. `first_overlap` answers exactly what comparing the new
    template with every stored one in order (`templates_overlap`) would.
    """

    def __init__(self) -> None:
        self._root = _OverlapNode()
        self._count = 0

    def add(self, capability: str, index: int, template: RouteTemplate) -> None:
        entry = (self._count, capability, index, template)
        self._count += 1
        node, tail = _descend(self._root, template.segments, _OverlapNode)
        (node.rest if tail else node.ends).append(entry)

    def first_overlap(self, capability: str, template: RouteTemplate) -> RouteOverlap | None:
        """The earliest stored template of another capability that `template` overlaps, or None."""
        found: list[_Entry] = []
        self._walk(self._root, template.segments, 0, found)
        best: _Entry | None = None
        for entry in found:
            other = entry[3]
            if entry[1] == capability or (best is not None and entry[0] >= best[0]):
                continue
            if other.method == template.method or "*" in (other.method, template.method):
                best = entry
        return RouteOverlap(best[1], best[2], best[3]) if best is not None else None

    def _walk(self, node: _OverlapNode, segs: tuple[str, ...], i: int, found: list[_Entry]) -> None:
        if i == len(segs):
            found.extend(node.ends)  # a stored {rest:path} here needs one more segment: no overlap
            return
        found.extend(node.rest)  # a stored tail from here matches whatever the rest of `segs` matches
        seg = segs[i]
        kind = _kind(seg)
        if kind == "rest":  # the new tail matches every stored template with a segment left here
            self._collect_below(node, found)
            return
        if kind == "literal":
            child = node.literals.get(seg)
            if child is not None:
                self._walk(child, segs, i + 1, found)
            if node.param is not None and seg != "":  # a parameter never matches an empty segment
                self._walk(node.param, segs, i + 1, found)
            return
        for literal, child in node.literals.items():
            if literal != "":
                self._walk(child, segs, i + 1, found)
        if node.param is not None:
            self._walk(node.param, segs, i + 1, found)

    def _collect_below(self, node: _OverlapNode, found: list[_Entry]) -> None:
        """Every template stored beneath `node` (its own ends and tails are not beneath it)."""
        stack = [*node.literals.values(), *([node.param] if node.param is not None else [])]
        while stack:
            below = stack.pop()
            found.extend(below.ends)
            found.extend(below.rest)
            stack.extend(below.literals.values())
            if below.param is not None:
                stack.append(below.param)


@dataclass(frozen=True, slots=True)
class RouteMatch:
    capability: str
    template: RouteTemplate
    params: dict[str, str]


# (capability, template, names of its parameters in path order): the names are found once, not per request
_Target = tuple[str, RouteTemplate, tuple[str, ...]]


@dataclass(slots=True)
class _Node:
    literals: dict[str, _Node] = field(default_factory=dict)
    param: _Node | None = None
    # method -> the template ending here / ending here in a {rest:path} tail
    ends: dict[str, _Target] = field(default_factory=dict)
    rest: dict[str, _Target] = field(default_factory=dict)


def _for_method(targets: dict[str, _Target], method: str) -> _Target | None:
    """The template for `method` among those ending at one node: its own, else one for any method, else for
    a HEAD request the GET one."""
    hit = targets.get(method) or targets.get("*")
    if hit is None and method == "HEAD":
        hit = targets.get("GET")
    return hit


_N = TypeVar("_N", _Node, _OverlapNode)


def _descend(root: _N, segments: tuple[str, ...], new: Callable[[], _N]) -> tuple[_N, bool]:
    """The node of the trie under `root` that `segments` lead to, creating the missing ones, and whether the
    template ends there in a `{rest:path}` tail (it is stored in the node's `rest`, else in its `ends`)."""
    node = root
    for seg in segments:
        kind = _kind(seg)
        if kind == "rest":
            return node, True
        if kind == "param":
            if node.param is None:
                node.param = new()
            node = node.param
        else:
            node = node.literals.setdefault(seg, new())
    return node, False


class RouteTable:
    """All capabilities' templates; `match(method, path)` finds the capability serving a request."""

    def __init__(self, routes: Iterable[tuple[str, RouteTemplate]]) -> None:
        self._root = _Node()
        for capability, template in routes:
            self._add(capability, template)

    def _add(self, capability: str, template: RouteTemplate) -> None:
        names = tuple(seg[1:].split(":", 1)[0].rstrip("}") for seg in template.segments if _kind(seg) != "literal")
        target = (capability, template, names)
        node, tail = _descend(self._root, template.segments, _Node)
        (node.rest if tail else node.ends).setdefault(template.method, target)  # the first template wins

    def match(self, method: str, path: str) -> RouteMatch | None:
        segs = path[1:].split("/")
        found = self._walk(self._root, segs, 0, method, [])
        if found is None:
            return None
        (capability, template, names), values = found
        return RouteMatch(capability, template, dict(zip(names, values, strict=True)))

    def _walk(
        self, node: _Node, segs: list[str], i: int, method: str, values: list[str]
    ) -> tuple[_Target, list[str]] | None:
        if i == len(segs):
            hit = _for_method(node.ends, method)
            return (hit, values) if hit else None
        seg = segs[i]
        child = node.literals.get(seg)
        if child is not None:
            found = self._walk(child, segs, i + 1, method, values)
            if found:
                return found
        if node.param is not None and seg != "":
            found = self._walk(node.param, segs, i + 1, method, [*values, seg])
            if found:
                return found
        if node.rest:
            hit = _for_method(node.rest, method)
            if hit is not None:
                return hit, [*values, "/".join(segs[i:])]
        return None
