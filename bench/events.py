"""Domain events and outcomes benchmark: how fast the outcome comparison and the domain-event mapper are.

Measured in one run (each part repeated, medians reported):

1. `outcomes`: the outcome joiner alone, pinned to one core: legacy and new events of N entities paired by
   entity and correlation id and compared under a precedence rule (10% differ in one field); pairs/s of
   CPU time. Target >= 10,000 pairs/s.
2. `mapping`: the mapper alone, pinned to one core: Debezium update events (before and after images) of a
   customers table mapped by a rule with `changed` columns to a typed event (pydantic validation of the
   payload, dates read from epoch days), and the same plus serialising each event to its Kafka record;
   changes/s of CPU time.
3. `kafka`: `strangler.events.runner.KafkaMapperRunner` on a private Tansu broker: 200,000 change events
   already on a topic, consumed by a consumer group, mapped, published with acks=all by the idempotent
   producer, offsets committed behind the acknowledgements; changes/s from start to the last commit.
4. `end-to-end`: PostgreSQL (private cluster) with 200,000 inserted rows in its WAL, read by
   `pg_recvlogical` (pgoutput, to /dev/null) and, from the same WAL, by `strangler cdc run` (Debezium
   events to Tansu) with `strangler events run` (typed events to Tansu, acknowledged) running alongside;
   changes/s of each from start to the last acknowledged event (the mapper's: the last domain event
   readable on its topic), and strangler's share of pg_recvlogical's rate. Target >= 30%. In the same
   rounds, from the same WAL, the in-process variant: one `strangler cdc run` whose connector maps its
   changes itself (`map_domain_events: true`), once publishing the change events too and once the domain
   events only (`publish_change_events: false`), from process start to the last change whose outputs are
   all acknowledged (`strangler_cdc_mapped_total`).

    python bench/events.py                      # everything; rewrites "## Domain events and outcomes" in RESULTS.md
    python bench/events.py --only outcomes mapping --no-write      # the CPU-bound parts, a quick look
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from strangler.events import DomainEventMapper, DomainEventsConfig  # noqa: E402
from strangler.events.model import DomainEvent  # noqa: E402
from strangler.events.pipeline import encode_event  # noqa: E402
from strangler.precedence import PrecedenceConfig, PrecedenceRules  # noqa: E402
from strangler.shadow.outcomes import OutcomeJoiner  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION_START = "<!-- bench/events.py: start -->"
SECTION_END = "<!-- bench/events.py: end -->"
T0 = dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.UTC)
EVENT = "CustomerRegistered"
TYPES = {EVENT: {"payload": {"customer_id": "int", "name": "str", "street": "str", "city": "str", "zip": "str",
                             "valid_from": "date"}}}
PAYLOAD = {"customer_id": "id", "name": "name", "street": "corr_street", "city": "corr_city", "zip": "corr_zip",
           "valid_from": "address_valid_from"}


def pin_to_one_core() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})


def cpu_rate(work: Callable[[], int]) -> float:
    """Items per second of this process's CPU time."""
    started = time.process_time()
    items = work()
    return items / (time.process_time() - started)


# -- 1. outcome comparison -------------------------------------------------------------------------------


def outcome_pairs(n: int) -> list[tuple[DomainEvent, DomainEvent]]:
    pairs = []
    for i in range(n):
        payload = {"customer_id": i, "name": f"Customer {i}", "street": f"{i} Main St", "city": "Springfield",
                   "zip": f"{i % 100000:05d}", "valid_from": "2024-06-01", "tags": ["a", "b"]}
        other = dict(payload, zip="00000-0") if i % 10 == 0 else payload
        common = dict(event_type="CustomerAddressChanged", event_version=1, aggregate_type="customer",
                      aggregate_id=str(i), event_time=T0, effective_time=T0, processing_time=T0, sequence=str(i),
                      correlation_id=f"req-{i}", causation_id=None)
        pairs.append((DomainEvent(event_id=f"l-{i}", source="legacy.crm", payload=payload, **common),
                      DomainEvent(event_id=f"n-{i}", source="customers", payload=other, **common)))
    return pairs


