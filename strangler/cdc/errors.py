"""Errors of change data capture.

    CdcError
    ├── UnmappableColumn     a captured column's type has no Debezium rendering (at start-up or on a schema change)
    ├── UnrenderableValue    a value Debezium's rendering refuses (NaN in a precise decimal); the connector stops
    ├── UnsafeSinkSettings   sink settings that could lose acknowledged changes; refused at start-up
    ├── SourceMisconfigured  the source cannot be used as configured (wal_level, triggers missing): no retry
    ├── SourceError          the source cannot be read (connection, slot, publication, changelog)
    │   └── SlotLost         the slot is gone but changes were streamed from it before: a gap
    └── SinkError            the sink refused or lost events; the connector rewinds to the last confirmed position
"""

from __future__ import annotations

from strangler.errors import StranglerError


class CdcError(StranglerError):
    """Base of the errors the cdc package raises on purpose."""


class UnmappableColumn(CdcError):
    def __init__(self, table: str, column: str, type_name: str, detail: str = "") -> None:
        extra = f": {detail}" if detail else ""
        super().__init__(
            f"column {table}.{column} has type {type_name!r}, which has no Debezium rendering here{extra}; "
            f"exclude it with column_exclude or change its type"
        )
        self.table, self.column, self.type_name = table, column, type_name


class UnrenderableValue(CdcError):
    def __init__(self, table: str, column: str, detail: str) -> None:
        super().__init__(f"a value of column {table}.{column} cannot be rendered: {detail}")
        self.table, self.column = table, column


class UnsafeSinkSettings(CdcError):
    pass


class SourceMisconfigured(CdcError):
    pass


class SourceError(CdcError):
    pass


class SlotLost(SourceError):
    pass


class SinkError(CdcError):
    pass
