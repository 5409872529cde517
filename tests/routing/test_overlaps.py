"""Overlapping route templates across capabilities: the indexed check (`OverlapIndex`) finds exactly what
comparing every pair finds, and configuration loading still refuses every kind of overlap."""

from __future__ import annotations

import random

import pytest

from strangler.config import load_config_text
from strangler.errors import ConfigError
from strangler.routing.routes import OverlapIndex, RouteTemplate, parse_route, templates_overlap


def pairwise_first_overlap(stored: list[tuple[str, int, RouteTemplate]], capability: str,
                           template: RouteTemplate) -> tuple[str, int, str] | None:
    """What the check did before the index: compare with every earlier template, in order."""
    for other_cap, other_i, other in stored:
        if other_cap != capability and templates_overlap(template, other):
            return other_cap, other_i, other.text
    return None


def indexed_first_overlap(index: OverlapIndex, capability: str, template: RouteTemplate) -> tuple[str, int, str] | None:
    found = index.first_overlap(capability, template)
    return (found.capability, found.index, found.template.text) if found is not None else None


CASES = [
    ("GET /a", "GET /a", True),  # duplicate
    ("GET /a", "GET /b", False),
    ("GET /a/{id}", "GET /a/me", True),  # param vs literal
    ("GET /a/me", "GET /a/{id}", True),
    ("GET /a/{id}", "GET /a/{key}", True),
    ("GET /a/{id}", "GET /a/{id}/b", False),
    ("GET /a/{id}/b", "GET /a/{x}/c", False),
    ("GET /a/{rest:path}", "GET /a/b/c/d", True),  # rest vs anything below it
    ("GET /a/b/c/d", "GET /a/{rest:path}", True),
    ("GET /a/{rest:path}", "GET /a/{x}/{y}", True),
    ("GET /a/{rest:path}", "GET /a/", True),
    ("GET /a/", "GET /a/{rest:path}", True),
    ("GET /a/{rest:path}", "GET /a", False),
    ("GET /a", "GET /a/{rest:path}", False),
    ("GET /a/{rest:path}", "GET /a/{more:path}", True),
    ("GET /a/{rest:path}", "GET /b/{rest:path}", False),
    ("GET /{rest:path}", "GET /", True),
    ("GET /{rest:path}", "GET /x/{y}/z", True),
    ("GET /x/{y}/z", "GET /{rest:path}", True),
    ("GET /{id}", "GET /a/{rest:path}", False),
    ("GET /{id}/{rest:path}", "GET /a/b", True),
    ("GET /a/{id}", "GET /a/", False),  # a param never matches an empty segment
    ("GET /a/", "GET /a/{id}", False),
    ("GET /a", "GET /a/", False),
    ("GET /a", "POST /a", False),  # different methods
    ("GET /a/{rest:path}", "PUT /a/b", False),
    ("* /a", "POST /a", True),
    ("POST /a/{id}", "* /a/1", True),
    ("* /a", "* /b", False),
    ("HEAD /a", "GET /a", False),
]


@pytest.mark.parametrize(("a", "b", "overlap"), CASES)
def test_the_index_finds_an_overlap_across_capabilities_as_the_pairwise_check_does(a: str, b: str,
                                                                                   overlap: bool) -> None:
    first, second = parse_route(a), parse_route(b)
    assert templates_overlap(first, second) is overlap
    index = OverlapIndex()
    index.add("one", 3, first)
    found = index.first_overlap("two", second)
    assert (found is not None) is overlap
    if found is not None:
        assert (found.capability, found.index, found.template) == ("one", 3, first)
    assert index.first_overlap("one", second) is None  # within one capability an overlap is allowed


def test_the_earliest_overlapping_template_is_named() -> None:
    index = OverlapIndex()
    for i, (cap, text) in enumerate([("c", "GET /x/{rest:path}"), ("b", "GET /x/{id}/y"), ("a", "GET /x/1/y")]):
        index.add(cap, i, parse_route(text))
    found = index.first_overlap("d", parse_route("* /x/1/y"))
    assert found is not None and (found.capability, found.index) == ("c", 0)
    found = index.first_overlap("c", parse_route("GET /x/1/y"))
    assert found is not None and (found.capability, found.index) == ("b", 1)


