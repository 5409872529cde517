from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strangler.cli import main
from strangler.config import StranglerConfig, load_config, load_config_text
from strangler.errors import ConfigError
from strangler.gateway.config import parse_listen
from strangler.routing.modes import Mode

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "examples" / "strangler.yaml"

VALID = """\
listen: 127.0.0.1:8080
admin:
  listen: 127.0.0.1:9901
  tokens: {ops: "0123456789abcdef"}
upstreams:
  legacy: {url: "http://127.0.0.1:8001"}
  customers: {url: "http://127.0.0.1:8002", timeout: 5.0}
default_upstream: legacy
capabilities:
  customer-profile:
    legacy: legacy
    new: customers
    routes:
      - GET /customers/{id}
      - PUT /customers/{id}/address
    mode: shadow
"""


def edited(old: str, new: str) -> str:
    assert old in VALID
    return VALID.replace(old, new, 1)


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "strangler.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def config_error(tmp_path: Path, text: str | bytes, env: dict[str, str] | None = None) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env or {})
    return str(info.value)


def test_the_example_configuration_loads() -> None:
    config = load_config(EXAMPLE, env={"STRANGLER_ADMIN_TOKEN": "x" * 32})
    assert config.default_upstream == "legacy"
    assert set(config.upstreams) == {"legacy", "customers"}
    assert config.upstreams["legacy"].url == "http://legacy:8000"
    assert config.admin.tokens["ops"].get_secret_value() == "x" * 32
    assert config.capabilities["customer-profile"].routes == ["GET /customers/{id}", "PUT /customers/{id}/address"]
    assert int(config.limits.max_request_body) == 20_000_000


def test_a_valid_configuration_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID), env={})
    assert isinstance(config, StranglerConfig)
    cap = config.capabilities["customer-profile"]
    assert (cap.legacy, cap.new, cap.mode) == ("legacy", "customers", Mode.SHADOW)
    assert config.upstreams["customers"].timeout == 5.0
    assert config.upstreams["legacy"].retries == 2  # a default


@pytest.mark.parametrize(
    ("text", "key_path", "line", "expected"),
    [
        (edited("    mode: shadow", "    mdoe: shadow"), "capabilities.customer-profile.mdoe", 16,
         "unknown key; did you mean 'mode'?"),
        (edited("listen: 127.0.0.1:8080", "lisen: 127.0.0.1:8080"), "lisen", 1, "did you mean 'listen'?"),
        (edited("timeout: 5.0", "xyzzy: 5.0"), "upstreams.customers.xyzzy", 7, "unknown key; expected one of url,"),
        (edited("    legacy: legacy\n    new", "    new"), "capabilities.customer-profile.legacy", 10,
         "required key is missing"),
        (edited("{url: \"http://127.0.0.1:8001\"}", "{timeout: 3}"), "upstreams.legacy.url", 6,
         "required key is missing"),
        (edited("mode: shadow", "mode: sideways"), "capabilities.customer-profile.mode", 16,
         "'legacy', 'shadow', 'canary', 'new' or 'new-only', got 'sideways'"),
        (edited("- PUT /customers/{id}/address", "- PUT customers/{id}"), "capabilities.customer-profile.routes[1]", 15,
         "path must start with '/'"),
        (edited("- PUT /customers/{id}/address", "- PUT /customers/{id}/{id}"),
         "capabilities.customer-profile.routes[1]", 15, "parameter {id} appears twice"),
        (edited("new: customers", "new: customerz"), "capabilities.customer-profile.new", 12,
         "unknown upstream 'customerz' (customers, legacy)"),
        (edited("default_upstream: legacy", "default_upstream: legasy"), "default_upstream", 8,
         "unknown upstream 'legasy'"),
        (edited("default_upstream: legacy", "default_upstream: legacy\ndefault_upstream: customers"),
         "default_upstream", 9, "duplicate key"),
        (edited("listen: 127.0.0.1:8080", "listen: localhost"), "listen", 1, "expected HOST:PORT"),
        (edited("listen: 127.0.0.1:8080", "listen: 127.0.0.1:80800"), "listen", 1, "expected HOST:PORT"),
        (edited("listen: 127.0.0.1:9901", "listen: '::1:9901'"), "admin.listen", 3, "expected HOST:PORT"),
        (edited('{ops: "0123456789abcdef"}', "{ops: short-token}"), "admin.tokens.ops", 4,
         "at least 16 characters"),
        (edited('url: "http://127.0.0.1:8002"', 'url: "ftp://files"'), "upstreams.customers.url", 7,
         "expected an http:// or https:// URL"),
        (edited("    mode: shadow", "    mode: canary"), "capabilities.customer-profile", 10,
         "canary mode needs 'sticky'"),
        (edited("default_upstream: legacy", "default_upstream: legacy\ntrusted_proxies: [10.0.0.0/8, proxy]"),
         "trusted_proxies[1]", 9, "expected an IP address or CIDR network, got 'proxy'"),
        (edited("default_upstream: legacy", "default_upstream: legacy\nworkers: many"), "workers", 9,
         "valid integer"),
    ],
)
def test_each_error_names_the_file_the_key_path_and_the_line(
    tmp_path: Path, text: str, key_path: str, line: int, expected: str
) -> None:
    message = config_error(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'strangler.yaml'}:{line}: {key_path}: ")
    assert expected in message
    assert "\n" not in message  # one problem, one line


