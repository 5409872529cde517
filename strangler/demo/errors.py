"""The demo's errors.

    StranglerError
    └── DemoFailed      a part of the demo could not start (the runner reports it and exits 1)
"""

from __future__ import annotations

from strangler.errors import StranglerError


class DemoFailed(StranglerError):
    """A sample app or the gateway did not start; the message names which and why."""
