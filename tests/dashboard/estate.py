"""A small admin estate for the dashboard tests: a configuration on a temporary SQLite store, the admin
process built by `strangler.app.build_admin`, and comparisons seeded into its divergence store."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from strangler.app import AdminParts, build_admin
from strangler.config import StranglerConfig, load_config_text
from strangler.dashboard import CdcStatusSource
from strangler.gateway.admin import registry_metrics
from strangler.shadow.compare import FieldDifference
from strangler.shadow.records import ComparisonRecord
from strangler.shadow.store import SqlDivergenceStore
from strangler.store import create_store_engine, upgrade_schema

TOKEN = "ops-0123456789abcdef"
CAP = "customer-profile"
UNPROVEN = "billing"

CONFIG = """
store: sqlite:///{store}
admin: {{tokens: {{ops: "{token}"}}}}
upstreams:
  legacy: {{url: "http://127.0.0.1:9"}}
  customers: {{url: "http://127.0.0.1:9"}}
  invoices: {{url: "http://127.0.0.1:9"}}
default_upstream: legacy
capabilities:
  customer-profile:
    legacy: legacy
    new: customers
    routes: ["GET /customers/{{id}}", "PUT /customers/{{id}}/address"]
    sticky: path:id
    gate: {{min_samples: 100, max_divergence_rate: 0.05}}
  billing:
    legacy: legacy
    new: invoices
    routes: ["GET /invoices/{{id}}"]
    sticky: path:id
  policy:
    legacy: legacy
    routes: ["GET /policies/{{id}}"]
"""


def estate_config(tmp: Path) -> StranglerConfig:
    config = load_config_text(CONFIG.format(store=tmp / "strangler.db", token=TOKEN), source="estate.yaml")
    upgrade_schema(config.store)
    return config


def build_estate(tmp: Path, *, cdc_status: CdcStatusSource | None = None, config: StranglerConfig | None = None
                 ) -> tuple[StranglerConfig, AdminParts]:
    config = config or estate_config(tmp)
    registry = CollectorRegistry()
    parts = build_admin(config, metrics=registry_metrics(registry), workers_ready=lambda: (True, {}),
                        registry=registry, cdc_status=cdc_status)
    return config, parts


def seed_comparisons(config: StranglerConfig, *, total: int = 160, divergent_every: int = 40,
                     now: dt.datetime | None = None) -> None:
    """`total` comparisons of customer-profile over the last 50 minutes: every `divergent_every`-th differs
    in /full_name; /generated_at differs everywhere, and as much between legacy and itself (noise)."""
    now = now or dt.datetime.now(dt.UTC)
    records: list[Any] = []
    for i in range(total):
        at = now - dt.timedelta(minutes=50) + dt.timedelta(seconds=i * 3000 / total)
        second = f"2025-06-01T12:00:{i % 60:02d}"
        stamp = FieldDifference("/generated_at", f"{second}.1Z", f"{second}.2Z")
        diffs = [stamp]
        if i % divergent_every == 0:
            diffs.append(FieldDifference("/full_name", "Maria van den Berg", "Maria Van Den Berg"))
        records.append(ComparisonRecord(at, CAP, "GET /customers/{id}", "GET", "candidate", "compared", f"cid-{i}",
                                        "legacy", 200, 200, 3.0 + i % 5, 4.0 + i % 7, tuple(diffs),
                                        tuple("regression" for _ in diffs)))
        if i % 4 == 0:
            records.append(ComparisonRecord(at, CAP, "GET /customers/{id}", "GET", "noise", "compared",
                                            f"cid-{i}", "legacy", 200, 200, 3.0, 3.1, (stamp,), ("regression",)))
    SqlDivergenceStore(create_store_engine(config.store)).record(records)
