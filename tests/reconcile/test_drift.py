from __future__ import annotations

import pytest

from strangler.precedence.config import PrecedenceConfig
from strangler.precedence.rules import PrecedenceRules
from strangler.reconcile.drift import ROW, compare_entity, field_authorities, merge_sorted
from strangler.routing.modes import Mode

RULES = PrecedenceRules(PrecedenceConfig.model_validate({"entities": {"customer": {"groups": {
    "contact": {"fields": ["/email"], "authority": "legacy"},
    "profile": {"fields": ["/name"], "authority": {"follow": "customer-profile"}},
}}}}))
NAMES = ["email", "name", "note"]


@pytest.mark.parametrize(("mode", "expected"), [
    (Mode.LEGACY, {"email": "legacy", "name": "legacy", "note": None}),
    (Mode.CANARY, {"email": "legacy", "name": "legacy", "note": None}),
    (Mode.NEW, {"email": "legacy", "name": "new", "note": None}),
    (None, {"email": "legacy", "name": None, "note": None}),
])
def test_authority_per_field_follows_the_phase(mode: Mode | None, expected: dict[str, str | None]) -> None:
    modes = {"customer-profile": mode} if mode is not None else {}
    assert field_authorities(RULES, "customer", NAMES, modes) == expected


def test_differing_fields_are_classified() -> None:
    authorities = field_authorities(RULES, "customer", NAMES, {"customer-profile": Mode.NEW})
    drift = compare_entity((7,), NAMES, ["a@x", "Ann", "n"], ["b@x", "Ann", "m"], authorities)
    assert drift is not None and drift.entity_key == "7"
    assert [(f.field, f.classification, f.authority) for f in drift.fields] == [
        ("email", "non-authoritative", "legacy"), ("note", "no-authority", None)]
    assert compare_entity((7,), NAMES, ["a", None, "n"], ["a", None, "n"], authorities) is None


@pytest.mark.parametrize(("mode", "legacy", "new", "expected"), [
    (Mode.NEW, ["a", "b", "c"], None, "authoritative"),  # new owns the profile and lacks the entity
    (Mode.LEGACY, ["a", "b", "c"], None, "non-authoritative"),
    (Mode.LEGACY, None, ["a", "b", "c"], "authoritative"),
])
def test_missing_entities_are_classified(mode: Mode, legacy: list[str] | None, new: list[str] | None,
                                         expected: str) -> None:
    authorities = field_authorities(RULES, "customer", NAMES, {"customer-profile": mode})
    drift = compare_entity(("k", 1), NAMES, legacy, new, authorities)
    assert drift is not None and drift.entity_key == "k/1"
    assert [(f.field, f.classification) for f in drift.fields] == [(ROW, expected)]
    assert drift.missing == ("new" if new is None else "legacy")


def test_missing_entity_with_no_authority_anywhere() -> None:
    drift = compare_entity((1,), ["note"], None, ["x"], {"note": None})
    assert drift is not None and drift.fields[0].classification == "no-authority"


def test_merge_sorted_pairs_rows_by_key() -> None:
    legacy = [((1,), ["a"]), ((3,), ["c"]), ((4,), ["d"])]
    new = [((2,), ["b"]), ((3,), ["C"]), ((5,), ["e"])]
    assert list(merge_sorted(legacy, new)) == [
        ((1,), ["a"], None), ((2,), None, ["b"]), ((3,), ["c"], ["C"]), ((4,), ["d"], None), ((5,), None, ["e"])]
    assert list(merge_sorted([], new[:1])) == [((2,), None, ["b"])]
