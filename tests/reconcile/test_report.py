"""Open drift in `strangler report` (table and JSON) and in `GET /drift`, read from a real SQLite store
seeded through the drift store's own operations."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
from rich.console import Console

from strangler.cli import main
from strangler.config import StranglerConfig, load_config
from strangler.reconcile.drift import EntityDrift, FieldDrift
from strangler.reconcile.report import drift_jobs, jobs_of_capability, render_drift_table
from strangler.reconcile.store import SqlDriftStore
from strangler.store import create_store_engine, upgrade_schema

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
CONFIG = """
store: sqlite:///{store}
upstreams: {{legacy: {{url: "http://127.0.0.1:1"}}, customers: {{url: "http://127.0.0.1:2"}}}}
capabilities:
  customer-profile: {{legacy: legacy, new: customers, routes: ["GET /customers/{{id}}"]}}
  policy: {{legacy: legacy, new: customers, routes: ["GET /policies/{{id}}"]}}
precedence:
  entities:
    customer:
      capability: customer-profile
      groups: {{contact: {{fields: [/email], authority: legacy}}}}
reconcile:
  jobs:
    customers:
      entity: customer
      legacy: {{url: "postgresql+psycopg://crm@127.0.0.1:1/crm", table: crm.customers, key: [id]}}
      new: {{url: "postgresql+psycopg://profile@127.0.0.1:1/profile", table: customers, key: [customer_id]}}
      fields: {{email: email}}
    policies:
      entity: policy
      legacy: {{url: "postgresql+psycopg://crm@127.0.0.1:1/crm", table: crm.policies, key: [id]}}
      new: {{url: "postgresql+psycopg://profile@127.0.0.1:1/profile", table: policies, key: [policy_id]}}
      fields: {{premium: premium}}
      no_authority: report
