"""`strangler`: the command line. Parses arguments, loads the configuration, hands over; nothing else.

Exit codes: 0 done, 1 a service (the store, the admin API) unreachable or failing, 2 bad input (configuration
or arguments), 3 refused by a gate, 4 version conflict.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from strangler import __version__
from strangler.errors import ConfigError

EXIT_OK = 0
EXIT_UNAVAILABLE = 1
EXIT_BAD_INPUT = 2


def _load(path: str):  # type: ignore[no-untyped-def]
    from strangler.config import load_config

    return load_config(path)


def cmd_check(args: argparse.Namespace) -> int:
    config = _load(args.config)
    print(
        f"ok: {args.config}: {len(config.capabilities)} capabilities, {len(config.upstreams)} upstreams"
    )
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    config = _load(args.config)
    updates = {}
    if args.workers is not None:
        updates["workers"] = args.workers
    if args.listen is not None:
        updates["listen"] = args.listen
    if updates:
        config = config.model_copy(update=updates)
    from strangler.gateway.server import run

    return run(config)


def cmd_report(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if args.capability is not None and args.capability not in config.capabilities:
        print(f"error: unknown capability {args.capability!r}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.drift_limit < 1:
        print(f"error: --drift-limit must be at least 1, got {args.drift_limit}", file=sys.stderr)
        return EXIT_BAD_INPUT
    import json

    from strangler.app import utcnow
    from strangler.reconcile.report import drift_jobs, jobs_of_capability, render_drift_table
    from strangler.reconcile.store import SqlDriftStore
    from strangler.shadow.evidence import ShadowEvidence
    from strangler.shadow.report import build_report, render_html, render_table
    from strangler.shadow.store import SqlDivergenceStore
    from strangler.store import StoreUnavailable, create_store_engine, upgrade_schema

    jobs = config.reconcile.jobs
    names = jobs_of_capability(jobs, config.precedence, args.capability) if args.capability else list(jobs)
    try:
        upgrade_schema(config.store)
        engine = create_store_engine(config.store)
        evidence = ShadowEvidence(SqlDivergenceStore(engine), config.capabilities, utcnow)
        report = build_report(evidence, [args.capability] if args.capability else None)
        report["drift"] = drift_jobs(SqlDriftStore(engine), jobs, names, utcnow(), args.drift_limit)
    except (StoreUnavailable, OSError) as exc:
        print(f"error: cannot read the store: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    if args.format == "table" and not args.output:
        render_table(report)
        from rich.console import Console

        render_drift_table(Console(), report["drift"])
        return EXIT_OK
    text = render_html(report) if args.format == "html" else json.dumps(report, indent=2, default=str)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text)
        print(f"wrote {args.output}")
    else:
        print(text)
    return EXIT_OK


def cmd_db(args: argparse.Namespace) -> int:
    config = _load(args.config)
    from strangler.store import StoreUnavailable, redact_url, upgrade_schema

    try:
        upgrade_schema(config.store)
    except StoreUnavailable as exc:
        print(f"error: {args.config}: cannot upgrade the schema: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    print(f"ok: the store at {redact_url(config.store)} is at the newest schema")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from strangler.demo.runner import run_demo

    return run_demo(serve=args.serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="strangler", description="Strangler-fig migration gateway")
    parser.add_argument("--version", action="version", version=f"strangler {__version__}")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("check", help="validate a configuration file")
    p.add_argument("-c", "--config", required=True, metavar="FILE")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("serve", help="run the proxy and the admin API")
    p.add_argument("-c", "--config", required=True, metavar="FILE")
    p.add_argument("--workers", type=int, help="override 'workers'")
    p.add_argument("--listen", help="override 'listen' (HOST:PORT)")
    p.set_defaults(func=cmd_serve)

    from strangler.cdc.cli import add_parser as add_cdc_parser
    from strangler.routing.cli import add_parser as add_flags_parser

    add_flags_parser(sub)

    from strangler.events.cli import add_parser as add_events_parser

    add_events_parser(sub)

    from strangler.reconcile.cli import add_parser as add_reconcile_parser

    add_reconcile_parser(sub)
    add_cdc_parser(sub)

    p = sub.add_parser("report", help="the divergence report and the open state drift, read from the store")
    p.add_argument("-c", "--config", required=True, metavar="FILE")
    p.add_argument("--capability", help="one capability and the reconciliation jobs of its entities (default: all)")
    p.add_argument("--drift-limit", type=int, default=1000, metavar="N",
                   help="drift records read per reconciliation job (default 1000)")
    p.add_argument("--format", choices=["table", "json", "html"], default="table")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("db", help="the store's schema")
    p.add_argument("action", choices=["upgrade"])
    p.add_argument("-c", "--config", required=True, metavar="FILE")
    p.set_defaults(func=cmd_db)

    p = sub.add_parser("demo", help="the whole thing on embedded defaults, no external services")
    p.add_argument("--serve", action="store_true", help="keep everything running and print the URLs")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
