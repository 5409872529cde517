"""The gate's evidence from the divergence store: recent comparisons of a capability, after noise removal."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping

from strangler.routing.config import CapabilityConfig
from strangler.routing.gate import Evidence
from strangler.shadow.compare import PointerSet
from strangler.shadow.store import DivergenceStore
from strangler.shadow.summary import CapabilitySummary, summarize


class ShadowEvidence:
    """Implements `routing.gate.GateEvidence` over a `DivergenceStore`."""

    def __init__(
        self,
        store: DivergenceStore,
        capabilities: Mapping[str, CapabilityConfig],
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.store = store
        self.capabilities = dict(capabilities)
        self.clock = clock
        self._expected = {name: PointerSet(cap.compare.expected) for name, cap in capabilities.items()}

    def summary(self, capability: str, window: dt.timedelta | None = None) -> CapabilitySummary:
        cap = self.capabilities[capability]
        now = self.clock()
        window = window or dt.timedelta(seconds=cap.gate.window)
        rows = self.store.comparisons(capability, now - window)
        return summarize(capability, rows, expected=self._expected[capability].covers, now=now, window=window)

    def evidence(self, capability: str) -> Evidence:
        summary = self.summary(capability)
        o = summary.outcomes
        return Evidence(summary.comparisons, summary.divergent, outcome_samples=sum(o.values()),
                        outcome_divergent=o.get("divergence", 0) + o.get("missing", 0))
