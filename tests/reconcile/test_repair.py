from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from strangler.reconcile.drift import compare_entity
from strangler.reconcile.errors import RepairFailed
from strangler.reconcile.repair import JsonlRepairPublisher, event_type_for, state_event

NOW = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
NAMES = ["email", "name", "note"]
AUTHORITIES = {"email": "legacy", "name": "new", "note": None}


@pytest.mark.parametrize(("entity", "expected"), [
    ("customer", "CustomerStateReconciled"), ("order-line", "OrderLineStateReconciled"),
    ("billing_account", "BillingAccountStateReconciled"),
])
def test_event_type(entity: str, expected: str) -> None:
    assert event_type_for(entity) == expected


def test_the_state_is_taken_field_by_field_from_the_authority() -> None:
    drift = compare_entity((42,), NAMES, ["a@x", "Ann", "n1"], ["b@x", "Anne", "n2"], AUTHORITIES)
    assert drift is not None
    event = state_event("customers", "customer", drift, ["id"], AUTHORITIES, 7, NOW, NOW)
    assert event is not None
    assert (event.event_type, event.source, event.aggregate_id, event.sequence) == (
        "CustomerStateReconciled", "reconciliation", "42", "customers/7")
    assert event.payload == {"job": "customers", "key": {"id": 42}, "state": {"email": "a@x", "name": "Anne"},
                             "absent_on": [], "authority": {"email": "legacy", "name": "new"},
                             "drifted": ["email", "name", "note"]}
    again = state_event("customers", "customer", drift, ["id"], AUTHORITIES, 7, NOW, NOW)
    assert again is not None and again.event_id == event.event_id  # one run's events are idempotent
    other_run = state_event("customers", "customer", drift, ["id"], AUTHORITIES, 8, NOW, NOW)
    assert other_run is not None and other_run.event_id != event.event_id


def test_an_entity_the_authority_lacks_is_reported_absent() -> None:
    drift = compare_entity((1,), NAMES, ["a", "b", "c"], None, AUTHORITIES)
    assert drift is not None
    event = state_event("j", "customer", drift, ["id"], AUTHORITIES, 1, NOW, NOW)
    assert event is not None and event.payload["absent_on"] == ["new"] and event.payload["state"] == {"email": "a"}


def test_no_event_without_any_authority() -> None:
    drift = compare_entity((1,), ["note"], ["a"], ["b"], {"note": None})
    assert drift is not None and state_event("j", "e", drift, ["id"], {"note": None}, 1, NOW, NOW) is None


def test_jsonl_publisher(tmp_path: Path) -> None:
    drift = compare_entity((1,), NAMES, ["a", "b", "c"], ["x", "b", "c"], AUTHORITIES)
    assert drift is not None
    event = state_event("j", "customer", drift, ["id"], AUTHORITIES, 1, NOW, NOW)
    assert event is not None
    path = tmp_path / "repair.jsonl"
    JsonlRepairPublisher(str(path)).publish([event, event])
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 2 and lines[0]["event_type"] == "CustomerStateReconciled"
    with pytest.raises(RepairFailed):
        JsonlRepairPublisher(str(tmp_path / "missing" / "x.jsonl")).publish([event])
