"""S6: fuzzing (hypothesis) of the parsers that read hostile or broken input: path normalisation, route
matching, configuration loading, the pgoutput decoder. Each may only answer or refuse with its own error;
no other exception (a crash) in the CI budget. The checked-in corpora (tests/reliability/corpus/) are
replayed first; a failing example hypothesis finds is added there once fixed.

`STRANGLER_RELIABILITY_FULL=1` runs twenty times as many examples."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strangler.cdc.pgoutput import DecodeError, decode
from strangler.config import load_config_text
from strangler.errors import ConfigError
from strangler.gateway.paths import PathRejected, normalize_path
from strangler.routing.routes import RouteTable, RouteTemplate, RouteTemplateError, parse_route
from tests.reliability.corpus import CORPUS, load_files, load_lines
from tests.reliability.report import full_run

pytestmark = [pytest.mark.reliability]

SCALE = 20 if full_run() else 1  # hypothesis spends ~10 ms an example here (generation included)


def _name(value: object) -> str:
    return value if isinstance(value, str) else ""


def fuzz(examples: int):  # type: ignore[no-untyped-def]
    return settings(max_examples=examples * SCALE, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -- path normalisation --------------------------------------------------------------------------------------

_ALLOWED = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/%")


def check_path(raw: bytes) -> None:
    try:
        path = normalize_path(raw)
    except PathRejected:
        return
    assert path.startswith("/") and "//" not in path, (raw, path)
    assert all(c in _ALLOWED for c in path), (raw, path)
    assert not any(seg in (".", "..") for seg in path.split("/")), (raw, path)
    assert normalize_path(path.encode()) == path, (raw, path)  # normal already: the upstream reads the same


@pytest.mark.parametrize("raw", load_lines("paths.txt"))
def test_path_corpus(raw: bytes) -> None:
    check_path(raw.split(b"?", 1)[0])


PATH_PIECES = st.sampled_from([b"/", b"a", b"B", b".", b"..", b"%2e", b"%2E", b"%2f", b"%5c", b"%25", b"%", b"%4",
                               b"%41", b"%c3%a9", b"%00", b"\\", b";", b"~", b"%7e", b"\x00", b"\x7f", b"\xff", b"?"])


@fuzz(800)
@given(st.one_of(st.binary(max_size=64), st.lists(PATH_PIECES, max_size=16).map(b"".join)))
def test_path_normalisation_never_crashes(raw: bytes) -> None:
    check_path(raw)


# -- route matching ------------------------------------------------------------------------------------------

def method_hits(method: str, template_method: str) -> bool:
    return template_method in (method, "*") or (method == "HEAD" and template_method == "GET")


def reference_match(template: RouteTemplate, method: str, path: str) -> bool:
    """Does `template` match on its own (no precedence), by the rules the README states?"""
    if not method_hits(method, template.method):
        return False
    segs = path[1:].split("/")
    for i, seg in enumerate(template.segments):
        if seg.endswith(":path}"):
            return i < len(segs)
        if i >= len(segs):
            return False
        if seg.startswith("{"):
            if segs[i] == "":
                return False
        elif seg != segs[i]:
            return False
    return len(segs) == len(template.segments)


def check_routes(texts: list[str], method: str, path: str) -> None:
    templates = []
    for text in texts:
        try:
            templates.append(parse_route(text))
        except RouteTemplateError:
            continue
    table = RouteTable((f"cap{i}", t) for i, t in enumerate(templates))
    found = table.match(method, path)
    matching = [t for t in templates if reference_match(t, method, path)]
    assert (found is not None) == bool(matching), (texts, method, path, found)
    if found is not None:
        assert reference_match(found.template, method, path), (texts, method, path, found)
        values = path[1:].split("/")
        params = [v for seg, v in zip(found.template.segments, values, strict=False) if seg.startswith("{")]
        if found.template.segments and found.template.segments[-1].endswith(":path}"):
            params[-1] = "/".join(values[len(found.template.segments) - 1 :])
        assert list(found.params.values()) == params, (texts, path, found)


def _route_corpus() -> list[tuple[list[str], str, str]]:
    out = []
    for line in load_lines("fuzz/routes.txt"):
        templates, _, request = line.decode().partition(" => ")
        method, path = request.split(" ", 1)
        out.append((templates.split(";"), method, path))
    return out


@pytest.mark.parametrize(("templates", "method", "path"), _route_corpus())
def test_route_corpus(templates: list[str], method: str, path: str) -> None:
    check_routes(templates, method, path)


SEGMENT = st.sampled_from(["a", "b", "c", "{x}", "{y}", "{z}", "{r:path}", "", ".", "%41", "a%2fb", "{x", "{r:path}x"])
METHOD = st.sampled_from(["GET", "PUT", "HEAD", "*", "BREW"])
TEMPLATE = st.builds(lambda m, segs: f"{m} /" + "/".join(segs), METHOD, st.lists(SEGMENT, max_size=4))
REQUEST_PATH = st.lists(st.sampled_from(["a", "b", "c", "x", ""]), max_size=5).map(lambda s: "/" + "/".join(s))


@fuzz(500)
@given(st.lists(TEMPLATE, max_size=6), st.sampled_from(["GET", "PUT", "HEAD", "DELETE"]), REQUEST_PATH)
def test_route_matching_agrees_with_the_reference(templates: list[str], method: str, path: str) -> None:
    check_routes(templates, method, path)


@fuzz(300)
@given(st.text(max_size=60))
def test_route_parsing_never_crashes(text: str) -> None:
    try:
        parse_route(text)
    except RouteTemplateError:
        pass


# -- configuration loading -----------------------------------------------------------------------------------

def check_config(text: str) -> None:
    try:
        load_config_text(text, source="fuzz.yaml", env={"SET": "value"})
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.yaml"), str(exc)


@pytest.mark.parametrize(("name", "content"), load_files("fuzz/config"), ids=_name)
def test_config_corpus(name: str, content: bytes) -> None:
    check_config(content.decode("utf-8", "replace"))


BASE_CONFIG = (CORPUS / "fuzz" / "config" / "base.yaml").read_text()
YAML_BITS = st.sampled_from(["{", "}", "[", "]", ":", ": ", "- ", ",", "&a ", "*a", "<<: ", "!!str ", "!!python/name:x",
                             "\n", "\n  ", "#", "'", '"', "${SET}", "${UNSET}", "${X:-d}", "~", "null", "1e9", "-1",
                             "0x1F", "yes", "2024-01-01", "url", "routes", "mode", "upstreams", "\t", "\x00", "é"])


@st.composite
def spliced(draw: st.DrawFn) -> str:
    start = draw(st.integers(0, len(BASE_CONFIG)))
    end = draw(st.integers(start, min(len(BASE_CONFIG), start + 30)))
    insert = "".join(draw(st.lists(YAML_BITS, max_size=6)))
    return BASE_CONFIG[:start] + insert + BASE_CONFIG[end:]


JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12),
                       lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                    max_size=4), max_leaves=20)
KEYS = st.sampled_from(["listen", "workers", "admin", "upstreams", "capabilities", "limits", "store", "flags", "cdc",
                        "precedence", "outcomes", "reconcile", "maturity", "trusted_proxies", "default_upstream"])


@fuzz(250)
@given(st.one_of(spliced(), st.text(max_size=200), st.dictionaries(KEYS, JSONISH, max_size=5).map(
    lambda d: yaml.safe_dump(d, allow_unicode=True))))
def test_config_loading_never_crashes(text: str) -> None:
    check_config(text)


# -- the pgoutput decoder ------------------------------------------------------------------------------------

def _string(text: str) -> bytes:
    return text.encode() + b"\x00"


def _tuple(values: list[bytes | None]) -> bytes:
    out = struct.pack(">H", len(values))
    for v in values:
        out += b"n" if v is None else b"t" + struct.pack(">i", len(v)) + v
    return out


def seed_messages() -> dict[str, bytes]:
    """One valid message of each kind (protocol version 1)."""
    relation = (b"R" + struct.pack(">I", 16384) + _string("public") + _string("customers") + b"d"
                + struct.pack(">H", 2) + b"\x01" + _string("id") + struct.pack(">Ii", 20, -1)
                + b"\x00" + _string("name") + struct.pack(">Ii", 25, -1))
    row = _tuple([b"42", b"Ada"])
    return {
        "begin": b"B" + struct.pack(">QqI", 0x16B3748, 700_000_000_000_000, 771),
        "commit": b"C" + struct.pack(">BQQq", 0, 0x16B3748, 0x16B3780, 700_000_000_000_000),
        "relation": relation,
        "type": b"Y" + struct.pack(">I", 90000) + _string("public") + _string("mood"),
        "insert": b"I" + struct.pack(">I", 16384) + b"N" + row,
        "update": b"U" + struct.pack(">I", 16384) + b"K" + _tuple([b"42", None]) + b"N" + row,
        "update-unchanged-toast": b"U" + struct.pack(">I", 16384) + b"N" + struct.pack(">H", 2) + b"t"
        + struct.pack(">i", 2) + b"42u",
        "delete": b"D" + struct.pack(">I", 16384) + b"K" + _tuple([b"42", None]),
        "truncate": b"T" + struct.pack(">IB", 2, 1) + struct.pack(">II", 16384, 16385),
        "origin": b"O" + struct.pack(">Q", 0x16B3748) + _string("upstream"),
        "message": b"M\x01" + struct.pack(">Q", 0x16B3748) + _string("strangler") + struct.pack(">I", 5) + b"hello",
    }


def check_decode(data: bytes) -> None:
    try:
        decode(data)
    except DecodeError:
        pass


@pytest.mark.parametrize(("name", "content"), load_files("fuzz/pgoutput"), ids=_name)
def test_pgoutput_corpus(name: str, content: bytes) -> None:
    check_decode(content)
    if not name.startswith("bad-"):
        decode(content)  # a valid message of the corpus decodes


def test_pgoutput_seed_messages_are_in_the_corpus() -> None:
    on_disk = dict(load_files("fuzz/pgoutput"))
    assert {f"{name}.bin": data for name, data in seed_messages().items()}.items() <= on_disk.items()


@st.composite
def corrupted(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(list(seed_messages().values()))))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if action == "flip" and data:
            data[i] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[i:]
        else:
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


@fuzz(800)
@given(st.one_of(st.binary(max_size=96), corrupted()))
def test_pgoutput_decoder_never_crashes(data: bytes) -> None:
    check_decode(data)


def write_seed_corpus(directory: Path = CORPUS / "fuzz" / "pgoutput") -> None:
    """Regenerate the seed messages of the pgoutput corpus (run by hand)."""
    for name, data in seed_messages().items():
        (directory / f"{name}.bin").write_bytes(data)
