"""C4: 100 generated mutations of a valid configuration. `strangler check` rejects every one with exit 2 and
a message that names the mutated key, and none with a traceback. Run in-process through `strangler.cli.main`
(fast), and a handful as `python -m strangler check` processes.

Mutations, each chosen so that the result is invalid whatever the key: a value of the wrong type, a
misspelled key in a model, a required key removed, a reference to nothing, and malformed strings of the
formats the configuration reads (listen addresses, URLs, routes, sticky keys, sizes, pointers, networks)."""

from __future__ import annotations

import copy
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from strangler.cli import main
from strangler.config import format_path, load_config_text
from tests.reliability.report import record

pytestmark = [pytest.mark.reliability]

BASE: dict[str, Any] = {
    "listen": "127.0.0.1:8080",
    "workers": 2,
    "admin": {"listen": "127.0.0.1:9901", "tokens": {"ops": "0123456789abcdef0123"}},
    "store": "sqlite:///strangler.db",
    "flags": {"refresh_interval": 1.0},
    "trusted_proxies": ["10.0.0.0/8"],
    "upstreams": {
        "legacy": {"url": "http://127.0.0.1:8001", "connect_timeout": 1.0, "timeout": 5.0, "pool_size": 50,
                   "retries": 2, "circuit_breaker": {"failures": 5, "interval": 3.0}},
        "customers": {"url": "http://127.0.0.1:8002", "preserve_host": False},
    },
    "default_upstream": "legacy",
    "limits": {"max_header_bytes": "32KB", "header_timeout": 10, "max_request_body": "10MB", "drain_timeout": 5,
               "retry_budget": 0.2},
    "access_log": {"enabled": False},
    "capabilities": {
        "customer-profile": {
            "legacy": "legacy", "new": "customers", "routes": ["GET /customers/{id}", "PUT /customers/{id}/address"],
            "mode": "canary", "percent": 10, "sticky": "path:id", "unkeyed": "legacy",
            "shadow": {"writes": "skip", "sample": 1.0, "max_body": "1MB", "timeout": 5.0},
            "compare": {"ignore": ["/updated_at"], "redact": ["/ssn"], "headers": ["content-type"]},
            "gate": {"min_samples": 10, "max_divergence_rate": 0.01},
        },
        "policy": {"legacy": "legacy", "routes": ["GET /policies/{id}"]},
    },
}
FREE_FORM = {("upstreams",), ("capabilities",), ("admin", "tokens")}  # mappings whose keys are names
REQUIRED = [("upstreams", "legacy", "url"), ("upstreams", "customers", "url"),
            ("capabilities", "customer-profile", "legacy"), ("capabilities", "customer-profile", "routes"),
            ("capabilities", "policy", "routes"), ("capabilities", "policy", "legacy")]
REFERENCES = [("default_upstream",), ("capabilities", "customer-profile", "legacy"),
              ("capabilities", "customer-profile", "new"), ("capabilities", "policy", "legacy")]
MALFORMED: list[tuple[tuple[str | int, ...], list[Any]]] = [
    (("listen",), ["localhost", "127.0.0.1:99999", "::1:80", "[fe80::zz]:80"]),
    (("admin", "listen"), ["9901", "host name:80"]),
    (("upstreams", "legacy", "url"), ["ftp://legacy", "not a url", "http://", "http://h/?q=1"]),
    (("capabilities", "customer-profile", "routes", 0), ["FETCH /x", "GET customers", "GET /a/{", "GET /{x}/{x}"]),
    (("capabilities", "customer-profile", "sticky"), ["body:x", "path:", "cookie"]),
    (("capabilities", "customer-profile", "mode"), ["sideways", "NEW", ""]),
    (("limits", "max_request_body"), ["12XB", "-5MB", "lots"]),
    (("capabilities", "customer-profile", "compare", "ignore", 0), ["updated_at", "x/y"]),
    (("trusted_proxies", 0), ["10.0.0.300/8", "proxy.example"]),
    (("admin", "tokens", "ops"), ["short"]),
    (("limits", "retry_budget"), [1.5, -0.1]),
    (("workers",), [0, 65, -1]),
    (("capabilities", "customer-profile", "percent"), [101, -1]),
    (("upstreams", "legacy", "timeout"), [0, -1.0]),
]


