"""Which checkpoints the sink has acknowledged: records are acknowledged out of order (across partitions and
topics), a checkpoint counts only once every record before it is. A change mapped to domain events in-process
counts as one more output of its unit, done when the mapping pipeline says all its outputs are acknowledged."""

from __future__ import annotations

from collections import deque
from typing import Any

from strangler.cdc.ports import Checkpoint


class _Unit:
    """The records between two checkpoints; `ack` is every record's delivery callback."""

    __slots__ = ("tracker", "pending", "checkpoint", "failed")

    def __init__(self, tracker: AckTracker) -> None:
        self.tracker = tracker
        self.pending = 0
        self.checkpoint: Checkpoint | None = None
        self.failed = False

    def ack(self, error: Any, message: Any = None) -> None:
        self.pending -= 1
        self.tracker.in_flight -= 1
        if error is not None:
            self.failed = True
            self.tracker.errors.append(error)
        else:
            self.tracker.acknowledged += 1

    def mapped(self) -> None:
        """A change's domain events (and dead letters) are all acknowledged."""
        self.pending -= 1
        self.tracker.in_flight -= 1
        self.tracker.mapped += 1


class AckTracker:
    def __init__(self) -> None:
        self.in_flight = 0
        self.acknowledged = 0
        self.mapped = 0  # changes whose domain events are acknowledged
        self.errors: list[Any] = []  # delivery failures: the session must rewind
        self._open = _Unit(self)
        self._closed: deque[_Unit] = deque()

    def sending(self, count: int = 1) -> Any:
        """Count `count` more records of the open unit; returns their (shared) delivery callback."""
        unit = self._open
        unit.pending += count
        self.in_flight += count
        return unit.ack

    def mapping(self) -> Any:
        """Count one change handed to the domain-event pipeline; returns its `on_done`."""
        unit = self._open
        unit.pending += 1
        self.in_flight += 1
        return unit.mapped

    def close(self, checkpoint: Checkpoint) -> None:
        """Every record sent since the previous checkpoint comes before `checkpoint`."""
        unit = self._open
        unit.checkpoint = checkpoint
        self._closed.append(unit)
        self._open = _Unit(self)

    def completed(self) -> list[Checkpoint]:
        """The checkpoints, oldest first, whose records and all records before them are now acknowledged;
        each is returned once. A lost record stops the list at its unit."""
        done: list[Checkpoint] = []
        closed = self._closed
        while closed and closed[0].pending <= 0 and not closed[0].failed:
            checkpoint = closed.popleft().checkpoint
            if checkpoint is not None:
                done.append(checkpoint)
        return done

    @property
    def waiting(self) -> int:
        """Checkpoints handed out but not yet completed."""
        return len(self._closed)
