"""`strangler events run`: what it refuses before starting, and the ledger buffer it writes dead letters with."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

from strangler.cli import main
from strangler.events.cli import LedgerBuffer
from strangler.maturity.ledger import Stage, StageEvent
from strangler.store import StoreUnavailable

EVENTS = {"source": "legacy.crm"}


def run(tmp_path: Path, config: dict[str, object], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = tmp_path / "strangler.yaml"
    path.write_text(yaml.safe_dump(config))
    code = main(["events", "run", "-c", str(path)])
    return code, capsys.readouterr().err


def test_without_domain_events_it_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(tmp_path, {}, capsys)
    assert code == 2 and "cdc.domain_events is not configured" in err


@pytest.mark.parametrize(("extra", "missing"), [
    ({"publish": {"path": "events.jsonl"}}, "consume"),
    ({"consume": {"bootstrap_servers": "127.0.0.1:1", "topics": ["t"]}}, "publish"),
])
def test_without_consume_or_publish_it_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: dict[str, object], missing: str
) -> None:
    code, err = run(tmp_path, {"cdc": {"domain_events": {**EVENTS, **extra}}}, capsys)
    assert code == 2 and f"cdc.domain_events.{missing} is not configured" in err


def test_a_bad_mapping_configuration_exits_2_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(tmp_path, {"cdc": {"domain_events": {**EVENTS, "rules": [{"table": "nope"}]}}}, capsys)
    assert code == 2 and "cdc.domain_events.rules[0].table: expected schema.table" in err


class Store:
    def __init__(self, failures: int = 0) -> None:
        self.batches: list[list[StageEvent]] = []
        self.failures = failures

    def record(self, events: Sequence[StageEvent]) -> None:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("down")
        self.batches.append(list(events))


def test_the_ledger_buffer_writes_a_batch_per_flush_and_drops_it_when_the_store_is_down() -> None:
    store = Store(failures=1)
    buffer = LedgerBuffer(store)
    event = StageEvent("req-1", "42", Stage.EXCEPTION, dt.datetime(2024, 1, 1, tzinfo=dt.UTC), detail="dead letter")
    buffer.pending.append(event)
    buffer.flush()  # the store is down: logged, dropped, the mapper goes on
    assert store.batches == [] and buffer.pending == []
    buffer.pending.append(event)
    buffer.flush()
    buffer.flush()  # nothing pending: nothing written
    assert store.batches == [[event]]