"""


def email_drift(key: int, new: str | None = "other@example.org") -> EntityDrift:
    return EntityDrift((key,), (FieldDrift("email", f"user{key}@example.org", new, "non-authoritative", "legacy"),))


@pytest.fixture
def seeded(tmp_path: Path) -> tuple[Path, StranglerConfig]:
    path = tmp_path / "strangler.yaml"
    path.write_text(CONFIG.format(store=tmp_path / "store.db"))
    config = load_config(path)
    upgrade_schema(config.store)
    store = SqlDriftStore(create_store_engine(config.store))
    run = store.open_run("customers", "f1", json.dumps({"config": "f1"}), T0)
    run = store.chunk_done(run, 0, [email_drift(7), email_drift(42)], 1000, 0, T0)
    store.finish(run, T0 + dt.timedelta(seconds=30), resolve=True)
    later = T0 + dt.timedelta(hours=2)
    run = store.open_run("customers", "f1", json.dumps({"config": "f1"}), later)
    run = store.chunk_done(run, 0, [email_drift(7), email_drift(42), email_drift(99, None)], 1000, 0, later)
    store.finish(run, later + dt.timedelta(seconds=30), resolve=True)
    return path, config


def test_drift_jobs_give_figures_last_run_and_entities_with_their_age(seeded: tuple[Path, StranglerConfig]) -> None:
    _, config = seeded
    store = SqlDriftStore(create_store_engine(config.store))
    now = T0 + dt.timedelta(hours=3)
    customers, policies = drift_jobs(store, config.reconcile.jobs, ["customers", "policies"], now)
    assert (customers["job"], customers["entity"], customers["drifted_entities"]) == ("customers", "customer", 3)
    assert customers["oldest_drift_seconds"] == 3 * 3600.0
    assert (customers["last_run"]["status"], customers["last_run"]["compared"]) == ("done", 1000)
    ages = {e["entity_key"]: e["age_seconds"] for e in customers["drifted"]}
    assert ages == {"7": 3 * 3600.0, "42": 3 * 3600.0, "99": 3600.0}
    assert customers["drifted"][0]["key"] == {"id": 7}
    assert (policies["drifted_entities"], policies["last_run"], policies["drifted"]) == (0, None, [])
    assert jobs_of_capability(config.reconcile.jobs, config.precedence, "customer-profile") == ["customers"]
    assert jobs_of_capability(config.reconcile.jobs, config.precedence, "policy") == []


def test_report_json_has_the_open_drift_of_every_job(seeded: tuple[Path, StranglerConfig],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = seeded
    assert main(["report", "-c", str(path), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [j["job"] for j in report["drift"]] == ["customers", "policies"]
    customers = report["drift"][0]
    assert customers["drifted_entities"] == 3
    assert {(e["entity_key"], f["field"], f["legacy"], f["new"], f["classification"])
            for e in customers["drifted"] for f in e["fields"]} == {
        ("7", "email", "user7@example.org", "other@example.org", "non-authoritative"),
        ("42", "email", "user42@example.org", "other@example.org", "non-authoritative"),
        ("99", "email", "user99@example.org", None, "non-authoritative"),
    }
    assert all(e["age_seconds"] > 0 for e in customers["drifted"])
    assert "capabilities" in report  # the divergence report is still there


def test_report_for_one_capability_has_only_the_jobs_of_its_entities(seeded: tuple[Path, StranglerConfig],
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = seeded
    assert main(["report", "-c", str(path), "--format", "json", "--capability", "policy"]) == 0
    assert json.loads(capsys.readouterr().out)["drift"] == []
    assert main(["report", "-c", str(path), "--format", "json", "--capability", "customer-profile",
                 "--drift-limit", "1"]) == 0
    [customers] = json.loads(capsys.readouterr().out)["drift"]
    assert customers["drifted_entities"] == 3 and len(customers["drifted"]) == 1  # figures count them all


def test_report_table_shows_each_job_and_its_oldest_drift(seeded: tuple[Path, StranglerConfig],
                                                          capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = seeded
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["report", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "State drift (reconciliation)" in out
    assert "customers" in out and "never run" in out  # the policies job
    assert "Drift: customers (oldest first)" in out and "user42@example.org" in out


def test_a_drift_limit_below_one_is_bad_input(seeded: tuple[Path, StranglerConfig],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = seeded
    assert main(["report", "-c", str(path), "--drift-limit", "0"]) == 2
    assert "--drift-limit must be at least 1" in capsys.readouterr().err


def test_the_drift_table_says_how_many_entities_are_not_shown() -> None:
    console = Console(record=True, width=200)
    entry = {"entity_key": "1", "age_seconds": 90.0, "fields": [
        {"field": "email", "legacy": "a", "new": "b", "first_seen": "2026-03-01T12:00",
         "classification": "no-authority"}
    ]}
    job = {"job": "customers", "entity": "customer", "drifted_entities": 5, "oldest_drift_seconds": 90.0,
           "last_run": None, "drifted": [entry] * 3}
    render_drift_table(console, [job], entities=2)
    out = console.export_text()
    assert "1.5m" in out and "3 more drifted entities of customers not shown" in out


def test_the_html_report_shows_the_drift_beside_the_divergences(seeded: tuple[Path, StranglerConfig],
                                                                tmp_path: Path) -> None:
    path, _ = seeded
    out = tmp_path / "report.html"
    assert main(["report", "-c", str(path), "--format", "html", "-o", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert page.lstrip().lower().startswith("<!doctype html>") and "customer-profile" in page
    assert "State drift (reconciliation)" in page and 'id="drift-customers"' in page
    assert 'id="drift-policies"' not in page  # a job without drift has its summary row only
    rows = re.findall(r"<tr>\s*<td><code>(\d+)</code></td><td><code>(\w+)</code></td>\s*"
                      r"<td><code>([^<]*)</code></td><td><code>([^<]*)</code></td>\s*<td>([\w-]+)</td>", page)
    assert set(rows) == {("7", "email", "user7@example.org", "other@example.org", "non-authoritative"),
                         ("42", "email", "user42@example.org", "other@example.org", "non-authoritative"),
                         ("99", "email", "user99@example.org", "None", "non-authoritative")}


def test_the_html_report_without_reconciliation_has_no_drift_section() -> None:
    from strangler.shadow.report import render_html

    page = render_html({"generated_at": "2026-01-01T00:00:00Z", "capabilities": []})
    assert "State drift" not in page and "No capabilities." in page