def bench_outcomes(n: int, repeats: int) -> dict[str, Any]:
    rules = PrecedenceRules(PrecedenceConfig.model_validate({"entities": {"customer": {"groups": {
        "all": {"fields": ["/*"], "authority": "legacy", "conflict": "authority-wins"}}}}}))
    pairs = outcome_pairs(n)
    rates, kinds = [], {}
    for _ in range(repeats):
        def work(joiner: OutcomeJoiner = OutcomeJoiner(rules, window=dt.timedelta(seconds=30),  # noqa: B008
                                                       modes=lambda: {})) -> int:
            counts = {"match": 0, "divergence": 0}
            for legacy, new in pairs:
                joiner.add("legacy", legacy, T0)
                for result in joiner.add("new", new, T0):
                    counts[result.kind] += 1
            kinds.update(counts)
            return len(pairs)

        rates.append(cpu_rate(work))
    return {"pairs": n, "rates": rates, "median": statistics.median(rates), "kinds": kinds}


# -- 2. the mapper alone ---------------------------------------------------------------------------------


def mapping_config(topic: str = "domain.customer", ops: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    rule = {"table": "public.customers", "ops": ops or ["u"], "changed": ["corr_street", "corr_city", "corr_zip"],
            "event": EVENT, "aggregate_type": "customer", "key": "id", "payload": PAYLOAD,
            "effective_time": "address_valid_from", "correlation_id": "correlation_id", "topic": topic}
    if ops and "u" not in ops:
        rule.pop("changed")
    return {"source": "legacy.crm", "types": TYPES, "rules": [rule], **extra}


def change_event(i: int, op: str = "u") -> dict[str, Any]:
    row = {"id": i, "name": f"Customer {i}", "corr_street": f"{i} Main St", "corr_city": "Springfield",
           "corr_zip": f"{i % 100000:05d}", "address_valid_from": 19875, "correlation_id": f"req-{i}"}
    before = dict(row, corr_zip="99999") if op == "u" else None
    ts = 1_717_243_200_000 + i
    return {"before": before, "after": row, "op": op, "ts_ms": ts, "ts_us": ts * 1000, "transaction": None,
            "source": {"version": "2.7.0.Final", "connector": "postgresql", "name": "legacy", "ts_ms": ts,
                       "ts_us": ts * 1000, "snapshot": "false", "db": "crm", "sequence": f'["{i}","{i}"]',
                       "schema": "public", "table": "customers", "txId": i, "lsn": 10_000_000 + i * 8,
                       "xmin": None}}


def bench_mapping(n: int, repeats: int) -> dict[str, Any]:
    mapper = DomainEventMapper(DomainEventsConfig.model_validate(mapping_config()))
    changes = [({"id": i}, change_event(i), f"t/0/{i}") for i in range(n)]
    now = dt.datetime.now(dt.UTC)
    mapped, encoded = [], []
    for _ in range(repeats):
        def only_map() -> int:
            return sum(len(mapper.map(k, v, p, now).events) for k, v, p in changes)

        def map_and_encode() -> int:
            count = 0
            for k, v, p in changes:
                for _, event in mapper.map(k, v, p, now).events:
                    encode_event(event)
                    count += 1
            return count

        mapped.append(cpu_rate(only_map))
        encoded.append(cpu_rate(map_and_encode))
    return {"changes": n, "map": mapped, "map_median": statistics.median(mapped), "encode": encoded,
            "encode_median": statistics.median(encoded)}


# -- 3. the Kafka runner ---------------------------------------------------------------------------------


def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 50,
                         "batch.num.messages": 10000})
    for key, value in records:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120):
        raise RuntimeError("could not produce the benchmark's change events")


def bench_kafka(broker: Any, n: int, repeats: int) -> dict[str, Any]:
    from strangler.events.runner import FAST_GROUP, KafkaMapperRunner, build_pipeline

    records = [(orjson.dumps({"id": i}), orjson.dumps(change_event(i))) for i in range(n)]
    rates = []
    for _ in range(repeats):
        suffix = uuid.uuid4().hex[:8]
        source = broker.create_topic(f"bench.public.customers-{suffix}")
        target = broker.create_topic(f"domain.customer-{suffix}")
        produce(broker.bootstrap_servers, source, records)
        config = DomainEventsConfig.model_validate(mapping_config(
            target, consume={"bootstrap_servers": broker.bootstrap_servers, "topics": [source],
                             "group_id": f"bench-{suffix}", "settings": FAST_GROUP},
            publish={"bootstrap_servers": broker.bootstrap_servers}, dead_letter={"topic": f"dead-{suffix}"}))
        assert config.consume is not None
        pipeline = build_pipeline(config)
        runner = KafkaMapperRunner(pipeline, config.consume, commit_interval=0.25)
        stop = threading.Event()
        first: list[float] = []
        thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
        thread.start()
        deadline = time.monotonic() + 600
        while runner.committed.get((source, 0), 0) < n and time.monotonic() < deadline:
            if not first and pipeline.stats.changes:
                first.append(time.monotonic())  # from the first change read: the group join is not mapping
            time.sleep(0.02)
        finished = time.monotonic()
        stop.set()
        thread.join(60)
        pipeline.close()
        if runner.committed.get((source, 0), 0) < n:
            raise RuntimeError(f"the runner committed {runner.committed} of {n} changes")
        rates.append(n / (finished - first[0]))
    return {"changes": n, "rates": rates, "median": statistics.median(rates)}


