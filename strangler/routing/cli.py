"""`strangler flags list | set | history`: the admin API from the command line (httpx, rich tables).

Exit codes: 0 done, 2 bad input (422, 404, 401), 3 refused by the gate (412), 4 version conflict (409),
1 the admin API could not be reached or failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_GATE, EXIT_CONFLICT = 0, 1, 2, 3, 4
_STATUS_EXIT = {412: EXIT_GATE, 409: EXIT_CONFLICT, 422: EXIT_BAD_INPUT, 404: EXIT_BAD_INPUT, 401: EXIT_BAD_INPUT,
                400: EXIT_BAD_INPUT}


def _common(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("-c", "--config", metavar="FILE", default=default,
                        help="configuration (admin URL and token)")
    parser.add_argument("--admin-url", default=default, help="admin API base URL (default: from the configuration)")
    parser.add_argument("--token", default=default,
                        help="bearer token (default: $STRANGLER_ADMIN_TOKEN, then the configuration)")
    parser.add_argument("--json", action="store_true", default=default, help="print JSON instead of a table")


def add_parser(sub: Any) -> None:
    flags = sub.add_parser("flags", help="read and flip routing flags through the admin API")
    _common(flags, None)
    flags.set_defaults(json=False)
    # the same options are accepted after the action too (`strangler flags list --json`); SUPPRESS keeps
    # an action's parser from resetting what was given before it
    after = argparse.ArgumentParser(add_help=False)
    _common(after, argparse.SUPPRESS)
    actions = flags.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="every capability's flag", parents=[after])
    p = actions.add_parser("set", help="flip a capability's flag", parents=[after])
    p.add_argument("capability")
    p.add_argument("mode", choices=["legacy", "shadow", "canary", "new", "new-only"])
    p.add_argument("--percent", type=float, help="canary share, 0-100")
    p.add_argument("--reason", required=True)
    p.add_argument("--force", action="store_true", help="override the gate (recorded in the audit log)")
    p.add_argument("--expect-version", type=int, help="refuse if the flag is no longer at this version")
    p = actions.add_parser("history", help="a capability's audit log", parents=[after])
    p.add_argument("capability")
    p.add_argument("--limit", type=int, default=50)
    flags.set_defaults(func=run)


def _target(args: argparse.Namespace) -> tuple[str, str | None]:
    url, token = args.admin_url, args.token or os.environ.get("STRANGLER_ADMIN_TOKEN")
    if args.config and (url is None or token is None):
        from strangler.config import load_config
        from strangler.gateway.config import parse_listen

        config = load_config(args.config)
        if url is None:
            host, port = parse_listen(config.admin.listen)
            host = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
            url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        if token is None and config.admin.tokens:
            token = next(iter(config.admin.tokens.values())).get_secret_value()
    return (url or "http://127.0.0.1:9901").rstrip("/"), token


def run(args: argparse.Namespace) -> int:
    url, token = _target(args)
    headers = {"authorization": f"Bearer {token}"} if token else {}
    console = Console()
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=10.0) as client:
            if args.action == "list":
                response = client.get("/flags")
            elif args.action == "set":
                body: dict[str, Any] = {"mode": args.mode, "reason": args.reason, "force": args.force}
                if args.percent is not None:
                    body["percent"] = args.percent
                if args.expect_version is not None:
                    body["expected_version"] = args.expect_version
                response = client.put(f"/flags/{args.capability}", json=body)
            else:
                response = client.get(f"/flags/{args.capability}/history", params={"limit": args.limit})
    except httpx.HTTPError as exc:
        print(f"error: cannot reach the admin API at {url}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        data = response.json()
    except ValueError:
        data = {"detail": response.text}
    if response.status_code >= 400:
        return _refused(response.status_code, data, args.json, console)
    if args.json:
        print(json.dumps(data, indent=2))
    elif args.action == "list":
        _print_flags(console, data)
    elif args.action == "set":
        console.print(f"[green]{data['capability']}[/]: {data['mode']}"
                      + (f" {data['percent']:g}%" if data["mode"] == "canary" else "")
                      + f" (version {data['version']})")
    else:
        _print_history(console, data)
    return EXIT_OK


def _refused(status: int, data: dict[str, Any], as_json: bool, console: Console) -> int:
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        print(f"error: {status} {data.get('title', '')}: {data.get('detail', '')}", file=sys.stderr)
        for err in data.get("errors", []):
            print(f"  {err.get('field')}: {err.get('message')}", file=sys.stderr)
        evidence = data.get("evidence")
        if evidence:
            print(f"  evidence: {evidence['samples']} samples (need {evidence['min_samples']}), divergence rate "
                  f"{evidence['rate']:.4f} (max {evidence['max_divergence_rate']})", file=sys.stderr)
        current = data.get("current")
        if current:
            print(f"  current: {current['mode']} version {current['version']}", file=sys.stderr)
    return _STATUS_EXIT.get(status, EXIT_FAILED)


def _print_flags(console: Console, data: dict[str, Any]) -> None:
    table = Table(title="Routing flags")
    for column in ("capability", "mode", "percent", "version", "updated", "by", "reason"):
        table.add_column(column)
    for flag in data["flags"]:
        table.add_row(flag["capability"], flag["mode"], f"{flag['percent']:g}", str(flag["version"]),
                      flag["updated_at"] or "-", flag["updated_by"] or "-", flag["reason"] or "")
    console.print(table)
    console.print(f"flag store: {data.get('flag_store')}, flags age {data.get('flags_age_seconds')} s")
    if data.get("stale"):
        as_of = data.get("as_of") or "never read from the store: the configured initial modes"
        console.print(f"[yellow]stale[/]: the flags the gateway routes by from memory, as of {as_of} "
                      f"({data.get('flag_store_error')})", highlight=False)


def _print_history(console: Console, data: dict[str, Any]) -> None:
    table = Table(title=f"History of {data['capability']}")
    for column in ("at", "by", "from", "to", "version", "forced", "reason", "evidence"):
        table.add_column(column)
    for entry in data["history"]:
        ev = entry.get("evidence") or {}
        table.add_row(entry["at"], entry["actor"], f"{entry['from']['mode']} {entry['from']['percent']:g}",
                      f"{entry['to']['mode']} {entry['to']['percent']:g}", str(entry["version"]),
                      "yes" if entry["forced"] else "no", entry["reason"],
                      f"{ev.get('samples', '-')} samples, rate {ev.get('rate', 0):.4f}" if ev else "-")
    console.print(table)
