"""Typed domain events: the anti-corruption layer between the legacy data model and the new services.

Change events (Debezium's envelope, ours or real Debezium's) are mapped by configured rules to typed,
versioned domain events that carry their time and provenance; outbox rows are routed as Debezium's
outbox router does; what cannot be mapped goes to a dead letter with its reason and source position.
"""

from __future__ import annotations

from strangler.events.config import DomainEventsConfig
from strangler.events.mapping import DeadLetter, DomainEventMapper, MappingResult
from strangler.events.model import DomainEvent

__all__ = ["DeadLetter", "DomainEvent", "DomainEventMapper", "DomainEventsConfig", "MappingResult"]