def leaves(node: Any, path: tuple[str | int, ...] = ()) -> list[tuple[tuple[str | int, ...], Any]]:
    out = [(path, node)] if path else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += leaves(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += leaves(value, (*path, i))
    return out


def wrong_type(value: Any) -> Any:
    if isinstance(value, bool):
        return "perhaps"
    if isinstance(value, int | float):
        return "not-a-number"
    if isinstance(value, str):
        return {"nested": ["mapping"]}
    if isinstance(value, list):
        return 42
    return [1, 2]


def set_at(doc: Any, path: tuple[str | int, ...], value: Any) -> None:
    for part in path[:-1]:
        doc = doc[part]
    doc[path[-1]] = value


def mutations(n: int, seed: int = 4) -> list[tuple[str, tuple[str | int, ...], dict[str, Any]]]:
    """(kind, the key path the error must name, the mutated document)."""
    rng = random.Random(seed)
    typed = [(p, v) for p, v in leaves(BASE) if p[:-1] not in FREE_FORM and p not in FREE_FORM]
    models = [p for p, v in leaves(BASE) if isinstance(v, dict) and p not in FREE_FORM] + [()]
    out = []
    kinds = ["wrong_type", "unknown_key", "missing", "reference", "malformed"]
    for i in range(n):
        kind = kinds[i % len(kinds)]
        doc = copy.deepcopy(BASE)
        if kind == "wrong_type":
            path, value = rng.choice(typed)
            set_at(doc, path, wrong_type(value))
        elif kind == "unknown_key":
            model = rng.choice(models)
            target = doc
            for part in model:
                target = target[part]
            known = sorted(target) or ["key"]
            typo = rng.choice(known)
            name = typo[:-1] + ("x" if typo[-1] != "x" else "y") if typo else "typo"
            path = (*model, name)
            target[name] = 1
        elif kind == "missing":
            path = rng.choice(REQUIRED)
            target = doc
            for part in path[:-1]:
                target = target[part]
            del target[path[-1]]
        elif kind == "reference":
            path = rng.choice(REFERENCES)
            set_at(doc, path, rng.choice(["nowhere", "Legacy", "legacy "]))
        else:
            path, values = rng.choice(MALFORMED)
            set_at(doc, path, rng.choice(values))
        out.append((kind, path, doc))
    return out


def test_the_base_configuration_is_valid() -> None:
    load_config_text(yaml.safe_dump(BASE), env={})


def test_every_mutation_is_rejected_naming_its_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    failures = []
    kinds: dict[str, int] = {}
    for i, (kind, path, doc) in enumerate(mutations(100)):
        config = tmp_path / f"mutation-{i:03d}.yaml"
        config.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        code = main(["check", "-c", str(config)])
        out, err = capsys.readouterr()
        key = format_path(path)
        named = f": {key}:" in err or f": {key}[" in err or f": {key}." in err
        if code != 2 or not named or "Traceback" in out + err:
            failures.append((i, kind, key, code, err.strip()[:300]))
        kinds[kind] = kinds.get(kind, 0) + 1
    record("C4", f"100 mutations ({kinds})", f"{100 - len(failures)} rejected with exit 2 naming the key; "
           f"{len(failures)} not")
    assert failures == []


def test_a_handful_as_processes(tmp_path: Path) -> None:
    for i, (_, path, doc) in enumerate(mutations(100)[::20]):
        config = tmp_path / f"process-{i}.yaml"
        config.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        result = subprocess.run([sys.executable, "-m", "strangler", "check", "-c", str(config)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, result.stderr
        assert format_path(path) in result.stderr
        assert "Traceback" not in result.stdout + result.stderr
