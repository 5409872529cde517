"""Outcome comparison: what each side actually did to its data, compared under the precedence rules.

Domain events from the legacy side (through CDC) and from the new service are joined by entity key and
event family within a window (by correlation id when both carry one) and their payloads compared field
by field; each difference is resolved by the entity's precedence rule. An event still unmatched when
its window closes is a `missing` outcome. Pure: events and `now` in, results out; duplicates (same
event id) are ignored. What it holds (the waiting events, the ids it has seen) can be put back with
`restore` and `remember`, so a process that persists them resumes where it stopped.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from strangler.events.model import DomainEvent
from strangler.precedence.rules import PrecedenceRules, Resolution, Versioned, resolve
from strangler.routing.modes import Mode
from strangler.shadow.compare import CapturedResponse, Comparator, FieldDifference
from strangler.shadow.config import CompareConfig

Side = Literal["legacy", "new"]
_EMPTY = CompareConfig()


@dataclass(frozen=True, slots=True)
class FieldOutcome:
    path: str
    legacy: Any
    new: Any
    resolution: Resolution


@dataclass(frozen=True, slots=True)
class OutcomeResult:
    kind: Literal["match", "divergence", "missing"]
    aggregate_type: str
    aggregate_id: str
    family: str
    legacy: DomainEvent | None
    new: DomainEvent | None
    fields: tuple[FieldOutcome, ...] = field(default=())

    @property
    def correlation_id(self) -> str | None:
        for event in (self.legacy, self.new):
            if event is not None and event.correlation_id:
                return event.correlation_id
        return None

    @property
    def missing_side(self) -> Side | None:
        if self.kind != "missing":
            return None
        return "new" if self.new is None else "legacy"


@dataclass(frozen=True, slots=True)
class Taken:
    """What `take` did with one event: `duplicate` (seen before, ignored), `waiting` (for its partner) or
    `joined` (with a waiting partner: `partner` is that event); `results` include what expired meanwhile."""

    status: Literal["duplicate", "waiting", "joined"]
    results: list[OutcomeResult]
    partner: DomainEvent | None = None


@dataclass(slots=True, eq=False)  # identity, not field equality: removal from a queue must take this item
class _Pending:
    side: Side
    event: DomainEvent
    arrived: dt.datetime
    key: tuple[str, str, str]
    done: bool = False


class OutcomeJoiner:
    def __init__(
        self,
        rules: PrecedenceRules,
        *,
        window: dt.timedelta,
        modes: Callable[[], Mapping[str, Mode]],
        families: Mapping[str, str] | None = None,
        compare: CompareConfig | None = None,
        remember: int = 200_000,
    ) -> None:
        self.rules = rules
        self.window = window
        self.modes = modes
        self.families = dict(families or {})
        self.comparator = Comparator(compare or _EMPTY)
        self._pending: dict[tuple[str, str, str], deque[_Pending]] = {}
        self._by_arrival: deque[_Pending] = deque()  # arrival order, for expiry without a scan
        self._unordered = False
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.memory = remember  # how many seen ids it keeps

    def family(self, event: DomainEvent) -> str:
        return self.families.get(event.event_type, event.event_type)

    def add(self, side: Side, event: DomainEvent, now: dt.datetime) -> list[OutcomeResult]:
        """Take one side's event; returns the outcome when it completes a pair (and expired ones)."""
        return self._take(side, event, now)[1]

    def take(self, side: Side, event: DomainEvent, now: dt.datetime) -> Taken:
        """Take one side's event and say what became of it (see `Taken`)."""
        return Taken(*self._take(side, event, now))

    def _take(
        self, side: Side, event: DomainEvent, now: dt.datetime
    ) -> tuple[Literal["duplicate", "waiting", "joined"], list[OutcomeResult], DomainEvent | None]:
        # a plain tuple: `add` is the hot path and builds no object per event
        results = self.expire(now)
        if self._duplicate(side, event.event_id):
            return "duplicate", results, None
        key = (event.aggregate_type, event.aggregate_id, self.family(event))
        queue = self._pending.setdefault(key, deque())
        partner = self._partner(queue, side, event)
        if partner is None:
            self._wait(_Pending(side, event, now, key), queue)
            return "waiting", results, None
        self._unwait(partner, queue)
        legacy, new = (event, partner.event) if side == "legacy" else (partner.event, event)
        results.append(self.compare(legacy, new))
        return "joined", results, partner.event

    def restore(self, side: Side, event: DomainEvent, arrived: dt.datetime) -> None:
        """Put back an event that was waiting: it waits out the rest of its window from `arrived`, and counts
        as seen (whether or not it was remembered already)."""
        self._duplicate(side, event.event_id)
        key = (event.aggregate_type, event.aggregate_id, self.family(event))
        if self._by_arrival and self._by_arrival[-1].arrived > arrived:
            self._unordered = True  # put in order by the next expiry pass, once for all restored events
        self._wait(_Pending(side, event, arrived, key), self._pending.setdefault(key, deque()))

    def release(self, side: Side, event: DomainEvent) -> bool:
        """Stop waiting for `event`'s partner without an outcome (another process takes it over); False if
        it was not waiting."""
        key = (event.aggregate_type, event.aggregate_id, self.family(event))
        queue = self._pending.get(key)
        item = next((p for p in queue or () if p.side == side and p.event.event_id == event.event_id), None)
        if queue is None or item is None:
            return False
        self._unwait(item, queue)
        return True

    def forget(self, side: Side, event_id: str) -> None:
        """Count an event as not seen: if it comes again it is taken afresh."""
        self._seen.pop(f"{side}:{event_id}", None)

    def remember(self, side: Side, event_id: str) -> None:
        """Count an event as seen (taken before), so that it is ignored if it comes again."""
        self._duplicate(side, event_id)

    def _wait(self, item: _Pending, queue: deque[_Pending]) -> None:
        queue.append(item)
        self._by_arrival.append(item)

    def _unwait(self, item: _Pending, queue: deque[_Pending]) -> None:
        """`item` waits no more (joined or released); the expiry pass skips it."""
        item.done = True
        queue.remove(item)
        if not queue:
            del self._pending[item.key]

    def expire(self, now: dt.datetime) -> list[OutcomeResult]:
        """Events whose window closed without a partner: `missing` outcomes."""
        results = []
        if self._unordered:
            self._by_arrival = deque(sorted(self._by_arrival, key=lambda item: item.arrived))
            self._unordered = False
        while self._by_arrival and now - self._by_arrival[0].arrived > self.window:
            item = self._by_arrival.popleft()
            if item.done:
                continue
            queue = self._pending[item.key]
            queue.remove(item)
            if not queue:
                del self._pending[item.key]
            legacy = item.event if item.side == "legacy" else None
            new = item.event if item.side == "new" else None
            results.append(OutcomeResult("missing", item.key[0], item.key[1], item.key[2], legacy, new))
        return results

    def pending(self) -> int:
        return sum(len(q) for q in self._pending.values())

    def compare(self, legacy: DomainEvent, new: DomainEvent) -> OutcomeResult:
        entity = legacy.aggregate_type
        modes = self.modes()
        outcomes = []
        for diff in self._differences(legacy.payload, new.payload):
            group = self.rules.group_for(entity, diff.path)
            resolution = resolve(group, Versioned(diff.primary, legacy.effective_time),
                                 Versioned(diff.other, new.effective_time), modes)
            outcomes.append(FieldOutcome(diff.path, diff.primary, diff.other, resolution))
        kind: Literal["match", "divergence"] = "divergence" if outcomes else "match"
        return OutcomeResult(kind, entity, legacy.aggregate_id, self.family(legacy), legacy, new, tuple(outcomes))

    def _differences(self, legacy: dict[str, Any], new: dict[str, Any]) -> list[FieldDifference]:
        a = CapturedResponse(200, {}, orjson.dumps(legacy, option=orjson.OPT_SORT_KEYS), "application/json")
        b = CapturedResponse(200, {}, orjson.dumps(new, option=orjson.OPT_SORT_KEYS), "application/json")
        return self.comparator.compare(a, b)

    def _duplicate(self, side: Side, event_id: str) -> bool:
        marker = f"{side}:{event_id}"
        if marker in self._seen:
            return True
        self._seen[marker] = None
        if len(self._seen) > self.memory:
            self._seen.popitem(last=False)
        return False

    @staticmethod
    def _partner(queue: deque[_Pending], side: Side, event: DomainEvent) -> _Pending | None:
        """The other side's waiting event this one pairs with: the one with the same correlation id, else
        the oldest that carries none (an event with another request's id never pairs); an event without
        a correlation id pairs with the oldest."""
        cid = event.correlation_id
        fallback = None
        for p in queue:
            if p.side == side:
                continue
            if not cid:
                return p
            other = p.event.correlation_id
            if other == cid:
                return p
            if not other and fallback is None:
                fallback = p
        return fallback
