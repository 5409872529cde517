"""The outcome joiner: both sides' domain events paired by entity, family and correlation id, compared under
the precedence rules; what stays unpaired past the window is `missing`."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import pytest

from strangler.events.model import DomainEvent
from strangler.precedence import PrecedenceConfig, PrecedenceRules
from strangler.routing.modes import Mode
from strangler.shadow.compare import MISSING
from strangler.shadow.config import CompareConfig
from strangler.shadow.outcomes import OutcomeJoiner

T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
WINDOW = dt.timedelta(seconds=30)
_ids = itertools.count()


def event(side: str = "legacy", *, aggregate_id: str = "42", cid: str | None = "req-1",
          event_type: str = "CustomerAddressChanged", effective: dt.datetime | None = None,
          event_id: str | None = None, **payload: Any) -> DomainEvent:
    body = {"customer_id": 42, "street": "1 Main St", "zip": "12345"}
    body.update(payload)
    return DomainEvent(
        event_id=event_id or f"{side}-{next(_ids)}", event_type=event_type, event_version=1,
        aggregate_type="customer", aggregate_id=aggregate_id, event_time=T0, effective_time=effective,
        processing_time=T0, source=f"{side}.crm", sequence="1", correlation_id=cid, causation_id=None,
        payload=body,
    )


def rules(conflict: str = "authority-wins", authority: Any = "legacy") -> PrecedenceRules:
    return PrecedenceRules(PrecedenceConfig.model_validate({"entities": {"customer": {
        "capability": "profile",
        "groups": {"all": {"fields": ["/customer_id", "/street", "/zip"], "authority": authority,
                           "conflict": conflict}},
    }}}))


def joiner(precedence: PrecedenceRules | None = None, mode: Mode = Mode.SHADOW, **options: Any) -> OutcomeJoiner:
    return OutcomeJoiner(precedence or rules(), window=WINDOW, modes=lambda: {"profile": mode}, **options)


def test_equal_payloads_match() -> None:
    j = joiner()
    assert j.add("legacy", event("legacy"), T0) == []
    [result] = j.add("new", event("new"), T0 + dt.timedelta(seconds=2))
    assert (result.kind, result.aggregate_type, result.aggregate_id, result.family) == (
        "match", "customer", "42", "CustomerAddressChanged")
    assert result.fields == () and result.correlation_id == "req-1"
    assert result.legacy is not None and result.new is not None and j.pending() == 0


def test_the_new_side_may_publish_first() -> None:
    j = joiner()
    assert j.add("new", event("new"), T0) == []
    [result] = j.add("legacy", event("legacy", zip="99999"), T0)
    assert result.kind == "divergence"
    [field] = result.fields
    assert (field.path, field.legacy, field.new) == ("/zip", "99999", "12345")


@pytest.mark.parametrize(("precedence", "mode", "classification", "winner"), [
    (rules("authority-wins", "legacy"), Mode.SHADOW, "regression", "legacy"),
    (rules("report", "legacy"), Mode.SHADOW, "conflict", None),
    (rules("reject", "new"), Mode.SHADOW, "rejected", None),
    (rules("authority-wins", {"follow": "profile"}), Mode.NEW, "regression", "new"),
    (rules("latest-effective-time", "legacy"), Mode.SHADOW, "superseded", "new"),
])
def test_one_divergence_is_classified_by_the_rule_in_force(
    precedence: PrecedenceRules, mode: Mode, classification: str, winner: str | None
) -> None:
    j = joiner(precedence, mode)
    j.add("legacy", event("legacy", effective=T0), T0)
    [result] = j.add("new", event("new", zip="12346", effective=T0 + dt.timedelta(hours=1)), T0)
    assert result.kind == "divergence"
    [field] = result.fields
    assert (field.path, field.resolution.classification, field.resolution.winner) == ("/zip", classification, winner)


def test_a_field_no_rule_covers_is_unknown_authority() -> None:
    j = joiner()
    j.add("legacy", event("legacy", nickname="Ada"), T0)
    [result] = j.add("new", event("new"), T0)
    [field] = result.fields
    assert (field.path, field.legacy, field.new) == ("/nickname", "Ada", MISSING)
    assert field.resolution.classification == "unknown-authority"


def test_ignored_fields_are_not_compared() -> None:
    j = joiner(compare=CompareConfig(ignore=["/zip"]))
    j.add("legacy", event("legacy", zip="1"), T0)
    assert j.add("new", event("new", zip="2"), T0)[0].kind == "match"


@pytest.mark.parametrize("side", ["legacy", "new"])
def test_an_event_unpaired_after_the_window_is_missing_from_the_other_side(side: str) -> None:
    j = joiner()
    j.add(side, event(side), T0)
    assert j.expire(T0 + WINDOW) == []  # at the window's edge: still waiting
    [result] = j.expire(T0 + WINDOW + dt.timedelta(milliseconds=1))
    assert result.kind == "missing"
    assert result.missing_side == ("new" if side == "legacy" else "legacy")
    assert (result.legacy is not None) == (side == "legacy") and result.correlation_id == "req-1"
    assert j.pending() == 0 and j.expire(T0 + 10 * WINDOW) == []


def test_a_late_partner_after_expiry_is_missing_too() -> None:
    j = joiner()
    j.add("legacy", event("legacy"), T0)
    late = j.add("new", event("new"), T0 + WINDOW + dt.timedelta(seconds=1))
    assert [r.kind for r in late] == ["missing"]  # the legacy one expired first; the new one now waits
    assert j.pending() == 1
    assert [r.missing_side for r in j.expire(T0 + 3 * WINDOW)] == ["legacy"]


def test_a_paired_event_never_expires() -> None:
    j = joiner()
    j.add("legacy", event("legacy"), T0)
    j.add("new", event("new"), T0)
    assert j.expire(T0 + 10 * WINDOW) == []


def test_correlation_ids_pair_requests_that_share_an_entity() -> None:
    j = joiner()
    j.add("legacy", event("legacy", cid="req-a", zip="11111"), T0)
    j.add("legacy", event("legacy", cid="req-b", zip="22222"), T0)
    [result] = j.add("new", event("new", cid="req-b", zip="22222"), T0)
    assert (result.kind, result.correlation_id) == ("match", "req-b")
    [other] = j.add("new", event("new", cid="req-a", zip="11111"), T0)
    assert (other.kind, other.correlation_id) == ("match", "req-a")


def test_an_event_never_pairs_with_another_requests_event() -> None:
    j = joiner()
    j.add("legacy", event("legacy", cid="req-a"), T0)
    assert j.add("new", event("new", cid="req-b"), T0) == []
    assert j.pending() == 2


def test_an_event_with_a_correlation_id_pairs_with_one_that_has_none_not_with_another_request() -> None:
    j = joiner()
    j.add("legacy", event("legacy", cid="req-a", zip="11111"), T0)
    j.add("legacy", event("legacy", cid=None, zip="33333"), T0)
    [result] = j.add("new", event("new", cid="req-c", zip="33333"), T0)
    assert result.kind == "match" and result.legacy is not None and result.legacy.correlation_id is None
    assert result.correlation_id == "req-c"


def test_without_correlation_ids_events_pair_in_arrival_order() -> None:
    j = joiner()
    j.add("legacy", event("legacy", cid=None, zip="1"), T0)
    j.add("legacy", event("legacy", cid=None, zip="2"), T0)
    assert [r.kind for r in j.add("new", event("new", cid=None, zip="1"), T0)] == ["match"]
    assert [r.kind for r in j.add("new", event("new", cid=None, zip="2"), T0)] == ["match"]


def test_other_entities_never_pair() -> None:
    j = joiner()
    j.add("legacy", event("legacy", aggregate_id="1"), T0)
    assert j.add("new", event("new", aggregate_id="2"), T0) == []


def test_duplicates_are_ignored_by_event_id() -> None:
    j = joiner()
    first = event("legacy", event_id="e-1")
    j.add("legacy", first, T0)
    assert j.add("legacy", first, T0) == [] and j.pending() == 1
    [result] = j.add("new", event("new", event_id="n-1"), T0)
    assert result.kind == "match"
    assert j.add("legacy", first, T0) == [] and j.pending() == 0  # a replay after pairing
    assert j.add("new", event("new", event_id="n-1"), T0) == [] and j.pending() == 0


def test_the_same_event_id_on_both_sides_is_not_a_duplicate() -> None:
    j = joiner()
    j.add("legacy", event("legacy", event_id="shared"), T0)
    assert [r.kind for r in j.add("new", event("new", event_id="shared"), T0)] == ["match"]


def test_families_pair_differently_named_event_types() -> None:
    families = {"CustomerCorrespondenceAddressChanged": "address", "AddressUpdated": "address"}
    j = joiner(families=families)
    j.add("legacy", event("legacy", event_type="CustomerCorrespondenceAddressChanged"), T0)
    [result] = j.add("new", event("new", event_type="AddressUpdated"), T0)
    assert (result.kind, result.family) == ("match", "address")
    unpaired = joiner()
    unpaired.add("legacy", event("legacy", event_type="CustomerCorrespondenceAddressChanged"), T0)
    assert unpaired.add("new", event("new", event_type="AddressUpdated"), T0) == []


def test_expired_results_come_back_with_the_next_event() -> None:
    j = joiner()
    j.add("legacy", event("legacy", aggregate_id="1"), T0)
    results = j.add("legacy", event("legacy", aggregate_id="2"), T0 + 2 * WINDOW)
    assert [(r.kind, r.aggregate_id) for r in results] == [("missing", "1")]


def test_a_released_event_waits_no_more_and_never_expires_here() -> None:
    j = joiner()
    waiting = event("legacy")
    j.add("legacy", waiting, T0)
    assert j.release("legacy", waiting) is True and j.pending() == 0
    assert j.release("legacy", waiting) is False  # not waiting any more
    assert j.expire(T0 + 2 * WINDOW) == []
    assert j.add("legacy", waiting, T0) == [] and j.pending() == 0  # still seen: a duplicate


def test_a_restored_event_waits_even_if_its_id_was_remembered() -> None:
    j = joiner()
    waiting = event("legacy")
    j.remember("legacy", waiting.event_id)
    j.restore("legacy", waiting, T0)
    [result] = j.add("new", event("new"), T0 + dt.timedelta(seconds=1))
    assert result.kind == "match" and result.legacy == waiting


def test_an_event_restored_while_newer_ones_wait_expires_in_its_own_time() -> None:
    j = joiner()
    j.add("legacy", event("legacy", aggregate_id="1"), T0 + dt.timedelta(seconds=20))
    j.restore("legacy", event("legacy", aggregate_id="2"), T0)  # taken over from another process
    [expired] = j.expire(T0 + WINDOW + dt.timedelta(seconds=1))
    assert expired.aggregate_id == "2" and j.pending() == 1
