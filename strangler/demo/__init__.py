"""`strangler demo`: a sample legacy monolith, a sample new customer service, the gateway in front with its
store, admin API and dashboard, the legacy database's change capture and the domain-event mapper, all on
loopback with SQLite, walked through the routing modes of one capability."""

from __future__ import annotations

from strangler.demo.legacy import LegacyDatabase, build_legacy_app
from strangler.demo.new_service import CustomerProfile, ProfileStore, build_customer_service, customer_json
from strangler.demo.runner import run_demo

__all__ = [
    "CustomerProfile", "LegacyDatabase", "ProfileStore", "build_customer_service", "build_legacy_app",
    "customer_json", "run_demo",
]