def random_template(rng: random.Random, literals: str) -> RouteTemplate:
    """Literals from `literals`, empty segments, parameters and tails: few literals make many overlaps."""
    choices = [*literals, "", "{p}", "{q}"]
    segments = [rng.choice(choices) for _ in range(rng.randint(1, 4))]
    segments = [s for i, s in enumerate(segments) if s != "" or i == len(segments) - 1] or [""]
    if rng.random() < 0.25:
        segments[-1] = "{rest:path}"
    seen: set[str] = set()  # a parameter name appears once per template
    named = []
    for i, seg in enumerate(segments):
        if seg in ("{p}", "{q}"):
            name = f"{seg[1:-1]}{i}"
            seg = "{" + name + "}" if name not in seen else "c"
            seen.add(name)
        named.append(seg)
    return parse_route(f"{rng.choice(['GET', 'GET', 'POST', '*'])} /{'/'.join(named)}")


@pytest.mark.parametrize("literals", ["ab", "abcdefgh"])
@pytest.mark.parametrize("seed", range(30))
def test_the_index_agrees_with_comparing_every_pair_on_random_route_sets(seed: int, literals: str) -> None:
    rng = random.Random(seed)
    index, stored = OverlapIndex(), []
    for i in range(60):
        capability, template = rng.choice("xyz"), random_template(rng, literals)
        assert indexed_first_overlap(index, capability, template) == pairwise_first_overlap(
            stored, capability, template), template.text
        index.add(capability, i, template)
        stored.append((capability, i, template))


# --- configuration loading ------------------------------------------------------------------------------


def config_with(first: list[str], second: list[str]) -> str:
    def routes(items: list[str]) -> str:
        return "[" + ", ".join(f'"{r}"' for r in items) + "]"

    return (
        "upstreams:\n  legacy: {url: 'http://127.0.0.1:8001'}\n  new: {url: 'http://127.0.0.1:8002'}\n"
        "default_upstream: legacy\ncapabilities:\n"
        f"  first:\n    legacy: legacy\n    new: new\n    routes: {routes(first)}\n"
        f"  second:\n    legacy: legacy\n    new: new\n    routes: {routes(second)}\n"
    )


@pytest.mark.parametrize(
    ("first", "second", "offending", "named"),
    [
        (["GET /orders/{id}"], ["GET /orders/{id}"], 0, "GET /orders/{id}' (capabilities.first.routes[0])"),
        (["GET /orders/{id}"], ["GET /health", "GET /orders/latest"], 1, "(capabilities.first.routes[0])"),
        (["GET /orders/latest"], ["GET /orders/{id}"], 0, "(capabilities.first.routes[0])"),
        (["GET /x", "* /orders/{rest:path}"], ["PUT /orders/1/lines/{line}"], 0, "(capabilities.first.routes[1])"),
        (["DELETE /orders/1/lines/2"], ["* /{rest:path}"], 0, "(capabilities.first.routes[0])"),
        (["* /orders"], ["POST /orders"], 0, "(capabilities.first.routes[0])"),
    ],
    ids=["duplicate", "param-vs-literal", "literal-vs-param", "rest-vs-below", "rest-at-the-root", "any-method"],
)
def test_configuration_refuses_every_kind_of_overlap_across_capabilities(
    first: list[str], second: list[str], offending: int, named: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(config_with(first, second), source="s.yaml")
    message = str(info.value)
    assert f"capabilities.second.routes[{offending}]: route '{second[offending]}' overlaps '" in message
    assert named in message


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (["GET /orders/{id}"], ["GET /orders/{id}/lines"]),
        (["GET /orders/{rest:path}"], ["GET /orders"]),
        (["GET /orders/{id}"], ["GET /orders/"]),
        (["GET /orders"], ["POST /orders"]),
    ],
)
def test_configuration_accepts_templates_no_request_matches_together(first: list[str], second: list[str]) -> None:
    config = load_config_text(config_with(first, second), source="s.yaml")
    assert config.capabilities["second"].routes == second


def test_two_thousand_routes_validate_with_only_the_overlap_the_configuration_has() -> None:
    capabilities = {
        f"res{i}": [f"GET /api/v1/res{i}", f"GET /api/v1/res{i}/{{id}}", f"POST /api/v1/res{i}/{{id}}/actions/{{a}}",
                    f"* /api/v2/res{i}/{{rest:path}}"] for i in range(500)
    }
    capabilities["res499"].append("GET /api/v2/res7/x/y")
    text = "upstreams:\n  legacy: {url: 'http://127.0.0.1:8001'}\ndefault_upstream: legacy\ncapabilities:\n" + "".join(
        f"  {name}:\n    legacy: legacy\n    routes: [{', '.join(repr(r) for r in routes)}]\n"
        for name, routes in capabilities.items())
    with pytest.raises(ConfigError) as info:
        load_config_text(text, source="s.yaml")
    assert ("capabilities.res499.routes[4]: route 'GET /api/v2/res7/x/y' overlaps '* /api/v2/res7/{rest:path}' "
            "(capabilities.res7.routes[3])") in str(info.value)
