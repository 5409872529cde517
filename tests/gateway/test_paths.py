"""Path normalisation against the classes of Envoy's CVE-2019-9901 (un-normalised `..`) and
CVE-2021-29492 (escaped slashes bypassing route matching): the path that routing matches is the path
that is forwarded, so every spelling of a path must normalise to one string or be refused."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strangler.gateway.paths import PathRejected, normalize_path


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        # already normal (the fast path)
        (b"/", "/"),
        (b"/customers/42", "/customers/42"),
        (b"/customers/42/", "/customers/42/"),
        (b"/a.b/c.d.e", "/a.b/c.d.e"),
        # dot segments (CVE-2019-9901)
        (b"/a/../b", "/b"),
        (b"/a/b/../../c", "/c"),
        (b"/a/./b", "/a/b"),
        (b"/a/b/..", "/a/"),
        (b"/a/b/.", "/a/b/"),
        (b"/a/..", "/"),
        (b"/..", "/"),
        (b"/../a", "/a"),  # above the root stays at the root
        (b"/../../../etc/passwd", "/etc/passwd"),
        (b"/.", "/"),
        (b"/a/...", "/a/..."),  # three dots are a name
        (b"/a/..b/c", "/a/..b/c"),
        (b"/.hidden", "/.hidden"),
        # encoded dots are unreserved: decoded, then removed as dot segments
        (b"/a/%2e%2e/b", "/b"),
        (b"/a/%2E%2E/b", "/b"),
        (b"/a/%2E%2e/b", "/b"),
        (b"/a/%2e./b", "/b"),
        (b"/a/.%2E/b", "/b"),
        (b"/a/%2e/b", "/a/b"),
        (b"/a/b/%2e%2e", "/a/"),
        # empty segments merged
        (b"//a//b", "/a/b"),
        (b"//", "/"),
        (b"///a///", "/a/"),
        (b"/a//../b", "/b"),
        # unreserved escapes decoded, other escapes upper-cased, never double-decoded
        (b"/%7e", "/~"),
        (b"/%7Euser", "/~user"),
        (b"/%41%62c", "/Abc"),
        (b"/caf%c3%a9", "/caf%C3%A9"),
        (b"/a%3bb", "/a%3Bb"),  # an encoded ';' is not a ';'
        (b"/a%20b", "/a%20b"),
        (b"/a%252fb", "/a%252fb"),  # '%25' stays an escape; the '2f' after it is text, kept byte-exact
        (b"/a%252Fb", "/a%252Fb"),
        (b"/a%25%32%66", "/a%252f"),  # %32 %66 are the unreserved '2' and 'f', decoded once
        (b"/%2e%2e%252f", "/..%252f"),
        # ';' is an ordinary character (see `path_semicolons: reject` in the configuration)
        (b"/a;jsessionid=1/b", "/a;jsessionid=1/b"),
        (b"/a/..;/b", "/a/..;/b"),
        (b"/a/;/b", "/a/;/b"),
        # sub-delimiters and ':' '@' are allowed raw
        (b"/a:b@c!$&'()*+,=", "/a:b@c!$&'()*+,="),
    ],
)
def test_normalize_path(raw: bytes, normal: str) -> None:
    assert normalize_path(raw) == normal


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        # escaped slashes and backslashes (CVE-2021-29492)
        (b"/a%2fb", "encoded '/'"),
        (b"/a%2Fb", "encoded '/'"),
        (b"/a%2F..%2Fb", "encoded '/'"),
        (b"/a%5cb", "encoded '/' or '\\'"),
        (b"/a%5C..%5Cb", "encoded '/' or '\\'"),
        (b"/a\\b", "'\\' in path"),
        (b"/a/..\\b", "'\\' in path"),
        # NUL and control characters, raw or encoded
        (b"/a\x00b", "0x00"),
        (b"/a%00b", "encoded control character"),
        (b"/a%0ab", "encoded control character"),
        (b"/a%0Db", "encoded control character"),
        (b"/a%7fb", "encoded control character"),
        (b"/a\tb", "0x09"),
        (b"/a\n", "0x0A"),
        (b"/a\r\nX-Injected: 1", "0x0D"),
        (b"/a\x7f", "0x7F"),
        # invalid escapes
        (b"/a%", "invalid percent escape"),
        (b"/a%4", "invalid percent escape"),
        (b"/a%zz", "invalid percent escape"),
        (b"/a%4g/b", "invalid percent escape"),
        (b"/a%%41", "invalid percent escape"),
        # raw non-ASCII (must be percent-encoded)
        ("/café".encode(), "0xC3"),
        (b"/a\xff", "0xFF"),
        # characters that are not allowed raw in a path
        (b"/a b", "0x20"),
        (b'/a"b', "0x22"),
        (b"/a<b>", "0x3C"),
        (b"/a#b", "0x23"),
        (b"/a?b", "0x3F"),
        (b"/a{b}", "0x7B"),
        # not an origin-form path
        (b"", "absolute path"),
        (b"a/b", "absolute path"),
        (b"*", "absolute path"),
        (b"http://evil/a", "absolute path"),
        (b"../a", "absolute path"),
    ],
)
def test_normalize_path_rejects_what_cannot_be_made_safe(raw: bytes, reason: str) -> None:
    with pytest.raises(PathRejected) as info:
        normalize_path(raw)
    assert reason in str(info.value)


_ENCODED_SLASH = re.compile(r"%(2f|5c)", re.IGNORECASE)


def assert_normal(path: str) -> None:
    assert path.startswith("/")
    for bad in ("/../", "/./", "//"):
        assert bad not in path
    assert not path.endswith(("/..", "/."))
    assert not _ENCODED_SLASH.search(path)
    assert all(0x21 <= ord(c) <= 0x7E for c in path)


_PIECES = st.sampled_from(
    [
        "/", "/", "/", ".", "..", "a", "b", "Z9", "~", "-", "_", ";", ":", "@", "=", "%", "%4", "%zz",
        "%2e", "%2E", "%2f", "%2F", "%5c", "%5C", "%25", "%252f", "%7e", "%41", "%c3%a9", "%3B", "%00",
        "%20", "\\", "\x00", "\n", " ", "é",
    ]
)


@given(st.lists(_PIECES, max_size=16).map(lambda parts: "/" + "".join(parts)))
def test_normalize_path_output_is_normal_and_stable_for_tricky_paths(text: str) -> None:
    check_normalisation(text.encode("utf-8"))


@given(st.binary(max_size=40).map(lambda b: b"/" + b))
def test_normalize_path_output_is_normal_and_stable_for_any_bytes(raw: bytes) -> None:
    check_normalisation(raw)


def check_normalisation(raw: bytes) -> None:
    try:
        normal = normalize_path(raw)
    except PathRejected:
        return
    assert_normal(normal)
    assert normalize_path(normal.encode("ascii")) == normal
