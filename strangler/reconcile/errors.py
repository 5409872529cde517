"""The reconcile package's errors.

    StranglerError
    └── ReconcileError
        ├── SideUnavailable     a side's database or service cannot be read
        ├── UnsupportedSide     a side the comparison cannot read (not PostgreSQL, MariaDB/MySQL or SQLite)
        └── RepairFailed        repair events could not all be delivered
"""

from __future__ import annotations

from strangler.errors import StranglerError


class ReconcileError(StranglerError):
    """Base of the reconcile package's errors."""


class SideUnavailable(ReconcileError):
    """A side's database or service cannot be read; the job stops and keeps its checkpoint."""


class UnsupportedSide(ReconcileError):
    """A side the comparison cannot read."""


class RepairFailed(ReconcileError):
    """Repair events could not all be delivered."""
