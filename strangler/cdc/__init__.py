"""Change data capture: the legacy database's changes as Debezium-compatible change events.

Sources (PostgreSQL logical replication with pgoutput; an embedded SQLite changelog) feed a connector that
sends events to a sink (Kafka, JSON Lines) and advances the source only past what the sink acknowledged.
Adapters (psycopg, psycopg2, confluent-kafka, sqlite3) are imported by the modules that need them only.
"""

from __future__ import annotations

from strangler.cdc.config import CdcConfig, ConnectorConfig, SinkConfig, SourceConfig
from strangler.cdc.envelope import Envelope, Record
from strangler.cdc.errors import CdcError, SinkError, SlotLost, SourceError, UnmappableColumn, UnsafeSinkSettings
from strangler.cdc.ports import ChangeSource, Checkpoint, EventSink
from strangler.cdc.translator import ChangeTranslator

__all__ = [
    "CdcConfig", "CdcError", "ChangeSource", "ChangeTranslator", "Checkpoint", "ConnectorConfig", "Envelope",
    "EventSink", "Record", "SinkConfig", "SinkError", "SlotLost", "SourceConfig", "SourceError", "UnmappableColumn",
    "UnsafeSinkSettings",
]
