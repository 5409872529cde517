"""`strangler demo`: a sample legacy monolith, a sample new customer service and the gateway in front,
all on loopback with SQLite, walked through the routing modes of one capability."""

from __future__ import annotations

from strangler.demo.legacy import LegacyDatabase, build_legacy_app
from strangler.demo.new_service import CustomerProfile, ProfileStore, build_customer_service, customer_json
from strangler.demo.runner import run_demo

__all__ = [
    "CustomerProfile", "LegacyDatabase", "ProfileStore", "build_customer_service", "build_legacy_app",
    "customer_json", "run_demo",
]