def test_overlapping_routes_across_capabilities_name_both(tmp_path: Path) -> None:
    text = VALID + "  account:\n    legacy: legacy\n    routes: [\"GET /orders\", \"* /customers/me\"]\n"
    message = config_error(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'strangler.yaml'}:19: capabilities.account.routes[1]: ")
    assert "'* /customers/me' overlaps 'GET /customers/{id}'" in message
    assert "(capabilities.customer-profile.routes[0])" in message


def test_overlapping_routes_within_one_capability_are_allowed(tmp_path: Path) -> None:
    text = edited("- PUT /customers/{id}/address", "- GET /customers/me")
    config = load_config(write(tmp_path, text), env={})
    assert config.capabilities["customer-profile"].routes[1] == "GET /customers/me"


def test_a_missing_environment_variable_is_named(tmp_path: Path) -> None:
    text = edited('"0123456789abcdef"', '"${STRANGLER_ADMIN_TOKEN}"')
    message = config_error(tmp_path, text, env={})
    assert message == (
        f"{tmp_path / 'strangler.yaml'}:4: admin.tokens.ops: environment variable STRANGLER_ADMIN_TOKEN is not set"
    )


@pytest.mark.parametrize(
    ("env", "store"),
    [
        ({}, "sqlite:///fallback.db"),
        ({"STORE": ""}, "sqlite:///fallback.db"),  # ':-' also replaces an empty value, as in the shell
        ({"STORE": "postgresql+psycopg://db/strangler"}, "postgresql+psycopg://db/strangler"),
    ],
)
def test_a_variable_with_a_default(tmp_path: Path, env: dict[str, str], store: str) -> None:
    text = VALID + 'store: "${STORE:-sqlite:///fallback.db}"\n'
    assert load_config(write(tmp_path, text), env=env).store == store


def test_variables_are_interpolated_inside_values_only(tmp_path: Path) -> None:
    env = {"HOST": "10.1.2.3", "PORT": "8001", "INJECT": "x\nworkers: 64"}
    text = edited('"http://127.0.0.1:8001"', '"http://${HOST}:${PORT}/base"') + 'store: "${INJECT}"\n'
    config = load_config(write(tmp_path, text), env=env)
    assert config.upstreams["legacy"].url == "http://10.1.2.3:8001/base"
    assert config.store == "x\nworkers: 64"
    assert config.workers == 2


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        ("upstreams:\n  legacy: {url: http://x\n", 3, "not valid YAML"),
        ("listen: 127.0.0.1:8080\n  workers: 2\n", 2, "not valid YAML: mapping values are not allowed here"),
        ("a: [1, 2\n", 2, "not valid YAML"),
        ("listen: \"unterminated\n", 2, "not valid YAML"),
        ("\tlisten: x\n", 1, "not valid YAML"),
        ("listen: a\x00b\n", 1, "not valid YAML: character #x0000 is not allowed"),
        ("--- {}\n--- {}\n", 2, "not valid YAML: expected a single document"),
    ],
)
def test_invalid_yaml_is_reported_with_its_line(tmp_path: Path, text: str, line: int, expected: str) -> None:
    message = config_error(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'strangler.yaml'}:{line}: <root>: ")
    assert expected in message


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_an_empty_file_is_an_error(tmp_path: Path, text: str) -> None:
    assert "the file is empty" in config_error(tmp_path, text)


@pytest.mark.parametrize(("text", "line"), [("- listen\n", 1), ("just text\n", 1), ("# c\n\n42\n", 3), ("null\n", 1)])
def test_the_top_level_must_be_a_mapping(tmp_path: Path, text: str, line: int) -> None:
    message = config_error(tmp_path, text)
    assert message == f"{tmp_path / 'strangler.yaml'}:{line}: <root>: expected a mapping of keys at the top level"


