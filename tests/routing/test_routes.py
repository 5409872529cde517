from __future__ import annotations

import pytest

from strangler.routing.routes import RouteTable, RouteTemplateError, parse_route, templates_overlap


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected 'METHOD /path'"),
        ("/customers", "expected 'METHOD /path'"),
        ("GET /a extra", "expected 'METHOD /path'"),
        ("get /customers", "unknown method 'get'"),
        ("FETCH /customers", "unknown method 'FETCH'"),
        ("GET customers", "path must start with '/'"),
        ("GET *", "path must start with '/'"),
        ("GET /a/{id}/b/{id}", "parameter {id} appears twice"),
        ("GET /a/{id}/{id:path}", "parameter {id} appears twice"),
        ("GET /files/{rest:path}/meta", "{rest:path} must be the last segment"),
        ("GET /files/{rest:path}/", "{rest:path} must be the last segment"),
        ("GET /a//b", "invalid path segment ''"),
        ("GET //a", "invalid path segment ''"),
        ("GET /a/./b", "invalid path segment '.'"),
        ("GET /a/../b", "invalid path segment '..'"),
        ("GET /a/{id", "invalid path segment '{id'"),
        ("GET /a/{id}x", "invalid path segment '{id}x'"),
        ("GET /a/{id:int}", "invalid path segment '{id:int}'"),
        ("GET /a/{1id}", "invalid path segment '{1id}'"),
        ("GET /a/b\"c", "invalid path segment"),
        ("GET /a/%zz", "invalid percent escape"),
        ("GET /a/%4", "invalid percent escape"),
        ("GET /a/x%2Fy", "encodes '/'"),
        ("GET /a/x%5cy", "encodes '/'"),
        ("GET /a/%2e%2e", "dot segment"),
    ],
)
def test_parse_route_rejects_bad_templates_saying_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(RouteTemplateError) as info:
        parse_route(text)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("GET /", ("",)),
        ("GET /customers", ("customers",)),
        ("GET /customers/", ("customers", "")),
        ("PUT /customers/{id}/address", ("customers", "{id}", "address")),
        ("* /files/{rest:path}", ("files", "{rest:path}")),
        ("GET /a;v=1/{x}", ("a;v=1", "{x}")),
        ("GET /%7euser/%c3%a9t%C3%A9", ("~user", "%C3%A9t%C3%A9")),
    ],
)
def test_parse_route_keeps_segments_in_request_normal_form(text: str, segments: tuple[str, ...]) -> None:
    template = parse_route(text)
    assert template.segments == segments
    assert template.text == text


def table(*routes: str) -> RouteTable:
    """One capability per template, named after the template."""
    return RouteTable((text, parse_route(text)) for text in routes)


def matched(routes: RouteTable, method: str, path: str) -> str | None:
    found = routes.match(method, path)
    return found.capability if found else None


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/customers/me", "GET /customers/me"),  # literal beats param
        ("GET", "/customers/42", "GET /customers/{id}"),  # param beats rest
        ("GET", "/customers/42/orders", "GET /customers/{rest:path}"),
        ("GET", "/customers/me/orders", "GET /customers/{rest:path}"),  # backtracks out of the literal
        ("GET", "/customers", None),  # a rest tail needs a segment
        ("GET", "/customers/", "GET /customers/{rest:path}"),  # ... which may be empty
        ("POST", "/customers/42", None),
    ],
)
def test_match_prefers_literal_then_param_then_rest(method: str, path: str, expected: str | None) -> None:
    routes = table("GET /customers/{rest:path}", "GET /customers/{id}", "GET /customers/me")
    assert matched(routes, method, path) == expected


def test_match_falls_back_from_head_to_get_but_not_the_other_way() -> None:
    routes = table("GET /a", "HEAD /b", "GET /files/{rest:path}")
    assert matched(routes, "HEAD", "/a") == "GET /a"
    assert matched(routes, "HEAD", "/files/x/y") == "GET /files/{rest:path}"
    assert matched(routes, "GET", "/b") is None
    assert matched(routes, "POST", "/a") is None


def test_match_prefers_an_exact_head_template_to_the_get_fallback() -> None:
    routes = RouteTable([("get", parse_route("GET /a")), ("head", parse_route("HEAD /a"))])
    assert matched(routes, "HEAD", "/a") == "head"


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "DELETE", "PATCH"])
def test_match_star_method_matches_every_method(method: str) -> None:
    routes = table("* /any/{x}", "* /tail/{rest:path}")
    assert matched(routes, method, "/any/1") == "* /any/{x}"
    assert matched(routes, method, "/tail/a/b") == "* /tail/{rest:path}"


