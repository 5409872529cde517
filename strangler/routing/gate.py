"""Gates: moving a capability forward needs evidence; moving it back never waits.

Entering `shadow` from `legacy` is not gated either: legacy still answers every request, and shadowing is
how the evidence that gates the later moves is gathered. `GateEvidence` is the port through which the
shadow package's comparison counts arrive; `judge_change` is the pure rule.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

from strangler.routing.config import GateConfig
from strangler.routing.modes import Mode, RoutingFlag


@dataclass(frozen=True, slots=True)
class Evidence:
    """Comparisons of a capability over its recent window, after noise removal."""

    samples: int
    divergent: int
    outcome_samples: int = 0  # outcome comparisons (both sides' domain events), when the gate asks for them
    outcome_divergent: int = 0

    @property
    def rate(self) -> float:
        return self.divergent / self.samples if self.samples else 0.0

    @property
    def outcome_rate(self) -> float:
        return self.outcome_divergent / self.outcome_samples if self.outcome_samples else 0.0


class GateEvidence(Protocol):
    def evidence(self, capability: str) -> Evidence:
        """Recent comparison counts of `capability`; may do I/O (called off the event loop)."""
        ...


class NoEvidence:
    """Used until comparisons are stored: no samples, so no forward move passes its gate."""

    def evidence(self, capability: str) -> Evidence:
        return Evidence(0, 0)


@dataclass(frozen=True, slots=True)
class GateDecision:
    allowed: bool
    forward: bool
    forced: bool
    samples: int
    divergent: int
    rate: float
    min_samples: int
    max_divergence_rate: float
    explanation: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_forward(current: RoutingFlag, mode: Mode, percent: float) -> bool:
    """Forward along legacy -> shadow -> canary -> new -> new-only; a larger canary share is forward too."""
    if mode.rank != current.mode.rank:
        return mode.rank > current.mode.rank
    return mode is Mode.CANARY and percent > current.percent


def is_gated(current: RoutingFlag, mode: Mode, percent: float) -> bool:
    """A forward move other than legacy -> shadow: only those need the gate's evidence."""
    if current.mode is Mode.LEGACY and mode is Mode.SHADOW:
        return False
    return is_forward(current, mode, percent)


def judge_change(
    current: RoutingFlag, mode: Mode, percent: float, gate: GateConfig, evidence: Evidence, force: bool
) -> GateDecision:
    forward = is_forward(current, mode, percent)
    outcomes_met = gate.outcome_min_samples == 0 or (
        evidence.outcome_samples >= gate.outcome_min_samples
        and evidence.outcome_rate <= gate.outcome_max_divergence_rate
    )
    met = evidence.samples >= gate.min_samples and evidence.rate <= gate.max_divergence_rate and outcomes_met
    gated = is_gated(current, mode, percent)
    if not forward:
        explanation = "moving back (or staying) is always allowed"
    elif not gated:
        explanation = "entering shadow is not gated: legacy keeps answering, and shadowing gathers the evidence"
    elif met:
        explanation = (
            f"gate met: {evidence.samples} samples >= {gate.min_samples}, "
            f"divergence rate {evidence.rate:.4f} <= {gate.max_divergence_rate}"
        )
    else:
        why = []
        if evidence.samples < gate.min_samples:
            why.append(f"{evidence.samples} samples < {gate.min_samples} required")
        if evidence.rate > gate.max_divergence_rate:
            why.append(f"divergence rate {evidence.rate:.4f} > {gate.max_divergence_rate}")
        if not outcomes_met:
            why.append(f"outcomes: {evidence.outcome_samples} compared (need {gate.outcome_min_samples}), "
                       f"divergence rate {evidence.outcome_rate:.4f} (max {gate.outcome_max_divergence_rate})")
        explanation = "gate not met: " + "; ".join(why) + (" (forced)" if force else "")
    return GateDecision(
        allowed=not gated or met or force,
        forward=forward,
        forced=gated and not met and force,
        samples=evidence.samples,
        divergent=evidence.divergent,
        rate=evidence.rate,
        min_samples=gate.min_samples,
        max_divergence_rate=gate.max_divergence_rate,
        explanation=explanation,
    )
