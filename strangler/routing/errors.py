"""Errors of flag changes, as the admin API and the CLI report them.

    FlagError
    ├── UnknownCapability   404 / exit 2
    ├── InvalidChange       422 / exit 2
    ├── VersionConflict     409 / exit 4 (carries the current flag)
    └── GateRefused         412 / exit 3 (carries the evidence)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from strangler.errors import StranglerError

if TYPE_CHECKING:
    from strangler.routing.gate import GateDecision
    from strangler.routing.store import StoredFlag


class FlagError(StranglerError):
    pass


class UnknownCapability(FlagError):
    pass


class InvalidChange(FlagError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class VersionConflict(FlagError):
    def __init__(self, current: StoredFlag) -> None:
        super().__init__(f"the flag is at version {current.version}")
        self.current = current


class GateRefused(FlagError):
    def __init__(self, decision: GateDecision) -> None:
        super().__init__(decision.explanation)
        self.decision = decision
