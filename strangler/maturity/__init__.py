"""The maturity ledger: each change's journey through accepted, applied, propagated and reconciled."""

from __future__ import annotations

from strangler.maturity.ledger import Journey, Stage, StageEvent, stage_lags
from strangler.maturity.store import LedgerStore, SqlLedgerStore

__all__ = ["Journey", "LedgerStore", "SqlLedgerStore", "Stage", "StageEvent", "stage_lags"]
