"""What a start of the PostgreSQL source does, from the snapshot mode, the slot and the local state."""

from __future__ import annotations

from typing import Any

import pytest

from strangler.cdc.errors import SlotLost
from strangler.cdc.postgres import plan_start

NOTHING: dict[str, Any] = {}
STREAMED = {"streaming": True, "acked_mark": [100, 1]}
RUNNING = {"snapshot": {"status": "running", "tables": []}}
SNAPSHOT_DONE = {"snapshot": {"status": "done", "tables": []}}


@pytest.mark.parametrize(
    "mode,slot,state,plan",
    [
        ("initial", False, NOTHING, "create_slot_with_snapshot"),
        ("initial", True, NOTHING, "snapshot_then_stream"),  # a slot we know nothing about: snapshot beside it
        ("initial", True, RUNNING, "resume_snapshot"),
        ("initial", True, SNAPSHOT_DONE, "stream"),
        ("initial", True, STREAMED, "stream"),
        ("never", False, NOTHING, "create_slot"),
        ("never", True, RUNNING, "stream"),
        ("when_needed", False, STREAMED, "create_slot_with_snapshot"),  # the slot is gone: snapshot again
        ("when_needed", True, STREAMED, "stream"),
        ("initial_only", False, NOTHING, "snapshot_only"),
        ("initial_only", True, RUNNING, "resume_snapshot_only"),
        ("initial_only", True, SNAPSHOT_DONE, "done"),
    ],
)
def test_plans(mode: str, slot: bool, state: dict[str, Any], plan: str) -> None:
    assert plan_start(mode, slot, state) == plan


@pytest.mark.parametrize("mode,state", [("initial", STREAMED), ("initial", RUNNING), ("never", STREAMED)])
def test_a_lost_slot_is_an_error_unless_a_new_snapshot_is_allowed(mode: str, state: dict[str, Any]) -> None:
    with pytest.raises(SlotLost, match="when_needed"):
        plan_start(mode, False, state)
