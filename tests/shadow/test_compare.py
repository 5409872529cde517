"""The comparison engine: status, configured headers, JSON structure as JSON Pointers, options, raw bodies."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest

from strangler.shadow.compare import MISSING, CapturedResponse, Comparator, FieldDifference, compare_responses
from strangler.shadow.config import CompareConfig

JSON = "application/json"


def response(body: Any, *, status: int = 200, content_type: str = JSON, **headers: str) -> CapturedResponse:
    raw = body if isinstance(body, bytes) or body is None else orjson.dumps(body)
    wanted = {"content-type": content_type, **{k.replace("_", "-"): v for k, v in headers.items()}}
    return CapturedResponse(status, wanted, raw, content_type)


def diff(a: Any, b: Any, **options: Any) -> list[tuple[str, Any, Any]]:
    """The differences, found alike from canonical bodies (spliced) and from indented ones (whole documents)."""
    config = CompareConfig(**options)
    found = compare_responses(response(a), response(b), config)
    indented = [response(orjson.dumps(doc, option=orjson.OPT_INDENT_2)) for doc in (a, b)]
    assert compare_responses(indented[0], indented[1], config) == found
    return [(d.path, d.primary, d.other) for d in found]


def test_identical_responses_have_no_differences() -> None:
    doc = {"id": 1, "name": "Ada", "tags": ["a", "b"], "address": {"city": "Paris", "zip": None}}
    assert diff(doc, doc) == []


def test_status_codes_are_compared() -> None:
    found = compare_responses(response({"a": 1}), response({"a": 1}, status=500), CompareConfig())
    assert found == [FieldDifference("status", 200, 500)]


def test_only_configured_headers_are_compared() -> None:
    config = CompareConfig(headers=["Content-Type", "X-Version"])
    a = response({"a": 1}, x_version="1", x_other="a")
    b = response({"a": 1}, x_version="2", x_other="b")
    assert compare_responses(a, b, config) == [FieldDifference("header:x-version", "1", "2")]


def test_a_header_present_on_one_side_only_is_a_difference() -> None:
    config = CompareConfig(headers=["x-version"])
    found = compare_responses(response({}, x_version="1"), response({}), config)
    assert found == [FieldDifference("header:x-version", "1", None)]


def test_json_differences_are_json_pointers_with_both_values() -> None:
    a = {"customer": {"name": "Ada", "orders": [{"total": 10}, {"total": 20}]}}
    b = {"customer": {"name": "Ada", "orders": [{"total": 10}, {"total": 21}]}}
    assert diff(a, b) == [("/customer/orders/1/total", 20, 21)]


@pytest.mark.parametrize(
    ("key", "path"),
    [("a/b", "/a~1b"), ("m~n", "/m~0n"), ("~1", "/~01"), ("/~", "/~1~0"), ("", "/"), ("é ü", "/é ü")],
)
def test_pointer_tokens_escape_tilde_and_slash(key: str, path: str) -> None:
    assert diff({key: 1}, {key: 2}) == [(path, 1, 2)]


def test_missing_keys_are_reported_from_both_sides() -> None:
    assert diff({"a": 1, "same": 0}, {"b": 2, "same": 0}) == [("/a", 1, MISSING), ("/b", MISSING, 2)]


def test_null_and_missing_are_different() -> None:
    assert diff({"a": None}, {}) == [("/a", None, MISSING)]


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([1, 2, 3], [1, 2], [("/2", 3, MISSING)]),
        ([1], [1, 2, 3], [("/1", MISSING, 2), ("/2", MISSING, 3)]),
        ([], [{"x": 1}], [("/0", MISSING, {"x": 1})]),
        ([1, 2, 3], [1, 9], [("/1", 2, 9), ("/2", 3, MISSING)]),
    ],
)
def test_arrays_of_different_lengths(a: list[Any], b: list[Any], expected: list[tuple[str, Any, Any]]) -> None:
    assert diff({"items": a}, {"items": b}) == [(f"/items{p}", x, y) for p, x, y in expected]


def test_a_change_of_type_is_reported_at_its_path() -> None:
    assert diff({"a": {"b": 1}}, {"a": [1]}) == [("/a", {"b": 1}, [1])]
    assert diff({"a": "1"}, {"a": 1}) == [("/a", "1", 1)]


def test_differing_root_values_are_reported_at_the_empty_pointer() -> None:
    assert diff([1], {"a": 1}) == [("", [1], {"a": 1})]
    assert diff(1, 2) == [("", 1, 2)]


@pytest.mark.parametrize(("a", "b"), [(True, 1), (False, 0), (1.0, True), (None, 0), (None, False), ("1", 1)])
def test_bool_null_and_numbers_are_never_equal(a: Any, b: Any) -> None:
    assert diff({"v": a}, {"v": b}, numeric_tolerance=10) == [("/v", a, b)]


def test_int_and_float_of_the_same_value_are_equal() -> None:
    assert diff({"v": 1}, {"v": 1.0}) == []


@pytest.mark.parametrize(
    ("tolerance", "a", "b", "equal"),
    [(0.0, 1.0, 1.0000001, False), (0.01, 1.0, 1.005, True), (0.01, 1.0, 1.02, False), (2, 10, 12, True),
     (2, 10, 13, False), (0.5, -0.25, 0.25, True)],
)
def test_numeric_tolerance(tolerance: float, a: float, b: float, equal: bool) -> None:
    assert (diff({"n": [a]}, {"n": [b]}, numeric_tolerance=tolerance) == []) is equal


@pytest.mark.parametrize(
    ("ignore", "expected"),
    [
        ([], ["/items/0/updated_at", "/items/1/updated_at", "/items/1/price", "/meta/at"]),
        (["/items/*/updated_at"], ["/items/1/price", "/meta/at"]),
        (["/items/*"], ["/meta/at"]),
        (["/items/1"], ["/items/0/updated_at", "/meta/at"]),
        (["/*/at", "/items"], []),
        (["/items/*/updated_at", "/items/*/price", "/meta"], []),
        ([""], []),
    ],
)
def test_ignore_patterns_with_a_star_for_one_segment(ignore: list[str], expected: list[str]) -> None:
    a = {"items": [{"updated_at": 1, "price": 5}, {"updated_at": 2, "price": 6}], "meta": {"at": 1}}
    b = {"items": [{"updated_at": 3, "price": 5}, {"updated_at": 4, "price": 7}], "meta": {"at": 2}}
    assert [p for p, _, _ in diff(a, b, ignore=ignore)] == expected


def test_ignored_keys_may_be_missing_on_either_side() -> None:
    assert diff({"a": 1, "trace": "x"}, {"a": 1, "debug": {}}, ignore=["/trace", "/debug"]) == []
    assert diff({"l": [1, 2, 3]}, {"l": [1]}, ignore=["/l/*"]) == []


def test_ignore_patterns_match_escaped_keys() -> None:
    a = {"a/b": 1, "c~d": 1, "keep": 1}
    b = {"a/b": 2, "c~d": 2, "keep": 2}
    assert diff(a, b, ignore=["/a~1b", "/c~0d"]) == [("/keep", 1, 2)]


def test_a_star_is_not_a_prefix_match() -> None:
    # "*" matches one whole segment, never a part of one
    assert diff({"ab": 1}, {"ab": 2}, ignore=["/a*"]) == [("/ab", 1, 2)]


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        (["a", "b", "a"], ["b", "a", "a"], True),
        (["a", "b"], ["a", "b", "b"], False),
        (["a", "a", "b"], ["a", "b", "b"], False),
        ([{"x": 1, "y": 2}, {"x": 3}], [{"x": 3}, {"y": 2, "x": 1}], True),
        ([[1, 2], [3]], [[3], [1, 2]], True),
        ([[1, 2]], [[2, 1]], False),  # multiset of the outer array only
        ([], [], True),
    ],
)
def test_unordered_arrays_are_compared_as_multisets(a: list[Any], b: list[Any], equal: bool) -> None:
    found = diff({"tags": a, "order": [1, 2]}, {"tags": b, "order": [1, 2]}, unordered=["/tags"])
    assert found == ([] if equal else [("/tags", a, b)])


def test_unordered_applies_only_where_configured() -> None:
    assert diff({"a": [1, 2], "b": [1, 2]}, {"a": [2, 1], "b": [2, 1]}, unordered=["/a"]) == [
        ("/b/0", 1, 2),
        ("/b/1", 2, 1),
    ]


def test_unordered_with_a_star() -> None:
    a = {"rows": [{"tags": ["x", "y"]}, {"tags": ["z", "w"]}]}
    b = {"rows": [{"tags": ["y", "x"]}, {"tags": ["w", "z"]}]}
    assert diff(a, b, unordered=["/rows/*/tags"]) == []


@pytest.mark.parametrize(
    ("a", "b", "tolerance", "equal"),
    [
        ("2024-05-01T10:00:00Z", "2024-05-01T10:00:01.500Z", 2.0, True),
        ("2024-05-01T10:00:00Z", "2024-05-01T10:00:03Z", 2.0, False),
        ("2024-05-01T10:00:00+00:00", "2024-05-01T12:00:00+02:00", 0.0, True),
        ("2024-05-01T10:00:00Z", "2024-05-01T10:00:00.9", 1.0, True),  # naive: read as UTC
        ("2024-05-01T10:00:00Z", "not a time", 60.0, False),
        ("yesterday", "today", 1e9, False),
    ],
)
def test_timestamps_equal_within_a_tolerance(a: str, b: str, tolerance: float, equal: bool) -> None:
    found = diff({"at": a, "other": "x"}, {"at": b, "other": "x"}, timestamps={"/at": tolerance})
    assert found == ([] if equal else [("/at", a, b)])


def test_timestamp_tolerance_applies_only_at_its_pattern() -> None:
    a = {"items": [{"at": "2024-05-01T10:00:00Z"}], "at": "2024-05-01T10:00:00Z"}
    b = {"items": [{"at": "2024-05-01T10:00:01Z"}], "at": "2024-05-01T10:00:01Z"}
    assert diff(a, b, timestamps={"/items/*/at": 5}) == [("/at", a["at"], b["at"])]


def test_case_insensitive_strings() -> None:
    a = {"email": "Ada@Example.com", "name": "Ada", "street": "Straße"}
    b = {"email": "ada@example.COM", "name": "ADA", "street": "STRASSE"}
    assert diff(a, b, case_insensitive=["/email", "/street"]) == [("/name", "Ada", "ADA")]


def test_equal_raw_bytes_are_not_parsed() -> None:
    # identical bytes: equal without parsing, even when they are not valid JSON
    broken = b'{"a": 1,,,'
    found = Comparator(CompareConfig()).compare(response(broken), response(broken))
    assert found == []


def test_json_bodies_differing_only_in_formatting_and_key_order_are_equal() -> None:
    a = response(b'{"a": 1, "b": [1, 2]}')
    b = response(b'{\n  "b": [1,2],\n  "a": 1\n}')
    assert compare_responses(a, b, CompareConfig()) == []


def _digest(body: bytes) -> str:
    return f"sha256:{hashlib.sha256(body).hexdigest()} ({len(body)} bytes)"


@pytest.mark.parametrize(
    ("a", "b", "content_type"),
    [
        (b"<p>hello</p>", b"<p>hullo</p>", "text/html"),
        (b'{"a": 1,,', b'{"a": 2,,', JSON),  # declared JSON that does not parse: compared as bytes
        (b"\x00\x01", b"\x00\x02", "application/octet-stream"),
    ],
)
def test_non_json_bodies_are_equal_or_different_with_hashes(a: bytes, b: bytes, content_type: str) -> None:
    config = CompareConfig()
    assert compare_responses(response(a, content_type=content_type), response(a, content_type=content_type),
                             config) == []
    found = compare_responses(response(a, content_type=content_type), response(b, content_type=content_type), config)
    assert found == [FieldDifference("body", _digest(a), _digest(b))]


def test_json_content_types_include_suffixes_and_parameters() -> None:
    for content_type in ("application/json; charset=utf-8", "application/problem+json", "Application/JSON"):
        a = response({"a": 1}, content_type=content_type)
        b = response({"a": 2}, content_type=content_type)
        assert compare_responses(a, b, CompareConfig()) == [FieldDifference("/a", 1, 2)]


def test_a_body_that_was_not_captured_is_not_compared() -> None:
    a = CapturedResponse(200, {"content-type": JSON}, None, JSON)
    b = response({"a": 2})
    assert compare_responses(a, b, CompareConfig()) == []


def test_status_headers_and_body_differences_together() -> None:
    config = CompareConfig(headers=["content-type", "etag"])
    a = response({"a": 1}, status=200, etag="1")
    b = response({"a": 2}, status=201, etag="2")
    assert [d.path for d in compare_responses(a, b, config)] == ["status", "header:etag", "/a"]


def test_one_comparator_serves_many_comparisons() -> None:
    comparator = Comparator(CompareConfig(ignore=["/at"]))
    for i in range(3):
        found = comparator.compare(response({"at": i, "v": 1}), response({"at": -i, "v": i}))
        assert [d.path for d in found] == ([] if i == 1 else ["/v"])


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ({"o": {"flag": True, "n": 1}}, {"o": {"flag": 1, "n": 1}}, [("/o/flag", True, 1)]),
        ({"l": [{"x": False}]}, {"l": [{"x": 0}]}, [("/l/0/x", False, 0)]),
        ({"l": [[1, True]]}, {"l": [[1, 1.0]]}, [("/l/0/1", True, 1.0)]),
        ({"o": {"n": 1}, "p": {"q": [2]}}, {"o": {"n": 1.0}, "p": {"q": [2.0]}}, []),  # 1 and 1.0: equal
        ({"o": {"a": 1, "b": True}}, {"o": {"b": True, "a": 1}}, []),  # key order does not matter
        ({"o": {"a": 1, "b": True}, "c": 1}, {"o": {"b": 1, "a": 1}, "c": 2}, [("/o/b", True, 1), ("/c", 1, 2)]),
    ],
)
def test_subtrees_that_python_finds_equal_are_still_compared_as_json(
    a: Any, b: Any, expected: list[tuple[str, Any, Any]]
) -> None:
    # Python says {"flag": True} == {"flag": 1}; JSON does not
    assert diff(a, b) == expected
