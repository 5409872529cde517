"""Drift: what differs between the two sides' state of one entity, classified under the precedence rules.

Classification of a drifted field, from its group's authority in the current phase:

    non-authoritative  the side that is not authoritative differs (or lacks the entity): it lags, and
                       re-applying the authoritative state repairs it
    authoritative      the authoritative side lacks an entity the other side holds: a lost write on the
                       system of record, or an orphan on the other side; a person must look
    no-authority       no precedence rule covers the field (or it follows a capability of unknown mode)

Pure functions over canonical values (see normalise.py): no I/O, no clock.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from strangler.precedence.rules import PrecedenceRules, Side, authority_of
from strangler.routing.modes import Mode

ROW = "(row)"  # the field name of a drift where one side lacks the whole entity
Classification = Literal["non-authoritative", "authoritative", "no-authority"]
Key = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class FieldDrift:
    field: str
    legacy: str | None
    new: str | None
    classification: Classification
    authority: Side | None

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.field, "legacy": self.legacy, "new": self.new,
                "classification": self.classification, "authority": self.authority}


@dataclass(frozen=True, slots=True)
class EntityDrift:
    key: Key
    fields: tuple[FieldDrift, ...]
    missing: Side | None = None  # the side that lacks the entity
    legacy_row: Mapping[str, str | None] | None = None
    new_row: Mapping[str, str | None] | None = None

    @property
    def entity_key(self) -> str:
        """The key as the maturity ledger and the events spell it: values joined by '/'."""
        return entity_key(self.key)

    def state(self, side: Side) -> Mapping[str, str | None] | None:
        return self.legacy_row if side == "legacy" else self.new_row


def entity_key(key: Key) -> str:
    return "/".join(str(part) for part in key)


def field_authorities(
    rules: PrecedenceRules, entity: str, fields: Iterable[str], modes: Mapping[str, Mode]
) -> dict[str, Side | None]:
    """Each compared field's authoritative side now (None: no rule, or a rule following an unknown mode)."""
    out: dict[str, Side | None] = {}
    for name in fields:
        group = rules.group_for(entity, "/" + name)
        out[name] = authority_of(group, modes) if group is not None else None
    return out


def compare_entity(
    key: Key,
    names: Sequence[str],
    legacy: Sequence[str | None] | None,
    new: Sequence[str | None] | None,
    authorities: Mapping[str, Side | None],
) -> EntityDrift | None:
    """The drift of one entity given both sides' canonical values (None: the side lacks the entity)."""
    legacy_row = dict(zip(names, legacy, strict=True)) if legacy is not None else None
    new_row = dict(zip(names, new, strict=True)) if new is not None else None
    if legacy_row is None or new_row is None:
        if legacy_row is None and new_row is None:
            return None
        missing: Side = "legacy" if legacy_row is None else "new"
        owners = {authorities[n] for n in names} - {None}
        if missing in owners:
            classification: Classification = "authoritative"
        elif owners:
            classification = "non-authoritative"
        else:
            classification = "no-authority"
        present = legacy_row if legacy_row is not None else new_row
        text = json.dumps(present, sort_keys=True)
        drift = FieldDrift(ROW, text if missing == "new" else None, text if missing == "legacy" else None,
                           classification, owners.pop() if len(owners) == 1 else None)
        return EntityDrift(key, (drift,), missing, legacy_row, new_row)
    fields = []
    for name in names:
        a, b = legacy_row[name], new_row[name]
        if a != b:
            authority = authorities[name]
            fields.append(FieldDrift(name, a, b, "no-authority" if authority is None else "non-authoritative",
                                     authority))
    if not fields:
        return None
    return EntityDrift(key, tuple(fields), None, legacy_row, new_row)


def merge_sorted(
    legacy: Iterable[tuple[Key, Sequence[str | None]]], new: Iterable[tuple[Key, Sequence[str | None]]]
) -> Iterator[tuple[Key, Sequence[str | None] | None, Sequence[str | None] | None]]:
    """Pairs two key-ordered row streams: (key, legacy values or None, new values or None), in memory O(1)."""
    left, right = iter(legacy), iter(new)
    a = next(left, None)
    b = next(right, None)
    while a is not None and b is not None:
        if a[0] < b[0]:
            yield a[0], a[1], None
            a = next(left, None)
        elif b[0] < a[0]:
            yield b[0], None, b[1]
            b = next(right, None)
        else:
            yield a[0], a[1], b[1]
            a, b = next(left, None), next(right, None)
    while a is not None:
        yield a[0], a[1], None
        a = next(left, None)
    while b is not None:
        yield b[0], None, b[1]
        b = next(right, None)
