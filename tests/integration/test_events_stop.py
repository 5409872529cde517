"""`strangler events run`'s runner stops when told to even when its broker has gone away meanwhile: offsets it
cannot commit stay uncommitted (the changes are mapped again after a restart, with the same event ids)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from strangler.events import DomainEventsConfig
from strangler.events.runner import KafkaMapperRunner, build_pipeline
from tests.integration.test_outcomes_mapper import config, created_customers, produce, topics, wait_for
from tests.support.kafka import TansuBroker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture
def private_broker() -> Iterator[TansuBroker]:
    broker = TansuBroker()  # its own: this test stops it
    broker.start()
    yield broker
    broker.close()


def test_a_stop_with_the_broker_gone_ends_the_runner(private_broker: TansuBroker) -> None:
    bootstrap = private_broker.bootstrap_servers
    source, events, dead = topics(private_broker, "legacy.crm.public.customers", "domain.customer", "domain.dead")
    group = f"mapper-{uuid.uuid4().hex[:8]}"
    produce(bootstrap, source, created_customers(20, 3000))
    settings = DomainEventsConfig.model_validate(config(bootstrap, source, events, dead, group))
    assert settings.consume is not None
    pipeline = build_pipeline(settings)  # publishing to the same broker
    runner = KafkaMapperRunner(pipeline, settings.consume, commit_interval=3600)  # nothing committed before the stop
    stop = threading.Event()
    outcome: list[object] = []
    thread = threading.Thread(target=lambda: outcome.append(runner.run(stop)), daemon=True)
    thread.start()
    wait_for(lambda: pipeline.stats.done == 20, 60, "the 20 changes mapped and published")
    private_broker.stop()
    stop.set()
    started = time.monotonic()
    thread.join(90)
    pipeline.close()
    assert not thread.is_alive(), "the runner did not stop with its broker gone"
    print(f"stopped in {time.monotonic() - started:.1f} s")
    assert runner.committed == {}  # nothing could be committed: a restart maps the 20 changes again
