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
reconcile:
  jobs:
    customers:
      entity: customer
      legacy: {{url: "postgresql+psycopg://crm@127.0.0.1:1/crm", table: crm.customers, key: [id]}}
      new: {{url: "postgresql+psycopg://profile@127.0.0.1:1/profile", table: customers, key: [customer_id]}}
      fields: {{email: email, full_name: name}}
      no_authority: report
    invoices:
      entity: invoice
      legacy: {{url: "postgresql+psycopg://crm@127.0.0.1:1/crm", table: crm.invoices, key: [id]}}
      new: {{url: "postgresql+psycopg://billing@127.0.0.1:1/billing", table: invoices, key: [invoice_id]}}
      fields: {{total: total}}
      no_authority: report
"""


def estate_config(tmp: Path, store: str | None = None) -> StranglerConfig:
    """The estate's configuration on an SQLite file in `tmp`, or on the store URL given."""
    text = CONFIG.format(store=tmp / "strangler.db", token=TOKEN)
    if store is not None:
        text = text.replace(f"sqlite:///{tmp / 'strangler.db'}", store)
    config = load_config_text(text, source="estate.yaml")
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


def seed_drift(config: StranglerConfig, *, now: dt.datetime | None = None) -> None:
    """Two runs of the `customers` job an hour apart: customer 7's email drifted since the first, customer 12
    is missing on the new side since the second; `invoices` has never run."""
    from strangler.reconcile.drift import EntityDrift, FieldDrift
    from strangler.reconcile.store import SqlDriftStore

    now = now or dt.datetime.now(dt.UTC)
    store = SqlDriftStore(create_store_engine(config.store))
    email = EntityDrift((7,), (FieldDrift("email", "maria@example.nl", "maria@old.example", "no-authority", None),))
    missing = EntityDrift((12,), (FieldDrift("(row)", '{"email": "jan@example.nl"}', None, "no-authority", None),),
                          "new")
    for at, drift in ((now - dt.timedelta(hours=1), [email]), (now - dt.timedelta(minutes=5), [email, missing])):
        run = store.open_run("customers", "estate", '{"config": "estate"}', at)
        run = store.chunk_done(run, 0, drift, 2500, 0, at)
        store.finish(run, at + dt.timedelta(seconds=2), resolve=True)