def test_match_prefers_the_exact_method_to_star() -> None:
    routes = RouteTable([("star", parse_route("* /a")), ("post", parse_route("POST /a"))])
    assert matched(routes, "POST", "/a") == "post"
    assert matched(routes, "PUT", "/a") == "star"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/a", "GET /a"),
        ("/a/", "GET /a/"),
        ("/b", None),
        ("/b/", "GET /b/"),
        ("/c", "GET /c"),
        ("/c/", None),
    ],
)
def test_match_treats_a_trailing_slash_as_significant(path: str, expected: str | None) -> None:
    routes = table("GET /a", "GET /a/", "GET /b/", "GET /c")
    assert matched(routes, "GET", path) == expected


def test_match_extracts_params_by_name_per_template() -> None:
    routes = table("GET /c/{id}/orders/{order}", "PUT /c/{key}/orders/{n}")
    found = routes.match("GET", "/c/42/orders/7")
    assert found is not None and found.params == {"id": "42", "order": "7"}
    found = routes.match("PUT", "/c/42/orders/7")
    assert found is not None and found.params == {"key": "42", "n": "7"}


def test_match_never_gives_a_param_an_empty_segment() -> None:
    routes = table("GET /c/{id}", "GET /{x}")
    assert routes.match("GET", "/c/") is None
    assert routes.match("GET", "/") is None


@pytest.mark.parametrize(
    ("path", "rest"),
    [
        ("/files/a", "a"),
        ("/files/a/b/c.txt", "a/b/c.txt"),
        ("/files/a/b/", "a/b/"),
        ("/files/", ""),
    ],
)
def test_match_captures_the_rest_of_the_path(path: str, rest: str) -> None:
    found = table("GET /files/{owner}/x", "GET /files/{rest:path}").match("GET", path)
    assert found is not None
    assert found.template.text == "GET /files/{rest:path}"
    assert found.params == {"rest": rest}


def test_match_root_and_a_catch_all() -> None:
    assert matched(table("GET /"), "GET", "/") == "GET /"
    catch_all = table("* /{rest:path}").match("GET", "/")
    assert catch_all is not None and catch_all.params == {"rest": ""}


def test_match_keeps_the_first_of_two_identical_templates() -> None:
    routes = RouteTable(
        [
            ("first", parse_route("GET /a")),
            ("second", parse_route("GET /a")),
            ("first", parse_route("GET /t/{rest:path}")),
            ("second", parse_route("GET /t/{rest:path}")),
        ]
    )
    assert matched(routes, "GET", "/a") == "first"
    assert matched(routes, "GET", "/t/x") == "first"


def test_match_finds_a_template_written_with_escapes_by_its_normal_path() -> None:
    routes = table("GET /%7euser/caf%c3%a9")
    assert matched(routes, "GET", "/~user/caf%C3%A9") == "GET /%7euser/caf%c3%a9"


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ("GET /a", "GET /a", True),
        ("GET /a", "GET /b", False),
        ("GET /a/{id}", "GET /a/me", True),  # param vs literal
        ("GET /a/{id}", "GET /a/{key}", True),
        ("GET /a/{id}", "GET /a/{id}/b", False),
        ("GET /a/{id}/b", "GET /a/{x}/c", False),
        ("GET /a/{rest:path}", "GET /a/b/c/d", True),  # rest vs anything after
        ("GET /a/{rest:path}", "GET /a/{x}/{y}", True),
        ("GET /a/{rest:path}", "GET /a/", True),
        ("GET /a/{rest:path}", "GET /a", False),
        ("GET /a/{rest:path}", "GET /b/{rest:path}", False),
        ("GET /{rest:path}", "GET /", True),
        ("GET /a/{id}", "GET /a/", False),  # a param never matches an empty segment
        ("GET /a", "GET /a/", False),
        ("GET /a", "POST /a", False),  # different methods
        ("GET /a/{rest:path}", "PUT /a/b", False),
        ("* /a", "POST /a", True),
        ("* /a/{id}", "DELETE /a/1", True),
        ("* /a", "* /b", False),
        ("HEAD /a", "GET /a", False),  # an exact HEAD template wins over the GET fallback
    ],
)
def test_templates_overlap(a: str, b: str, overlap: bool) -> None:
    ta, tb = parse_route(a), parse_route(b)
    assert templates_overlap(ta, tb) is overlap
    assert templates_overlap(tb, ta) is overlap


@pytest.mark.parametrize(
    ("a", "b", "path"),
    [
        ("GET /a/{id}", "GET /a/me", "/a/me"),
        ("GET /a/{rest:path}", "GET /a/{x}/{y}", "/a/1/2"),
        ("GET /{rest:path}", "GET /", "/"),
        ("* /a", "POST /a", "/a"),
    ],
)
def test_overlapping_templates_each_match_a_witness_path(a: str, b: str, path: str) -> None:
    method = "POST" if "POST" in (a + b) else "GET"
    assert matched(table(a), method, path) == a
    assert matched(table(b), method, path) == b
