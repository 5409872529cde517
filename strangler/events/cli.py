"""`strangler events run -c FILE`: the domain-event mapper as a Kafka consumer group.

Exit codes: 0 stopped by SIGTERM/SIGINT after flushing and committing, 1 an output was not acknowledged (the
offsets stay behind it), 2 bad configuration.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from strangler.store import StoreUnavailable

log = logging.getLogger("strangler.events")
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def add_parser(sub: Any) -> None:
    events = sub.add_parser("events", help="map change events to typed domain events")
    actions = events.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = actions.add_parser("run", help="consume change events from Kafka, publish domain events and dead letters")
    p.add_argument("-c", "--config", required=True, metavar="FILE")
    p.add_argument("--no-ledger", action="store_true", help="do not record dead letters in the maturity ledger")
    p.set_defaults(func=cmd_run)


class LedgerBuffer:
    """Stage events gathered between commits and written in one batch; the ledger is advisory, so a store
    that cannot be reached loses the batch (logged) instead of stopping the mapper."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.pending: list[Any] = []

    def flush(self) -> None:
        batch, self.pending = self.pending, []
        if batch:
            try:
                self.store.record(batch)
            except StoreUnavailable as exc:
                log.warning("maturity ledger: %d stage events not recorded: %s", len(batch), exc)


def _ledger(config: Any) -> LedgerBuffer | None:
    from strangler.maturity.store import SqlLedgerStore
    from strangler.store import create_store_engine, upgrade_schema

    try:
        upgrade_schema(config.store)
    except Exception as exc:  # the ledger is advisory: map without it
        log.warning("maturity ledger unavailable, dead letters are not recorded there: %s", str(exc).splitlines()[0])
        return None
    return LedgerBuffer(SqlLedgerStore(create_store_engine(config.store)))


def cmd_run(args: argparse.Namespace) -> int:
    from strangler.config import load_config
    from strangler.events.errors import DeliveryFailed, EventsError
    from strangler.events.runner import KafkaMapperRunner, build_pipeline

    config = load_config(args.config)
    cdc = getattr(config, "cdc", None)
    events = getattr(cdc, "domain_events", None)
    if events is None:
        print(f"error: {args.config}: cdc.domain_events is not configured", file=sys.stderr)
        return EXIT_BAD_INPUT
    if events.consume is None or events.publish is None:
        missing = "consume" if events.consume is None else "publish"
        print(f"error: {args.config}: cdc.domain_events.{missing} is not configured (needed by 'events run')",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    ledger = None if args.no_ledger else _ledger(config)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    pipeline = build_pipeline(events, ledger=ledger.pending.append if ledger else None)
    runner = KafkaMapperRunner(pipeline, events.consume, after_commit=ledger.flush if ledger else None)
    log.info("mapping %s (group %s) to domain events", ", ".join(events.consume.topics), events.consume.group_id)
    code = EXIT_OK
    try:
        stats = runner.run(stop)
    except (DeliveryFailed, EventsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = EXIT_FAILED
    else:
        print(f"stopped: {stats.changes} changes read, {stats.events} events and {stats.dead_letters} dead letters "
              f"published, {stats.done} changes done", file=sys.stderr)
    finally:
        pipeline.close()
        if ledger is not None:
            ledger.flush()
    return code
