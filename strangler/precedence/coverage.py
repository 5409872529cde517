"""The configuration check: every field the outcome comparison compares must have an authority.

The outcome comparison compares the payloads of mapped domain events, entity (aggregate type) by entity;
a payload field that no precedence rule covers would be compared with nobody authoritative for it. This
lists them, so that `strangler check` refuses such a configuration instead of classifying at run time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from strangler.events.config import DomainEventsConfig
from strangler.precedence.config import PrecedenceConfig
from strangler.precedence.rules import PrecedenceRules
from strangler.shadow.compare import PointerSet


@dataclass(frozen=True, slots=True)
class Uncovered:
    """Compared fields of `entity` with no authority, and the mapping rules whose events carry them."""

    entity: str
    fields: tuple[str, ...]  # JSON Pointers into the payload
    rules: tuple[int, ...]  # indexes into domain_events.rules
    no_rule: bool  # the entity has no precedence rule at all

    def message(self, rules_path: str) -> str:
        where = ", ".join(f"{rules_path}[{i}]" for i in self.rules)
        if self.no_rule:
            return (f"no precedence rule for entity {self.entity!r}, whose events are compared ({where}); "
                    f"add precedence.entities.{self.entity} with groups covering {', '.join(self.fields)}")
        return (f"compared fields with no authority: {', '.join(self.fields)} (payload fields of {where}); add them "
                "to a group, or to outcomes.compare.ignore if they are not to be compared")


def uncovered_fields(
    events: DomainEventsConfig, precedence: PrecedenceConfig, ignore: Sequence[str] = ()
) -> list[Uncovered]:
    """Per entity, the mapped events' payload fields no precedence group covers (`ignore`d ones are not
    compared, so they need none), in configuration order."""
    rules = PrecedenceRules(precedence)
    ignored = PointerSet(list(ignore))
    compared: dict[str, dict[str, None]] = {}
    origins: dict[str, list[int]] = {}
    for index, rule in enumerate(events.rules):
        fields = compared.setdefault(rule.aggregate_type, {})
        for name in rule.payload:
            path = "/" + name.replace("~", "~0").replace("/", "~1")
            if not ignored.covers(path):
                fields[path] = None
        origins.setdefault(rule.aggregate_type, []).append(index)
    out = []
    for entity, fields in compared.items():
        missing = rules.uncovered(entity, list(fields))
        if missing:
            out.append(Uncovered(entity, tuple(missing), tuple(origins[entity]), rules.entity(entity) is None))
    return out
