"""The SQL store shared by the packages (flags, audit, divergences): engines and schema migrations."""

from __future__ import annotations

from strangler.store.engine import (
    StoreUnavailable,
    create_store_engine,
    describe_failure,
    redact_url,
    upgrade_schema,
)

__all__ = ["StoreUnavailable", "create_store_engine", "describe_failure", "redact_url", "upgrade_schema"]