def test_a_file_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(missing, env={})
    assert str(info.value).startswith(f"{missing}: <root>: cannot read the file")
    assert "not UTF-8" in config_error(tmp_path, b"listen: caf\xe9\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: &x [*x]\n", "an alias refers to a node that contains it"),
        ("a: &x {b: *x}\n", "an alias refers to a node that contains it"),
        (
            "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
            + "".join(f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcde", "bcdef", strict=True)),
            "more than 100000 values",
        ),
        ("workers: !!python/object/apply:os.system [echo]\n", "tag 'tag:yaml.org,2002:python/object/apply:os.system'"),
        ("a: !!set {x}\n", "is not supported here"),
        ("workers: !!python/name:os.system x\n", "could not determine a constructor"),
        ("workers: !!int abc\n", "cannot read the value 'abc'"),
        ("workers: !!timestamp 2020-99-99\n", "cannot read the value '2020-99-99'"),
        ("a: " + "[" * 1000 + "]" * 1000 + "\n", "nested too deeply"),
        ("a: " + "[" * 100 + "]" * 100 + "\n", "nested more than 64 levels deep"),
        ("? [a, b]\n: 1\n", "keys must be plain strings"),
        ("upstreams:\n  a:\n    <<: not-a-mapping\n", "'<<' merges only mappings"),
    ],
    ids=lambda value: value[:24] if isinstance(value, str) else None,
)
def test_hostile_or_broken_yaml_is_a_config_error_not_a_crash(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in config_error(tmp_path, text)


def test_merge_keys_apply_with_own_keys_winning(tmp_path: Path) -> None:
    text = edited(
        '  customers: {url: "http://127.0.0.1:8002", timeout: 5.0}',
        '  customers:\n    timeout: 9.0\n    <<: &defaults {url: "http://127.0.0.1:8002", timeout: 5.0, retries: 0}',
    )
    config = load_config(write(tmp_path, text), env={})
    customers = config.upstreams["customers"]
    assert (customers.url, customers.timeout, customers.retries) == ("http://127.0.0.1:8002", 9.0, 0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("localhost:65535", ("localhost", 65535)),
        ("[::1]:9901", ("::1", 9901)),
        ("[::]:80", ("::", 80)),
    ],
)
def test_parse_listen(value: str, expected: tuple[str, int]) -> None:
    assert parse_listen(value) == expected


@pytest.mark.parametrize(
    "value",
    ["", "8080", ":8080", "localhost", "localhost:", "host:http", "host:-1", "host:65536", "host:٨٠", "::1:8080",
     "[::1:8080", "[nope]:80", "a b:80", "http://host:80"],
)
def test_parse_listen_rejects(value: str) -> None:
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        parse_listen(value)


_MUTATIONS = st.sampled_from(["", ":", "{", "}", "[", "]", "-", " ", "\n", "  ", "&a", "*a", "!!", "${X}", "'", "x"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_damaged_configuration_never_raises_anything_but_config_error(data: st.DataObject) -> None:
    start = data.draw(st.integers(0, len(VALID)))
    end = data.draw(st.integers(start, min(len(VALID), start + 12)))
    text = VALID[:start] + data.draw(_MUTATIONS) + VALID[end:]
    try:
        load_config_text(text, source="damaged.yaml", env={})
    except ConfigError as exc:
        assert str(exc).startswith("damaged.yaml")


def test_check_command_accepts_a_valid_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, VALID)
    assert main(["check", "-c", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"ok: {path}")
    assert err == ""


def test_check_command_accepts_the_example(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STRANGLER_ADMIN_TOKEN", "t" * 24)
    assert main(["check", "-c", str(EXAMPLE)]) == 0
    assert capsys.readouterr().out.startswith("ok: ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (edited("    mode: shadow", "    mdoe: shadow"), ":16: capabilities.customer-profile.mdoe: unknown key"),
        ("", ":1: <root>: the file is empty"),
        ("a: &x [*x]\n", "an alias refers to a node that contains it"),
        ("workers: !!python/object/apply:os.system [echo]\n", "workers: the tag"),
        ("upstreams: {legacy: {url: x\n", "not valid YAML"),
    ],
)
def test_check_command_reports_a_bad_file_on_stderr_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    assert main(["check", "-c", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"error: {path}")
    assert expected in err
    assert "Traceback" not in err


def test_check_command_reports_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert "missing.yaml" in err and "cannot read the file" in err
