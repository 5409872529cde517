"""deploy/: every Kubernetes manifest and the compose file are valid against their schemas (offline: the
Kubernetes schemas ship with kubernetes-validate, the compose spec with check-jsonschema), the manifests keep
the properties operations rely on, and every example configuration passes `strangler check`."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from strangler.cli import main as strangler

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MANIFESTS = sorted((DEPLOY / "k8s").glob("*.yaml"))
EXAMPLES = sorted((DEPLOY / "examples").glob("*.yaml"))
ENV = {"STRANGLER_ADMIN_TOKEN": "0123456789abcdef0123", "STRANGLER_STORE": "postgresql+psycopg://u:p@db/strangler",
       "LEGACY_DSN": "postgresql://u:p@legacy/legacy", "KAFKA_BOOTSTRAP": "kafka:9092"}
K8S_VERSION = "1.30.0"


def _documents() -> list[tuple[str, dict[str, Any]]]:
    return [(f"{path.name}[{i}]", doc) for path in MANIFESTS
            for i, doc in enumerate(yaml.safe_load_all(path.read_text(encoding="utf-8"))) if doc]


def _kind(kind: str, name: str) -> dict[str, Any]:
    return next(doc for _, doc in _documents() if doc["kind"] == kind and doc["metadata"]["name"] == name)


@pytest.mark.parametrize(("where", "document"), _documents(), ids=[w for w, _ in _documents()])
def test_every_manifest_is_valid_kubernetes(where: str, document: dict[str, Any]) -> None:
    kubernetes_validate.validate(document, K8S_VERSION, strict=True)


def test_an_invalid_manifest_is_caught() -> None:
    broken = _kind("Deployment", "strangler-cdc") | {"spec": {"replicas": "one"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_the_manifests_have_what_operations_rely_on() -> None:
    kinds = {doc["kind"] for _, doc in _documents()}
    assert {"Deployment", "PodDisruptionBudget", "Service", "ConfigMap", "Secret"} <= kinds
    gateway = _kind("Deployment", "strangler-gateway")["spec"]["template"]["spec"]["containers"][0]
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    cdc = _kind("Deployment", "strangler-cdc")["spec"]
    assert cdc["replicas"] == 1 and cdc["strategy"]["type"] == "Recreate"
    pdb = _kind("PodDisruptionBudget", "strangler-gateway")["spec"]
    assert pdb["selector"] == _kind("Deployment", "strangler-gateway")["spec"]["selector"]
    secret = _kind("Secret", "strangler-secrets")["stringData"]
    assert set(ENV) <= set(secret)


def test_the_config_map_carries_the_kubernetes_example() -> None:
    carried = _kind("ConfigMap", "strangler-config")["data"]["strangler.yaml"]
    assert carried == (DEPLOY / "examples" / "kubernetes.yaml").read_text(encoding="utf-8")


def test_the_compose_file_is_valid_against_the_compose_spec() -> None:
    schema = json.loads((files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json")
                        .read_text(encoding="utf-8"))
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    jsonschema.validate(compose, schema)
    assert "wal_level=logical" in compose["services"]["postgres"]["command"]
    assert "broker,controller" in compose["services"]["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    assert compose["services"]["connect"]["profiles"] == ["debezium"]
    for service in ("gateway", "cdc", "events"):
        mounted = compose["services"][service]["volumes"][0].split(":")[0]
        assert (DEPLOY / mounted).exists(), mounted
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**compose, "services": {"x": {"image": 3}}}, schema)


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_configuration_passes_strangler_check(
    example: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    assert strangler(["check", "-c", str(example)]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.startswith(f"ok: {example}")
