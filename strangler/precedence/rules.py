"""Source-of-authority rules and conflict resolution, as pure functions.

`resolve` decides, for one field group of one entity, which side's value stands when legacy and new
disagree, given the migration phase. There is no implicit last-write-wins: `latest-effective-time`
must be chosen explicitly, and without both effective times it reports instead of guessing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from strangler.precedence.config import EntityRule, FieldGroup, FollowCapability, PrecedenceConfig
from strangler.routing.modes import Mode
from strangler.shadow.compare import PointerSet

Side = Literal["legacy", "new"]


@dataclass(frozen=True, slots=True)
class Versioned:
    """One side's value of a field group, with its effective (business) time when the source has one."""

    value: Any
    effective_time: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class Resolution:
    """What one field group's comparison means.

    classification:
      match              both sides agree
      regression         they differ and the authority's value stands (`authority-wins`): the other side is wrong
      superseded         they differ and the later effective time stands (`latest-effective-time`)
      conflict           they differ and nobody wins automatically (`report`; or `latest-effective-time` without
                         both times, or with equal times, where the authority's value is kept)
      rejected           they differ and the change is refused (`reject`)
      unknown-authority  no rule says who is authoritative (or it follows a capability whose mode is unknown)
    """

    winner: Side | None  # None: nobody wins automatically (reported, rejected or unknown)
    classification: str
    authority: Side | None
    explanation: str


def serving_side(mode: Mode) -> Side:
    """The side that answers for a capability in `mode` (canary: legacy is the system of record)."""
    return "new" if mode in (Mode.NEW, Mode.NEW_ONLY) else "legacy"


def authority_of(group: FieldGroup, modes: Mapping[str, Mode]) -> Side | None:
    """The authoritative side for `group` now; None when it follows a capability whose mode is unknown."""
    if isinstance(group.authority, FollowCapability):
        mode = modes.get(group.authority.follow)
        return serving_side(mode) if mode is not None else None
    return group.authority


def resolve(group: FieldGroup | None, legacy: Versioned, new: Versioned, modes: Mapping[str, Mode]) -> Resolution:
    """Which side's value of one field group stands, in the phase `modes` describes (no I/O, no clock)."""
    authority = authority_of(group, modes) if group is not None else None
    if legacy.value == new.value:
        return Resolution(authority or "legacy", "match", authority, "both sides agree")
    if group is None:
        return Resolution(None, "unknown-authority", None, "no precedence rule covers this field")
    if authority is None:
        follow = group.authority.follow if isinstance(group.authority, FollowCapability) else "?"
        return Resolution(None, "unknown-authority", None,
                          f"authority follows capability {follow!r}, whose mode is unknown")
    other: Side = "new" if authority == "legacy" else "legacy"
    strategy = group.conflict
    if strategy == "report":
        return Resolution(None, "conflict", authority,
                          f"{authority} is authoritative; {other} differs (strategy: report, no automatic winner)")
    if strategy == "authority-wins":
        return Resolution(authority, "regression", authority, f"{authority} is authoritative and wins; {other} differs")
    if strategy == "reject":
        return Resolution(None, "rejected", authority,
                          f"conflicting values are rejected ({authority} is authoritative)")
    lt, nt = legacy.effective_time, new.effective_time
    if lt is None or nt is None:
        missing = " and ".join(side for side, t in (("legacy", lt), ("new", nt)) if t is None)
        return Resolution(None, "conflict", authority,
                          f"latest-effective-time needs both effective times; {missing} has none, so this is reported")
    if lt == nt:
        return Resolution(authority, "conflict", authority,
                          f"equal effective times; the authority ({authority}) keeps its value, reported")
    winner: Side = "legacy" if lt > nt else "new"
    return Resolution(winner, "superseded", authority, f"{winner} has the later effective time and wins")


def classify_difference(
    rules: PrecedenceRules, capability: str, path: str, serving: Side
) -> str:
    """How a response difference of `capability` at `path` counts: `regression` when a rule (or, for a
    capability no entity claims, the serving side) is authoritative, else `unknown-authority`. Status,
    header and whole-body differences are about the response, not a field: the serving side decides."""
    entity = rules.by_capability.get(capability)
    if entity is None or not path.startswith("/"):
        return "regression"
    return "regression" if rules.group_for(entity, path) is not None else "unknown-authority"


class PrecedenceRules:
    """Looks up the field group of a field of an entity; built once from the configuration."""

    def __init__(self, config: PrecedenceConfig) -> None:
        self.config = config
        self._groups: dict[str, list[tuple[PointerSet, FieldGroup, str]]] = {
            entity: [(PointerSet(group.fields), group, name) for name, group in rule.groups.items()]
            for entity, rule in config.entities.items()
        }
        self.by_capability: dict[str, str] = {
            rule.capability: entity for entity, rule in config.entities.items() if rule.capability is not None
        }

    def entity(self, name: str) -> EntityRule | None:
        return self.config.entities.get(name)

    def group_for(self, entity: str, path: str) -> FieldGroup | None:
        for patterns, group, _ in self._groups.get(entity, ()):
            if patterns.covers(path):
                return group
        return None

    def uncovered(self, entity: str, paths: list[str]) -> list[str]:
        """The compared fields of `entity` that no rule covers (the configuration check lists them)."""
        return [p for p in paths if self.group_for(entity, p) is None]


def response_classifier(
    expected: Mapping[str, PointerSet], rules: PrecedenceRules
) -> Callable[[str, str, str], str]:
    """The shadow comparison's authority port: `expected` for declared differences, else by precedence."""

    def classify(capability: str, path: str, serving: str) -> str:
        patterns = expected.get(capability)
        if patterns is not None and patterns.covers(path):
            return "expected"
        return classify_difference(rules, capability, path, "new" if serving == "new" else "legacy")

    return classify
