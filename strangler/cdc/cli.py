"""`strangler cdc run | install | debezium-config`.

Exit codes: 0 done, 1 a connector failed, 2 bad input (configuration, unknown connector).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def add_parser(sub: Any) -> None:
    cdc = sub.add_parser("cdc", help="change data capture: legacy database changes as Debezium events")
    actions = cdc.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = actions.add_parser("run", help="run connectors until SIGTERM or SIGINT")
    p.add_argument("-c", "--config", required=True, metavar="FILE")
    p.add_argument("connector", nargs="*", help="connectors to run (default: all)")
    p.add_argument("--no-status", action="store_true", help="no live status line")
    p.set_defaults(func=cmd_run)
    p = actions.add_parser("install", help="install (or remove) the change triggers of a SQLite source")
    p.add_argument("-c", "--config", required=True, metavar="FILE")
    p.add_argument("connector")
    p.add_argument("--remove", action="store_true", help="drop the triggers, the changelog and the offsets")
    p.set_defaults(func=cmd_install)
    p = actions.add_parser("debezium-config", help="print the equivalent Kafka Connect / Debezium configuration")
    p.add_argument("-c", "--config", required=True, metavar="FILE")
    p.add_argument("connector")
    p.add_argument("--show-secrets", action="store_true", help="print the password instead of ${env:PGPASSWORD}")
    p.set_defaults(func=cmd_debezium_config)


def _cdc(path: str) -> Any:
    from strangler.config import load_config

    config = load_config(path)
    if config.cdc is None or not config.cdc.connectors:
        print(f"error: {path}: cdc.connectors: no connector is configured", file=sys.stderr)
        return None
    return config.cdc


def _known(cdc: Any, names: list[str]) -> bool:
    unknown = [n for n in names if n not in cdc.connectors]
    if unknown:
        print(f"error: unknown connector {unknown[0]!r} (configured: {', '.join(sorted(cdc.connectors))})",
              file=sys.stderr)
        return False
    return True


def cmd_run(args: argparse.Namespace) -> int:
    cdc = _cdc(args.config)
    if cdc is None or not _known(cdc, args.connector):
        return EXIT_BAD_INPUT
    from strangler.cdc.errors import UnsafeSinkSettings
    from strangler.cdc.runner import run_connectors

    logging.getLogger("strangler.cdc").setLevel(logging.INFO)
    # this process streams: it allocates a few short-lived containers per change, so collect the young
    # generation less often and leave what start-up built (modules, configuration) out of later collections
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    show = None
    if not args.no_status:
        from strangler.cdc.display import StatusDisplay

        show = StatusDisplay()
    try:
        return run_connectors(cdc, args.connector or list(cdc.connectors), show=show)
    except UnsafeSinkSettings as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def cmd_install(args: argparse.Namespace) -> int:
    cdc = _cdc(args.config)
    if cdc is None or not _known(cdc, [args.connector]):
        return EXIT_BAD_INPUT
    connector = cdc.connectors[args.connector]
    if connector.source.kind != "sqlite":
        print(f"error: connector {args.connector!r} reads {connector.source.kind}; install is for sqlite sources "
              "(a postgres source creates its publication and slot itself)", file=sys.stderr)
        return EXIT_BAD_INPUT
    import sqlite3

    from strangler.cdc.errors import SourceError
    from strangler.cdc.runner import topic_prefix
    from strangler.cdc.sqlite import install, open_database
    from strangler.cdc.tables import CaptureRules

    source = connector.source
    rules = CaptureRules(topic_prefix(args.connector, connector), source.table_include, source.table_exclude,
                         source.column_exclude)
    try:
        conn = open_database(str(source.path))
        try:
            tables = install(conn, source, rules, remove=args.remove)
        finally:
            conn.close()
    except (SourceError, sqlite3.Error) as exc:
        print(f"error: {source.path}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    verb = "removed the triggers from" if args.remove else "installed triggers on"
    print(f"ok: {verb} {len(tables)} tables in {source.path}: {', '.join(tables) or '(none)'}")
    return EXIT_OK


def cmd_debezium_config(args: argparse.Namespace) -> int:
    cdc = _cdc(args.config)
    if cdc is None or not _known(cdc, [args.connector]):
        return EXIT_BAD_INPUT
    from strangler.cdc.debezium_config import debezium_config
    from strangler.cdc.errors import CdcError

    try:
        body = debezium_config(args.connector, cdc.connectors[args.connector], show_secrets=args.show_secrets)
    except CdcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(json.dumps(body, indent=2))
    return EXIT_OK
