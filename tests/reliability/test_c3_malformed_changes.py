"""C3: malformed change events fed to the mapper among valid ones, as bytes the way `strangler events run`
receives them from Kafka (`submit_raw`): not JSON, not a change, a table no rule maps (with
`dead_letter.unmapped_tables: true`), a type mismatch, a missing key column, a missing payload column, an op
without its row. Every malformed one becomes a dead letter with a reason and its position, the mapper keeps
mapping the valid ones after it, and nothing is lost: each change is an event or a dead letter."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from strangler.events.config import DomainEventsConfig
from strangler.events.runner import build_pipeline
from tests.reliability.report import record

pytestmark = [pytest.mark.reliability]


def change(after: dict[str, Any] | None, *, table: str = "customers", op: str = "c", lsn: int = 0) -> bytes:
    source = {"version": "2.7.0.Final", "connector": "postgresql", "name": "legacy.crm", "ts_ms": 1_700_000_000_000,
              "snapshot": "false", "db": "crm", "sequence": f'["{lsn - 8}","{lsn}"]', "schema": "public",
              "table": table, "txId": 7, "lsn": lsn, "xmin": None}
    return orjson.dumps({"before": None, "after": after, "op": op, "ts_ms": 1_700_000_000_005, "transaction": None,
                         "source": source})


MALFORMED = {
    "value not JSON": lambda i: (b'{"id": 1}', b'{"op": "c", "after": {'),
    "key not JSON": lambda i: (b"{not json", change({"id": i, "name": "x", "tier": 1})),
    "value not UTF-8": lambda i: (b'{"id": 1}', b'{"op": "c", "after": {"name": "\xff\xfe"}}'),
    "not a change": lambda i: (b'{"id": 1}', b'{"hello": "world"}'),
    "a JSON array": lambda i: (b'{"id": 1}', b"[1, 2, 3]"),
    "unknown table": lambda i: (orjson.dumps({"id": i}), change({"id": i, "total": 3}, table="invoices")),
    "type mismatch": lambda i: (orjson.dumps({"id": i}), change({"id": i, "name": "Ada", "tier": "gold"})),
    "missing key": lambda i: (b'{"id": null}', change({"name": "Ada", "tier": 1})),
    "missing column": lambda i: (orjson.dumps({"id": i}), change({"id": i, "tier": 1})),
    "op without its row": lambda i: (orjson.dumps({"id": i}), change(None, op="c")),
}

CONFIG = {
    "source": "legacy.crm",
    "types": {"CustomerRegistered": {"payload": {"customer_id": "int", "name": "str", "tier": "int"}}},
    "rules": [{"table": "public.customers", "ops": ["c"], "event": "CustomerRegistered", "aggregate_type": "customer",
               "key": "id", "payload": {"customer_id": "id", "name": "name", "tier": "tier"},
               "topic": "domain.customer"}],
}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def test_malformed_changes_go_to_the_dead_letter_and_nothing_is_lost(tmp_path: Path) -> None:
    config = DomainEventsConfig.model_validate({
        **CONFIG, "publish": {"path": str(tmp_path / "events.jsonl")},
        "dead_letter": {"path": str(tmp_path / "dead.jsonl"), "unmapped_tables": True},
    })
    pipeline = build_pipeline(config)
    rng = random.Random(3)
    inputs: list[tuple[str, bytes | None, bytes]] = []
    for i in range(2000):
        inputs.append(("valid", orjson.dumps({"id": i}), change({"id": i, "name": f"n{i}", "tier": i % 5}, lsn=i)))
    kinds = list(MALFORMED)
    for j in range(400):
        kind = kinds[j % len(kinds)]
        key, value = MALFORMED[kind](10_000 + j)
        inputs.insert(rng.randrange(len(inputs) + 1), (kind, key, value))
    done: list[str] = []
    for n, (_, key, value) in enumerate(inputs):
        position = f"legacy.crm.public.customers/0/{n}"
        pipeline.submit_raw(key, value, position, lambda p=position: done.append(p),
                            source={"topic": "legacy.crm.public.customers", "partition": 0, "offset": n})
        if n % 500 == 0:
            pipeline.poll(0)
    pipeline.flush(30)
    pipeline.close()

    events = [orjson.loads(r["value"]) for r in read_jsonl(tmp_path / "events.jsonl")]
    dead = [orjson.loads(r["value"]) for r in read_jsonl(tmp_path / "dead.jsonl")]
    expected_dead = {f"legacy.crm.public.customers/0/{n}": kind for n, (kind, _, _) in enumerate(inputs)
                     if kind != "valid"}
    dead_by_position = {d["position"]: d for d in dead}
    assert len(dead) == len(expected_dead)
    assert set(dead_by_position) == set(expected_dead)
    assert all(d["source"]["offset"] == int(d["position"].rsplit("/", 1)[1]) for d in dead)
    reasons = {p: dead_by_position[p]["reason"] for p in expected_dead}
    assert all(reasons.values()), reasons
    mapped = sorted(e["payload"]["customer_id"] for e in events)
    assert mapped == list(range(2000))  # every valid change, before and after each malformed one
    assert len(done) == len(inputs) and pipeline.stats.done == len(inputs)  # each change acknowledged
    examples = {kind: reasons[next(p for p, k in expected_dead.items() if k == kind)][:60] for kind in kinds}
    record("C3", f"{len(inputs)} changes, {len(expected_dead)} malformed of {len(kinds)} kinds",
           f"{len(dead)} dead letters with a reason, {len(events)} events, 0 lost; reasons: {examples}")
