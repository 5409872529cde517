"""`strangler flags list / set / history` as a subprocess against a running `strangler serve` (SQLite store).

Exit codes: 0 done, 2 bad input, 3 refused by the gate, 4 version conflict (1: the admin API unreachable).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.gateway import ADMIN_TOKEN, GatewayProcess
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

CAP = "customer-profile"


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    directory = tmp_path_factory.mktemp("flags-cli")
    unused = f"http://127.0.0.1:{free_port()}"  # no request is proxied here
    config = {
        "workers": 1,
        "store": f"sqlite:///{directory / 'flags.db'}",
        "flags": {"refresh_interval": 0.5},
        "upstreams": {"legacy": {"url": unused}, "customers": {"url": unused}},
        "default_upstream": "legacy",
        "capabilities": {
            CAP: {"legacy": "legacy", "new": "customers", "routes": ["GET /customers/{id}"], "sticky": "path:id",
                  "gate": {"min_samples": 200, "max_divergence_rate": 0.01}},
            "billing": {"legacy": "legacy", "routes": ["* /billing/{rest:path}"]},
        },
    }
    gateway = GatewayProcess(config, directory).start()
    yield gateway
    gateway.stop()


def flags(serve: GatewayProcess, *args: str, env: dict[str, str] | None = None,
          config: bool = True) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "STRANGLER_ADMIN_TOKEN"}
    environment["COLUMNS"] = "200"  # rich wraps tables to the terminal; a pipe would get 80 columns
    environment.update(env or {})
    command = [sys.executable, "-m", "strangler", "flags", *(["-c", str(serve.config_path)] if config else []), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=environment)


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(result.stdout)


def current_version(serve: GatewayProcess) -> int:
    listed = httpx.get(f"{serve.admin_url}/flags", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}).json()
    return int(next(f for f in listed["flags"] if f["capability"] == CAP)["version"])


def test_list_prints_a_table_and_json(serve: GatewayProcess) -> None:
    table = flags(serve, "list")
    assert table.returncode == 0, table.stderr
    assert CAP in table.stdout and "billing" in table.stdout and "flag store: up" in table.stdout
    for args in (("--json", "list"), ("list", "--json")):
        listed = flags(serve, *args)
        assert listed.returncode == 0, listed.stderr
        data = as_json(listed)
        assert {f["capability"] for f in data["flags"]} == {CAP, "billing"}
        assert data["flag_store"] == "up"


def test_set_refused_by_the_gate_exits_3_with_the_evidence(serve: GatewayProcess) -> None:
    result = flags(serve, "set", CAP, "new", "--reason", "looks fine to me")
    assert result.returncode == 3, result.stderr
    assert "412" in result.stderr and "0 samples (need 200)" in result.stderr
    as_json_result = flags(serve, "set", CAP, "new", "--reason", "looks fine to me", "--json")
    assert as_json_result.returncode == 3
    assert as_json(as_json_result)["evidence"]["min_samples"] == 200


def test_set_flips_and_history_shows_it(serve: GatewayProcess) -> None:
    before = current_version(serve)
    result = flags(serve, "set", CAP, "canary", "--percent", "5", "--reason", "first users", "--force", "--json")
    assert result.returncode == 0, result.stderr
    flipped = as_json(result)
    assert (flipped["mode"], flipped["percent"], flipped["version"], flipped["updated_by"]) == (
        "canary", 5.0, before + 1, "ops"
    )
    table = flags(serve, "set", CAP, "shadow", "--reason", "step back", "--expect-version", str(before + 1))
    assert table.returncode == 0, table.stderr
    assert f"version {before + 2}" in table.stdout
    history = flags(serve, "history", CAP, "--json")
    assert history.returncode == 0, history.stderr
    entries = as_json(history)["history"]
    assert [(e["to"]["mode"], e["reason"], e["actor"], e["forced"]) for e in entries[:2]] == [
        ("shadow", "step back", "ops", False), ("canary", "first users", "ops", True)
    ]
    shown = flags(serve, "history", CAP)
    assert shown.returncode == 0 and "first users" in shown.stdout and "step back" in shown.stdout


def test_a_stale_expected_version_exits_4(serve: GatewayProcess) -> None:
    version = current_version(serve)
    assert flags(serve, "set", CAP, "legacy", "--reason", "one", "--expect-version", str(version)).returncode == 0
    stale = flags(serve, "set", CAP, "legacy", "--reason", "two", "--expect-version", str(version))
    assert stale.returncode == 4, stale.stderr
    assert f"current: legacy version {version + 1}" in stale.stderr
    stale_json = flags(serve, "set", CAP, "legacy", "--reason", "two", "--expect-version", str(version), "--json")
    assert (stale_json.returncode, as_json(stale_json)["current"]["version"]) == (4, version + 1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("set", CAP, "canary", "--percent", "150", "--reason", "x"), "percent"),
        (("set", CAP, "canary", "--reason", "x"), "percent"),
        (("set", CAP, "shadow", "--reason", "  "), "reason"),
        (("set", "billing", "new", "--reason", "x", "--force"), "mode"),
        (("set", "no-such-capability", "legacy", "--reason", "x"), "no-such-capability"),
        (("history", "no-such-capability"), "no-such-capability"),
        (("set", CAP, "sideways", "--reason", "x"), "invalid choice"),
        (("set", CAP, "legacy"), "--reason"),
        (("set", CAP, "canary", "--percent", "lots", "--reason", "x"), "invalid float"),
    ],
)
def test_bad_input_exits_2_and_says_what_is_wrong(serve: GatewayProcess, args: tuple[str, ...], message: str) -> None:
    version = current_version(serve)
    result = flags(serve, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in result.stderr
    assert current_version(serve) == version


def test_admin_url_and_token_from_the_environment(serve: GatewayProcess) -> None:
    result = flags(serve, "--admin-url", serve.admin_url, "list", "--json", config=False,
                   env={"STRANGLER_ADMIN_TOKEN": ADMIN_TOKEN})
    assert result.returncode == 0, result.stderr
    assert {f["capability"] for f in as_json(result)["flags"]} == {CAP, "billing"}
    wrong = flags(serve, "--admin-url", serve.admin_url, "list", config=False,
                  env={"STRANGLER_ADMIN_TOKEN": "not-the-token-0123456789"})
    assert wrong.returncode == 2 and "401" in wrong.stderr


def test_an_unreachable_admin_api_exits_1(serve: GatewayProcess, tmp_path: Path) -> None:
    result = flags(serve, "--admin-url", f"http://127.0.0.1:{free_port()}", "--token", ADMIN_TOKEN, "list",
                   config=False)
    assert result.returncode == 1
    assert "cannot reach the admin API" in result.stderr


def test_a_stale_listing_says_so_under_the_table() -> None:
    from rich.console import Console

    from strangler.routing.cli import _print_flags

    console = Console(record=True, width=200)
    flag = {"capability": CAP, "mode": "shadow", "percent": 0.0, "version": 3, "updated_at": None,
            "updated_by": "ops", "reason": "start"}
    _print_flags(console, {"flags": [flag], "flag_store": "unreachable", "flags_age_seconds": 12.0, "stale": True,
                           "as_of": "2026-11-27T07:00:00+00:00", "flag_store_error": "flag store: OperationalError"})
    out = console.export_text()
    assert "flag store: unreachable" in out
    assert "stale: the flags the gateway routes by from memory, as of 2026-11-27T07:00:00+00:00" in out
    _print_flags(console, {"flags": [flag], "flag_store": "up", "flags_age_seconds": 0.2, "stale": False})
    assert "stale" not in console.export_text()
