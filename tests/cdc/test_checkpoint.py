from __future__ import annotations

from strangler.cdc.checkpoint import AckTracker
from strangler.cdc.ports import Checkpoint


def test_a_checkpoint_completes_only_when_every_record_before_it_is_acknowledged() -> None:
    tracker = AckTracker()
    a1, a2 = tracker.sending(), tracker.sending()
    tracker.close(Checkpoint("a"))
    b1 = tracker.sending()
    tracker.close(Checkpoint("b"))
    b1(None)  # acknowledged out of order: b cannot complete before a
    assert tracker.completed() == []
    a2(None)
    a1(None)
    assert tracker.completed() == [Checkpoint("a"), Checkpoint("b")]
    assert tracker.completed() == [] and tracker.in_flight == 0 and tracker.acknowledged == 3


def test_an_empty_unit_completes_at_once() -> None:
    tracker = AckTracker()
    tracker.close(Checkpoint(1))
    assert tracker.completed() == [Checkpoint(1)]


def test_a_lost_record_stops_the_position_at_its_unit() -> None:
    tracker = AckTracker()
    ok = tracker.sending()
    tracker.close(Checkpoint(1))
    lost = tracker.sending()
    tracker.close(Checkpoint(2))
    later = tracker.sending()
    tracker.close(Checkpoint(3))
    ok(None)
    lost("timed out")
    later(None)
    assert tracker.completed() == [Checkpoint(1)]
    assert tracker.errors == ["timed out"] and tracker.completed() == []
