"""Redaction before anything is stored: `redact` patterns (with `*`), everything beneath them, secret headers."""

from __future__ import annotations

from typing import Any

import pytest

from strangler.shadow.compare import MISSING, FieldDifference
from strangler.shadow.records import MASK, Redactor


@pytest.mark.parametrize(
    ("path", "covered"),
    [
        ("/ssn", True),
        ("/ssn/0", True),  # beneath a pattern
        ("/ssnx", False),
        ("/cards/0/number", True),
        ("/cards/17/number", True),
        ("/cards/0/brand", False),
        ("/cards/0/number/last4", True),
        ("/a~1b", True),  # the key "a/b", escaped
        ("/a/b", False),
        ("", False),
        ("status", False),
        ("body", False),
    ],
)
def test_patterns_cover_their_paths_and_everything_beneath(path: str, covered: bool) -> None:
    assert Redactor(["/ssn", "/cards/*/number", "/a~1b"]).covers(path) is covered


@pytest.mark.parametrize(
    "header", ["authorization", "cookie", "set-cookie", "proxy-authorization", "x-api-key"]
)
def test_secret_headers_are_always_masked(header: str) -> None:
    redactor = Redactor([])
    masked = redactor.difference(FieldDifference(f"header:{header}", "Bearer s3cr3t", "Bearer 0ther"))
    assert masked == FieldDifference(f"header:{header}", MASK, MASK)


def test_other_headers_are_kept() -> None:
    diff = FieldDifference("header:etag", '"1"', '"2"')
    assert Redactor(["/etag"]).difference(diff) == diff


def test_a_difference_at_a_redacted_path_keeps_its_path_and_masks_both_values() -> None:
    masked = Redactor(["/user/ssn"]).difference(FieldDifference("/user/ssn", "123-45-6789", "987-65-4321"))
    assert masked == FieldDifference("/user/ssn", MASK, MASK)


def test_a_missing_side_is_masked_too() -> None:
    masked = Redactor(["/token"]).difference(FieldDifference("/token", "t0k3n", MISSING))
    assert masked == FieldDifference("/token", MASK, MASK)


def test_values_nested_beneath_a_difference_are_masked() -> None:
    redactor = Redactor(["/user/ssn", "/user/cards/*/number", "/tokens/*"])
    primary: dict[str, Any] = {
        "ssn": "123-45-6789",
        "name": "Ada",
        "cards": [{"number": "4111111111111111", "brand": "visa"}, {"number": {"pan": "5500"}}],
    }
    masked = redactor.difference(FieldDifference("/user", primary, MISSING))
    assert masked.primary == {
        "ssn": MASK,
        "name": "Ada",
        "cards": [{"number": MASK, "brand": "visa"}, {"number": MASK}],
    }
    assert masked.other == MISSING
    assert primary["ssn"] == "123-45-6789"  # the original is not changed
    whole = redactor.difference(FieldDifference("", {"user": primary, "tokens": ["a", "b"]}, []))
    assert whole.primary["user"]["ssn"] == MASK and whole.primary["tokens"] == [MASK, MASK]


def test_unordered_array_differences_are_masked_per_element() -> None:
    redactor = Redactor(["/cards/*/number"])
    masked = redactor.difference(FieldDifference("/cards", [{"number": "1"}], [{"number": "2"}, {"number": "3"}]))
    assert masked == FieldDifference("/cards", [{"number": MASK}], [{"number": MASK}, {"number": MASK}])


def test_without_patterns_values_are_kept() -> None:
    diff = FieldDifference("/a", {"b": 1}, [1])
    assert Redactor([]).difference(diff) == diff


def test_a_star_masks_keys_of_any_name() -> None:
    redactor = Redactor(["/secrets/*"])
    masked = redactor.difference(FieldDifference("/secrets", {"x": "1", "y": {"z": "2"}}, {}))
    assert masked.primary == {"x": MASK, "y": MASK}


def test_whole_bodies_are_masked_when_json_and_kept_as_text_otherwise() -> None:
    redactor = Redactor(["/user/ssn"])
    assert redactor.body(b'{"user": {"ssn": "1", "n": 2}}', "application/json") == {"user": {"ssn": MASK, "n": 2}}
    assert redactor.body(b"plain \xff text", "text/plain") == "plain \ufffd text"
    assert redactor.body(b'{"broken', "application/json") == '{"broken'
    assert redactor.body(None, "application/json") is None
    long = redactor.body(b"x" * 70_000, "text/plain")
    assert long.startswith("x" * 1000) and long.endswith("... (70000 bytes)") and len(long) < 66_000
