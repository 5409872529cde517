"""Errors of the domain-event mapper.

    EventsError
    ├── SinkUnavailable   a record could not be delivered (the broker refused or the file failed)
    └── DeliveryFailed    the pipeline stopped: an output was never acknowledged, so its change is not done
"""

from __future__ import annotations

from strangler.errors import StranglerError


class EventsError(StranglerError):
    """Base of the errors the events package raises on purpose."""


class SinkUnavailable(EventsError):
    pass


class DeliveryFailed(EventsError):
    pass