# -- 4. end to end from PostgreSQL -----------------------------------------------------------------------


def metric(url: str, name: str) -> float:
    try:
        text = urllib.request.urlopen(url, timeout=2).read().decode()
    except OSError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#") and line[len(name)] in "{ ")


def bench_end_to_end(broker: Any, cluster: Any, n: int, repeats: int, workdir: Path) -> dict[str, Any]:
    import psycopg
    import yaml

    from tests.support.ports import free_port

    results = []
    stalled: list[int] = []  # events published when a two-process round stopped progressing
    for round_ in range(repeats):
        suffix = uuid.uuid4().hex[:8]
        db = cluster.create_database(f"bench_{suffix}")
        with psycopg.connect(db.dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE customers (id int PRIMARY KEY, name text, corr_street text, corr_city text, "
                         "corr_zip text, address_valid_from date, correlation_id text)")
            conn.execute("CREATE PUBLICATION bench_pub FOR TABLE customers")
            for slot in ("bench_recv", *IN_PROCESS):
                conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
        prefix = f"bench-{suffix}"
        changes_topic = broker.create_topic(f"{prefix}.public.customers")
        events_topic = broker.create_topic(f"domain.customer-{suffix}")
        metrics = f"127.0.0.1:{free_port()}"
        events = mapping_config(events_topic, ops=["c"], dead_letter={"topic": f"dead-{suffix}"},
                                consume={"bootstrap_servers": broker.bootstrap_servers, "topics": [changes_topic],
                                         "group_id": f"mapper-{suffix}",
                                         "settings": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}},
                                publish={"bootstrap_servers": broker.bootstrap_servers})
        config = {
            "store": f"sqlite:///{workdir}/store-{suffix}.db",
            "precedence": {"entities": {"customer": {"groups": {"all": {"fields": ["/*"], "authority": "legacy"}}}}},
            "cdc": {"state_dir": str(workdir / f"cdc-{suffix}"), "metrics_listen": metrics,
                    "connectors": {"legacy": {
                        "source": {"kind": "postgres", "dsn": db.dsn, "slot": "bench_cdc", "publication": "bench_pub",
                                   "publication_autocreate": "disabled", "snapshot": "never",
                                   "heartbeat_interval": 0},
                        "sink": {"kind": "kafka", "bootstrap_servers": broker.bootstrap_servers,
                                 "topic_prefix": prefix}}},
                    "domain_events": events},
        }
        path = workdir / f"strangler-{suffix}.yaml"
        path.write_text(yaml.safe_dump(config))
        in_process_paths = {}
        for slot, publish_changes in IN_PROCESS.items():
            variant = yaml.safe_load(yaml.safe_dump(config))
            variant["cdc"]["metrics_listen"] = f"127.0.0.1:{free_port()}"
            variant["cdc"]["domain_events"]["rules"][0]["topic"] = broker.create_topic(f"domain.{slot}-{suffix}")
            connector = variant["cdc"]["connectors"]["legacy"]
            connector.update(map_domain_events=True, publish_change_events=publish_changes)
            connector["source"]["slot"] = slot
            connector["sink"]["topic_prefix"] = f"{prefix}-{slot}"
            in_process_paths[slot] = workdir / f"strangler-{suffix}-{slot}.yaml"
            in_process_paths[slot].write_text(yaml.safe_dump(variant))
        log = open(workdir / f"processes-{suffix}.log", "ab")  # noqa: SIM115 - closed below
        command = [sys.executable, "-m", "strangler", "--log-level", "WARNING"]
        # create the CDC slot first, so that it sees the inserts below; then stop it
        cdc = subprocess.Popen([*command, "cdc", "run", "-c", str(path), "--no-status"], stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while not _slot_exists(db.dsn, "bench_cdc") and time.monotonic() < deadline:
            time.sleep(0.2)
        cdc.send_signal(signal.SIGTERM)
        cdc.wait(60)
        with psycopg.connect(db.dsn, autocommit=True) as conn:
            for start in range(0, n, 1000):  # 1,000 rows a transaction
                conn.execute("INSERT INTO customers SELECT i, 'Customer ' || i, i || ' Main St', 'Springfield', "
                             "lpad((i %% 100000)::text, 5, '0'), date '2024-06-01', 'req-' || i "
                             "FROM generate_series(%s::int, %s::int) AS i", (start, min(start + 1000, n) - 1))
            end_lsn = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
        # pg_recvlogical: the same changes, decoded by the server, to /dev/null
        started = time.monotonic()
        subprocess.run(["pg_recvlogical", "-d", db.dsn, "--slot", "bench_recv", "--start", "--endpos", str(end_lsn),
                        "--no-loop", "-o", "proto_version=1", "-o", "publication_names=bench_pub", "-f", "/dev/null"],
                       check=True, timeout=600)
        recv_seconds = time.monotonic() - started
        # strangler: the mapper waits in its group; the connector starts the clock
        mapper = subprocess.Popen([*command, "events", "run", "-c", str(path), "--no-ledger"], stdout=log,
                                  stderr=log)
        time.sleep(8)  # the consumer group's join
        started = time.monotonic()
        cdc = subprocess.Popen([*command, "cdc", "run", "-c", str(path), "--no-status"], stdout=log, stderr=log)
        cdc_done = None
        deadline = time.monotonic() + 900
        # the domain events are counted on their topic by direct assignment: a client polling the mapper's
        # group for its committed offsets disturbs the group on this broker
        events_seen = EventCounter(broker.bootstrap_servers, events_topic)
        total_seconds: float | None = None
        progress = (0, time.monotonic())
        try:
            while time.monotonic() < deadline:
                if cdc_done is None and metric(f"http://{metrics}/metrics", "strangler_cdc_acknowledged_total") >= n:
                    cdc_done = time.monotonic() - started
                seen = events_seen.count(0.25)
                if seen >= n:
                    total_seconds = time.monotonic() - started
                    break
                if seen > progress[0]:
                    progress = (seen, time.monotonic())
                elif time.monotonic() - progress[1] > STALL:
                    print(f"the two-process mapper stalled at {seen} events; see {log.name}", flush=True)
                    stalled.append(seen)
                    break
            else:
                raise RuntimeError(f"strangler did not map {n} changes within 900 s; see {log.name}")
        finally:
            events_seen.close()
            for process in (cdc, mapper):
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()
            log.close()
        result = {"round": round_ + 1, "recvlogical": n / recv_seconds,
                  "strangler": n / total_seconds if total_seconds else None,
                  "cdc": n / cdc_done if cdc_done else None,
                  "share": recv_seconds / total_seconds if total_seconds else None}
        for slot, variant_path in in_process_paths.items():
            seconds, cpu = run_in_process(command, variant_path, n, workdir)
            result[slot], result[f"{slot}_share"] = n / seconds, recv_seconds / seconds
            result[f"{slot}_cpu_us"] = cpu
        print(result, flush=True)
        results.append(result)
        cluster.drop_database(db.name)
    medians = {key: statistics.median(r[key] for r in results) for slot in IN_PROCESS
               for key in (slot, f"{slot}_share", f"{slot}_cpu_us")}
    return {"changes": n, "rounds": results, **medians,
            "recvlogical": statistics.median(r["recvlogical"] for r in results),
            "strangler": _median([r["strangler"] for r in results]), "stalled": stalled,
            "cdc": statistics.median(r["cdc"] for r in results if r["cdc"]) if any(r["cdc"] for r in results)
            else None,
            "share": _median([r["share"] for r in results])}


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


# slot -> whether the in-process connector publishes the change events too
IN_PROCESS = {"inproc_both": True, "inproc_events": False}
STALL = 60.0  # seconds without a new domain event before a two-process round is given up


def run_in_process(command: list[str], path: Path, n: int, workdir: Path) -> tuple[float, float]:
    """`strangler cdc run` mapping in-process: seconds from process start to the n-th change whose outputs are
    all acknowledged, and the process's CPU µs per change."""
    import yaml

    url = "http://" + yaml.safe_load(path.read_text())["cdc"]["metrics_listen"] + "/metrics"
    with open(workdir / f"{path.stem}.log", "ab") as log:
        started = time.monotonic()
        process = subprocess.Popen([*command, "cdc", "run", "-c", str(path), "--no-status"], stdout=log, stderr=log)
        try:
            deadline = started + 900
            while metric(url, "strangler_cdc_mapped_total") < n:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the in-process connector stopped short; see {log.name}")
                time.sleep(0.05)
            seconds = time.monotonic() - started
            fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") / n * 1e6
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
    return seconds, cpu


def _slot_exists(dsn: str, slot: str) -> bool:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone() is not None


class EventCounter:
    """Records of a single-partition topic, counted as they become readable (direct assignment, no group)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"count-{uuid.uuid4().hex}",
                                  "enable.auto.commit": False, "fetch.wait.max.ms": 50})
        self.consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        self.seen = 0

    def count(self, timeout: float) -> int:
        self.seen += sum(1 for m in self.consumer.consume(10_000, timeout) if m.error() is None)
        return self.seen

    def close(self) -> None:
        self.consumer.close()


# -- report ----------------------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()
    return {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "cpu": f"{model}, {os.cpu_count()} cores",
            "python": platform.python_version(), "load average at start (1/5/15 min)": " / ".join(f"{x:.1f}"
                                                                                                  for x in load)}


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def section(info: dict[str, str], parts: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [SECTION_START, "## Domain events and outcomes", "",
             "Run by hand: `python bench/events.py` (see its docstring for what each part measures). CPU-bound "
             "parts are pinned to one core and measured in CPU time; the Kafka and end-to-end parts in wall time. "
             f"Each part repeated ({args.repeats} rounds; end to end {args.e2e_repeats}), medians. The machine "
             "is shared with other work (other sessions' test suites), so figures vary between runs; the load "
             "average at the start and end of the run is recorded.", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()] + [""]
    lines += ["| part | figure | rounds | median | target |", "|---|---|---|---|---|"]
    if "outcomes" in parts:
        o = parts["outcomes"]
        lines.append(f"| outcome comparison (joiner, 1 core) | pairs/s, {o['pairs']:,} pairs, 10% divergent "
                     f"| {', '.join(fmt(r) for r in o['rates'])} | **{fmt(o['median'])}** | >= 10,000 |")
    if "mapping" in parts:
        m = parts["mapping"]
        lines.append(f"| mapper alone (1 core) | changes/s mapped with typed validation, {m['changes']:,} updates "
                     f"| {', '.join(fmt(r) for r in m['map'])} | **{fmt(m['map_median'])}** | |")
        lines.append(f"| mapper + record encoding (1 core) | changes/s | {', '.join(fmt(r) for r in m['encode'])} "
                     f"| **{fmt(m['encode_median'])}** | |")
    if "kafka" in parts:
        k = parts["kafka"]
        lines.append(f"| Kafka runner (Tansu, acks=all) | changes/s, {k['changes']:,} changes in, typed events "
                     f"acknowledged, offsets committed | {', '.join(fmt(r) for r in k['rates'])} "
                     f"| **{fmt(k['median'])}** | |")
    if "end-to-end" in parts:
        e = parts["end-to-end"]
        rounds = e["rounds"]
        lines.append(f"| pg_recvlogical (pgoutput, to /dev/null) | changes/s, {e['changes']:,} inserted rows "
                     f"| {', '.join(fmt(r['recvlogical']) for r in rounds)} | **{fmt(e['recvlogical'])}** | |")
        lines.append(f"| strangler cdc run alone (to Tansu) | changes/s, to the last acknowledged change event "
                     f"| {', '.join(fmt(r['cdc']) for r in rounds)} | **{fmt(e['cdc'])}** | |")
        lines.append(f"| strangler cdc run + events run | changes/s, to the last domain event readable on its topic "
                     f"| {', '.join(fmt(r['strangler']) for r in rounds)} | **{fmt(e['strangler'])}** | |")
        shares = ", ".join("-" if r["share"] is None else format(r["share"], ".1%") for r in rounds)
        median = "-" if e["share"] is None else format(e["share"], ".1%")
        lines.append(f"| share of pg_recvlogical's rate, two processes | end to end, same run "
                     f"| {shares} | **{median}** | >= 30% |")
        for slot, label in (("inproc_both", "change events and domain events"),
                            ("inproc_events", "domain events only")):
            lines.append(f"| strangler cdc run mapping in-process, {label} | changes/s, process start to the last "
                         f"change whose outputs are acknowledged | {', '.join(fmt(r[slot]) for r in rounds)} "
                         f"| **{fmt(e[slot])}** | |")
            lines.append(f"| the same | CPU µs per change, the whole process | "
                         f"{', '.join(format(r[f'{slot}_cpu_us'], '.1f') for r in rounds)} "
                         f"| **{e[f'{slot}_cpu_us']:.1f}** | |")
            lines.append(f"| share of pg_recvlogical's rate, in-process, {label} | end to end, same run "
                         f"| {', '.join(format(r[f'{slot}_share'], '.1%') for r in rounds)} "
                         f"| **{e[f'{slot}_share']:.1%}** | >= 30% |")
    if "end-to-end" in parts and parts["end-to-end"].get("stalled"):
        lines += ["", f"Two-process rounds that stopped progressing for {STALL:.0f} s (given up, shown as -), "
                  f"with the domain events published by then: {parts['end-to-end']['stalled']}."]
    if "outcomes" in parts:
        lines += ["", f"Outcome kinds in the last round: {parts['outcomes']['kinds']}."]
    lines += ["", f"Load average at the end: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}."]
    if args.notes and Path(args.notes).exists():
        lines += ["", Path(args.notes).read_text().strip()]
    lines.append(SECTION_END)
    return "\n".join(lines) + "\n"


def write_results(text: str) -> None:
    current = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    if SECTION_START in current and SECTION_END in current:
        head, rest = current.split(SECTION_START, 1)
        tail = rest.split(SECTION_END, 1)[1].lstrip("\n")
        current = head + text + ("\n" + tail if tail else "")
    else:
        current = current.rstrip("\n") + "\n\n" + text
    RESULTS.write_text(current)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=["outcomes", "mapping", "kafka", "end-to-end"],
                        default=["outcomes", "mapping", "kafka", "end-to-end"])
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--changes", type=int, default=50_000, help="changes for the mapper-alone part")
    parser.add_argument("--kafka-changes", type=int, default=200_000)
    parser.add_argument("--e2e-changes", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--e2e-repeats", type=int, default=2)
    parser.add_argument("--notes", help="a file whose text is appended to the section")
    parser.add_argument("--no-write", action="store_true", help="print instead of rewriting RESULTS.md")
    args = parser.parse_args(argv)
    info = machine()
    parts: dict[str, Any] = {}
    if "outcomes" in args.only or "mapping" in args.only:
        child = os.fork()  # pinning is for the CPU-bound parts only
        if child == 0:
            pin_to_one_core()
            out = {}
            if "outcomes" in args.only:
                out["outcomes"] = bench_outcomes(args.pairs, args.repeats)
            if "mapping" in args.only:
                out["mapping"] = bench_mapping(args.changes, args.repeats)
            Path(f"/tmp/strangler-bench-events-{os.getppid()}.json").write_bytes(orjson.dumps(out))
            os._exit(0)
        os.waitpid(child, 0)
        result = Path(f"/tmp/strangler-bench-events-{os.getpid()}.json")
        parts.update(orjson.loads(result.read_bytes()))
        result.unlink()
        print(orjson.dumps(parts, option=orjson.OPT_INDENT_2).decode(), flush=True)
    if "kafka" in args.only or "end-to-end" in args.only:
        from tests.support.kafka import TansuBroker
        from tests.support.postgres import PostgresCluster

        workdir = Path(tempfile.mkdtemp(prefix="strangler-bench-events-"))
        broker = TansuBroker()
        cluster = PostgresCluster() if "end-to-end" in args.only else None
        try:
            broker.start()
            if "kafka" in args.only:
                parts["kafka"] = bench_kafka(broker, args.kafka_changes, max(1, args.repeats // 2))
                print("kafka", parts["kafka"], flush=True)
            if cluster is not None:
                cluster.start()
                parts["end-to-end"] = bench_end_to_end(broker, cluster, args.e2e_changes, args.e2e_repeats, workdir)
                print("end-to-end", parts["end-to-end"], flush=True)
        finally:
            broker.close()
            if cluster is not None:
                cluster.close()
            shutil.rmtree(workdir, ignore_errors=True)
    text = section(info, parts, args)
    if args.no_write:
        print(text)
    else:
        write_results(text)
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
