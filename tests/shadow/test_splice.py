"""Localising a difference in raw bytes: the deepest value that holds every difference, or None to fall back."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strangler.shadow.compare import CapturedResponse, Comparator
from strangler.shadow.config import CompareConfig
from strangler.shadow.splice import Splice, common_prefix, splice

JSON = "application/json"


def located(a: bytes, b: bytes, stop: Any = None) -> Splice | None:
    return splice(a, orjson.loads(a), b, stop)


@pytest.mark.parametrize(
    ("a", "b", "length"),
    [(b"", b"", 0), (b"abc", b"abc", 3), (b"abc", b"abd", 2), (b"abc", b"abcd", 3), (b"xbc", b"abc", 0),
     (b"a" * 999 + b"b", b"a" * 1000, 999), (b"a" * 1000, b"a" * 500 + b"b" * 500, 500)],
)
def test_common_prefix(a: bytes, b: bytes, length: int) -> None:
    assert common_prefix(a, b) == length == common_prefix(b, a)


@pytest.mark.parametrize(
    ("a", "b", "parts", "primary", "other"),
    [
        (b'{"o":{"s":"shipped","n":1},"x":2}', b'{"o":{"s":"returned","n":1},"x":2}', ("o", "s"), "shipped",
         "returned"),
        (b'{"l":[1,{"a":true},3]}', b'{"l":[1,{"a":1},3]}', ("l", 1, "a"), True, 1),  # bool and number apart
        (b'{"n":[1]}', b'{"n":[12]}', ("n",), [1], [12]),  # the number grew: its end is not a boundary
        (b'{"n":1}', b'{"n":1.0}', (), {"n": 1}, {"n": 1.0}),  # first differs at the byte after the value
        (b'{"s":"ab","t":"c"}', b'{"s":"abc","t":"c"}', ("s",), "ab", "abc"),
        (b'{"s":"x"}', b'{"s": "x" }', ("s",), "x", "x"),  # whitespace around the value is inside its span
        (b'{"s":"x","t":1}', b'{"s":  "y","t":1}', ("s",), "x", "y"),  # whitespace inside the span parses
        (b'[1,2]', b'[1,2,3]', (), [1, 2], [1, 2, 3]),  # an element appended: "2,3" is no value, the array is
        (b'{"a":"x"}', b'{"a":"x","b":1}', (), {"a": "x"}, {"a": "x", "b": 1}),
        (b'{"ab":1,"c":2}', b'{"ac":1,"c":2}', (), {"ab": 1, "c": 2}, {"ac": 1, "c": 2}),  # a key differs
        (b'{"a":{"x":1,"y":2},"b":3}', b'{"a":{"x":9,"y":8},"b":3}', ("a",), {"x": 1, "y": 2},
         {"x": 9, "y": 8}),  # two differences: their common container
        (b'{"a":[1,2],"b":[3,4]}', b'{"a":[1,9],"b":[3,9]}', (), {"a": [1, 2], "b": [3, 4]},
         {"a": [1, 9], "b": [3, 9]}),
        (b'"a"', b'"b"', (), "a", "b"),
        (b'{"a/b":{"~":1}}', b'{"a/b":{"~":2}}', ("a/b", "~"), 1, 2),
    ],
)
def test_the_deepest_value_holding_every_difference(a: bytes, b: bytes, parts: tuple[Any, ...], primary: Any,
                                                     other: Any) -> None:
    found = located(a, b)
    assert found == Splice(parts, primary, other)
    assert type(found.primary) is type(primary) and type(found.other) is type(other)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (b'{"a": 1}', b'{"a": 2}'),  # whitespace: not what orjson makes of it
        (b'{\n"a":1}', b'{\n"a":2}'),
        (b'{"a":1, "b":2}', b'{"a":1, "b":3}'),
        (b'{"a":1e16}', b'{"a":2e16}'),  # orjson writes 1e+16
        (b'{"a":"\\u00e9"}', b'{"a":"\\u00e8"}'),  # escaped where orjson writes UTF-8
        (b'{"a":1,"a":2}', b'{"a":1,"a":3}'),  # duplicate keys
    ],
)
def test_a_primary_that_is_not_canonical_is_not_spliced(a: bytes, b: bytes) -> None:
    assert located(a, b) is None


def test_an_other_side_that_does_not_parse_is_not_spliced() -> None:
    assert located(b'{"a":[1,2]}', b'{"a":[1,2}') is None
    assert located(b'{"a":"x"}', b'{"a":"x') is None


def test_stop_keeps_the_splice_at_a_path() -> None:
    a, b = b'{"l":[{"v":1},{"v":2}]}', b'{"l":[{"v":1},{"v":3}]}'
    assert located(a, b).parts == ("l", 1, "v")
    assert located(a, b, stop=lambda parts: parts == ("l",)) == Splice(("l",), [{"v": 1}, {"v": 2}],
                                                                      [{"v": 1}, {"v": 3}])


def compare(a: bytes, b: bytes, **options: Any) -> list[tuple[str, Any, Any]]:
    found = Comparator(CompareConfig(**options)).compare(CapturedResponse(200, {}, a, JSON),
                                                        CapturedResponse(200, {}, b, JSON))
    return [(d.path, d.primary, d.other) for d in found]


@pytest.mark.parametrize(
    ("a", "b", "options", "expected"),
    [
        # an unordered array above the first difference: compared there, as a multiset
        (b'{"l":[1,2,3]}', b'{"l":[1,3,2]}', {"unordered": ["/l"]}, []),
        (b'{"r":[{"t":[1,2]}]}', b'{"r":[{"t":[2,1]}]}', {"unordered": ["/r/*/t"]}, []),
        (b'{"l":[1,2,3]}', b'{"l":[1,3,3]}', {"unordered": ["/l"]}, [("/l", [1, 2, 3], [1, 3, 3])]),
        # an ignored ancestor, or the ignored value itself
        (b'{"o":{"x":1},"p":1}', b'{"o":{"x":2},"p":1}', {"ignore": ["/o"]}, []),
        (b'{"o":[{"at":1}],"p":1}', b'{"o":[{"at":2}],"p":1}', {"ignore": ["/o/*/at"]}, []),
        (b'{"o":[{"at":1}],"p":1}', b'{"o":[{"at":2}],"p":1}', {"ignore": [""]}, []),
        # options that apply at the spliced value
        (b'{"e":"A@B.C"}', b'{"e":"a@b.c"}', {"case_insensitive": ["/e"]}, []),
        (b'{"t":"2024-05-01T10:00:00Z"}', b'{"t":"2024-05-01T10:00:01Z"}', {"timestamps": {"/t": 2}}, []),
        (b'{"n":[1.0]}', b'{"n":[1.004]}', {"numeric_tolerance": 0.01}, []),
        (b'{"o":{"f":true,"n":1}}', b'{"o":{"f":1,"n":1}}', {}, [("/o/f", True, 1)]),
    ],
)
def test_options_hold_when_the_difference_is_spliced(a: bytes, b: bytes, options: dict[str, Any],
                                                     expected: list[tuple[str, Any, Any]]) -> None:
    assert orjson.dumps(orjson.loads(a)) == a  # canonical: the splice is taken
    assert compare(a, b, **options) == expected


scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from([0.0, 1.0, 1.5, -2.25]),
                    st.text(alphabet="ab~/é\"\\", max_size=3))
documents = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                          st.dictionaries(st.text("abc/~", max_size=2), inner,
                                                                          max_size=4)), max_leaves=12)


def mutated(doc: Any, data: st.DataObject) -> Any:
    """`doc` with one value somewhere replaced, removed or added (or unchanged)."""
    if isinstance(doc, dict) and doc and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(doc)))
        return {**doc, key: mutated(doc[key], data)}
    if isinstance(doc, list) and doc and data.draw(st.booleans()):
        index = data.draw(st.integers(0, len(doc) - 1))
        return doc[:index] + [mutated(doc[index], data)] + doc[index + 1:]
    change = data.draw(st.sampled_from(["replace", "add", "remove", "same"]))
    if change == "add" and isinstance(doc, dict):
        return {**doc, data.draw(st.text("abcd", max_size=2)): data.draw(scalars)}
    if change == "add" and isinstance(doc, list):
        return doc + [data.draw(scalars)]
    if change == "remove" and isinstance(doc, dict) and doc:
        return {k: v for k, v in doc.items() if k != data.draw(st.sampled_from(sorted(doc)))}
    if change == "remove" and isinstance(doc, list) and doc:
        return doc[:-1]
    return doc if change == "same" else data.draw(documents)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text("abc/~", max_size=2), documents, min_size=1, max_size=5)
       | st.lists(documents, min_size=1, max_size=5), st.data())
def test_spliced_and_whole_document_comparisons_agree(doc: Any, data: st.DataObject) -> None:
    other = mutated(mutated(doc, data), data)  # up to two changes, anywhere
    options = data.draw(st.sampled_from([{}, {"ignore": ["/a"]}, {"unordered": ["/b", "/*"]},
                                         {"numeric_tolerance": 0.5}, {"ignore": ["/*/a"], "unordered": [""]}]))
    spliced = compare(orjson.dumps(doc), orjson.dumps(other), **options)
    whole = compare(orjson.dumps(doc, option=orjson.OPT_INDENT_2), orjson.dumps(other, option=orjson.OPT_INDENT_2),
                    **options)
    assert spliced == whole
