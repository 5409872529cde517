"""Flag changes as one operation: validate, judge the gate on fresh evidence, store with its audit row.

Shared by the admin API and anything else that flips flags; raises the errors in `routing.errors`.
The evidence is read outside the store's write transaction (and only for a gated move): reading it
inside would hold one connection while asking the pool for another, and on SQLite wait for the write
lock the transaction itself holds.
"""

from __future__ import annotations

from collections.abc import Mapping

from strangler.routing.config import CapabilityConfig
from strangler.routing.errors import InvalidChange, UnknownCapability
from strangler.routing.gate import Evidence, GateDecision, GateEvidence, is_gated, judge_change
from strangler.routing.modes import Mode, RoutingFlag
from strangler.routing.store import FlagChange, FlagStore, StoredFlag


class _EvidenceNeeded(Exception):
    """The move is gated and no evidence was read yet: read it outside the transaction and try again."""


class FlagService:
    def __init__(self, capabilities: Mapping[str, CapabilityConfig], store: FlagStore, evidence: GateEvidence) -> None:
        self.capabilities = dict(capabilities)
        self.store = store
        self.evidence = evidence

    def change(
        self,
        capability: str,
        *,
        mode: Mode,
        percent: float | None,
        reason: str,
        actor: str,
        expected_version: int | None = None,
        force: bool = False,
    ) -> StoredFlag:
        cap = self.capabilities.get(capability)
        if cap is None:
            raise UnknownCapability(f"unknown capability {capability!r}")
        if mode is not Mode.LEGACY and cap.new is None:
            raise InvalidChange("mode", f"capability {capability!r} has no 'new' upstream; only 'legacy' is possible")
        if not reason.strip():
            raise InvalidChange("reason", "a reason is required")
        if mode is Mode.CANARY:
            if percent is None:
                raise InvalidChange("percent", "canary needs a percent (0-100)")
            if cap.sticky is None and cap.unkeyed == "legacy":
                raise InvalidChange("mode", "canary needs 'sticky' (or unkeyed: random) in the capability's config")
        value = float(percent) if mode is Mode.CANARY and percent is not None else 0.0

        evidence: Evidence | None = None

        def judge(current: RoutingFlag) -> GateDecision:
            if evidence is None:
                if is_gated(current, mode, value):
                    raise _EvidenceNeeded()
                return judge_change(current, mode, value, cap.gate, Evidence(0, 0), force)
            return judge_change(current, mode, value, cap.gate, evidence, force)

        change = FlagChange(mode, value, reason.strip(), actor)
        try:
            return self.store.change(capability, change, expected_version, judge)
        except _EvidenceNeeded:
            evidence = self.evidence.evidence(capability)
        return self.store.change(capability, change, expected_version, judge)
