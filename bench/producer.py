"""Producer throughput of catalog models through the platform against Kafka's own perf tool.

    .venv/bin/python bench/producer.py [--messages N] [--repeats R] [--peers ours,java,raw]

The same ``--messages`` ``market.prices`` ticks (``MarketSimulator(...).price_ticks(N)``,
validated pydantic models, built before any timing) are produced ``--repeats`` times, in turn:

* **ours** — the platform's path for producing catalog models: ``KafkaResource.get_producer()``
  and ``produce_messages`` (what ``KafkaResource.produce`` runs, with a namespace so the records
  go to this run's topic): per message ``codec.encode`` (pydantic ``to_json``, the key from the
  catalog, the schema-version and content-type headers) and ``produce`` with the event time as
  the record timestamp; then ``flush``. The producer settings are the platform's defaults
  (``PRODUCER_DEFAULTS``: idempotent, acks=all, snappy, linger 20 ms, batch 64 KiB, 5 in
  flight).
* **java** — Kafka's ``org.apache.kafka.tools.ProducerPerformance`` from the local stack's
  classpath, with the same settings, ``--payload-file`` holding our encoded values (so snappy
  sees the same bytes), keyed by ``--key-distribution random`` over as many keys as symbols.
* **raw** — a plain loop over the same records already encoded (key, value, headers,
  timestamp) through the platform's ``produce_record`` and its poll every ``POLL_EVERY``, the
  platform's producer settings: what the Python client costs without the model encoding, to
  show where the gap between the first two is.

Every peer writes into its own fresh topic of 12 partitions (``market.prices``' layout, the
catalog's configs, replication fitted to the cluster). Rates are messages over the time from the
first send to the last acknowledgement (ours and raw: the produce loop and ``flush``; the tool:
its own total line, which starts after its producer is built and ends after ``close``).
Prints one summary line to stdout (medians); everything else goes to stderr.
"""

from __future__ import annotations

import argparse
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# `make bench` runs `python bench/<name>.py`, which puts bench/ on sys.path: _kafka is importable.
import dagster as dg
from _kafka import catalog_spec, create_topics, delete_namespace, log, new_namespace
from confluent_kafka import KafkaError, Message, Producer

from ys_platform.catalog.codec import encode, timestamp_ms
from ys_platform.catalog.models import MarketPrice
from ys_platform.clients.jaas import jaas_config
from ys_platform.clients.kafka import (
    POLL_EVERY,
    PRODUCER_DEFAULTS,
    KafkaConnection,
    produce_messages,
    produce_record,
)
from ys_platform.local.kafka import classpath, java_binary
from ys_platform.resources.kafka import KafkaResource
from ys_platform.settings import Settings, variable_name
from ys_platform.sources.simulator import MarketSimulator

TOPIC = "market.prices"
SEED = 20_260_301
DEFAULT_MESSAGES = 1_000_000
DEFAULT_REPEATS = 3
DEFAULT_SYMBOLS = 200
DEFAULT_SOURCES = 5
PEERS = ("ours", "java", "raw")
TARGET = 0.70
# One run of any peer takes well under a minute at the rates measured here (~40-150k msg/s);
# ten minutes means the broker is stuck, not slow.
RUN_TIMEOUT_S = 600.0
# The tool's last line: "1000000 records sent, 145475.705557 records/sec (36.52 MB/sec), ..."
_TOTAL_LINE = re.compile(r"^(\d+) records sent, ([\d.]+) records/sec", re.MULTILINE)


@dataclass(frozen=True)
class Run:
    peer: str
    count: int
    seconds: float
    cpu_seconds: float
    """CPU time (all threads; the tool's whole JVM, start-up and JIT included) of the run."""

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    @property
    def cpu_us_per_message(self) -> float:
        return 1e6 * self.cpu_seconds / self.count


# --- the platform's producer -------------------------------------------------------------------


@contextmanager
def platform_producer(settings: Settings) -> Iterator[Producer]:
    """The producer ``KafkaResource.produce`` uses: the resource's, with the platform defaults,
    its secrets bound as Dagster binds them (``EnvVar`` of the ``YS_KAFKA_*`` variables).

    The one place that builds it, so a change of how the resource is configured lands here only.
    """
    resource = KafkaResource.of(
        settings.kafka, secret_variable=lambda field: variable_name("kafka", field)
    )
    with (
        dg.build_resources({"kafka": resource}) as resources,
        resources.kafka.get_producer() as producer,
    ):
        yield producer


def run_ours(settings: Settings, namespace: str, models: Sequence[MarketPrice]) -> Run:
    with platform_producer(settings) as producer:
        started, cpu_started = time.perf_counter(), time.process_time()
        # KafkaResource.produce is `produce_messages(producer, messages)` on this producer; the
        # namespace sends the records to this run's topic instead of the catalog's.
        count = produce_messages(producer, models, namespace=namespace)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return Run("ours", count, seconds, cpu)


# --- the pre-encoded confluent-kafka loop ------------------------------------------------------


Record = tuple[bytes | None, bytes, list[tuple[str, bytes]], int]


def run_raw(connection: KafkaConnection, topic: str, records: Sequence[Record]) -> Run:
    failures: list[str] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            failures.append(err.str())

    producer = connection.producer()
    started, cpu_started = time.perf_counter(), time.process_time()
    for i, (key, value, headers, ts) in enumerate(records, 1):
        if i % POLL_EVERY == 0:
            producer.poll(0)  # as produce_messages does: frees acknowledged records' room
        # The platform's one produce call (positional arguments, the wait on a full queue).
        produce_record(producer, topic, value, key, headers, ts, on_delivery)
    remaining = producer.flush(RUN_TIMEOUT_S)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    if remaining or failures:
        raise RuntimeError(f"raw: {remaining} undelivered, {len(failures)} failed {failures[:1]}")
    return Run("raw", len(records), seconds, cpu)


# --- Kafka's ProducerPerformance ---------------------------------------------------------------


def tool_properties() -> list[str]:
    """Our producer settings in the Java client's names (the two clients name them alike)."""
    same = (
        "acks",
        "enable.idempotence",
        "compression.type",
        "linger.ms",
        "batch.size",
        "max.in.flight.requests.per.connection",
    )
    same_values = [f"{name}={str(PRODUCER_DEFAULTS[name]).lower()}" for name in same]
    # The seed's 64 MiB buffer.memory, which PRODUCER_DEFAULTS gives librdkafka as
    # queue.buffering.max.kbytes (the tool's own default is 32 MiB).
    buffer_memory = PRODUCER_DEFAULTS["queue.buffering.max.kbytes"] * 1024
    return [*same_values, f"buffer.memory={buffer_memory}"]


def java_security_properties(connection: KafkaConnection) -> str | None:
    """The Java client's settings for a SASL/TLS connection (the password included: written
    to a 0600 file for ``--producer.config``, never put on the command line); None for
    PLAINTEXT."""
    if connection.security_protocol == "PLAINTEXT":
        return None
    lines = [f"security.protocol={connection.security_protocol}"]
    if connection.sasl_mechanism is not None and connection.sasl_password is not None:
        jaas = jaas_config(
            connection.sasl_mechanism,
            connection.sasl_username or "",
            connection.sasl_password.get_secret_value(),
        )
        lines += [f"sasl.mechanism={connection.sasl_mechanism}", f"sasl.jaas.config={jaas}"]
    if connection.ssl_ca_location is not None:
        lines += [
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={connection.ssl_ca_location}",
        ]
    return "\n".join(lines) + "\n"


def run_java(
    settings: Settings, topic: str, n: int, payload_file: Path, keys: int, java: str, cp: str
) -> Run:
    security = java_security_properties(settings.kafka)
    with tempfile.TemporaryDirectory() as folder:
        extra: list[str] = []
        if security is not None:
            path = Path(folder) / "client.properties"
            path.touch(mode=0o600)
            path.write_text(security)
            extra = ["--producer.config", str(path)]
        return _run_java(settings, topic, n, payload_file, keys, java, cp, extra)


def _run_java(
    settings: Settings,
    topic: str,
    n: int,
    payload_file: Path,
    keys: int,
    java: str,
    cp: str,
    extra: list[str],
) -> Run:
    command = [
        java,
        "-cp",
        cp,
        "org.apache.kafka.tools.ProducerPerformance",
        "--topic",
        topic,
        "--num-records",
        str(n),
        "--payload-file",
        str(payload_file),
        "--throughput",
        "-1",
        "--key-distribution",
        "random",
        "--record-key-range",
        str(keys),
        "--bootstrap-server",
        settings.kafka_bootstrap_servers,
        *extra,
        "--command-property",
        *tool_properties(),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    totals = _TOTAL_LINE.findall(result.stdout)
    if result.returncode != 0 or not totals:
        raise RuntimeError(
            f"ProducerPerformance failed (exit {result.returncode}):\n"
            + (result.stdout + result.stderr).strip()[-3000:]
        )
    count, rate = int(totals[-1][0]), float(totals[-1][1])
    if count != n:
        raise RuntimeError(f"ProducerPerformance sent {count:,} of {n:,} records")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return Run("java", count, count / rate, cpu)


# --- driver ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=DEFAULT_MESSAGES)
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS)
    parser.add_argument("--symbols", type=int, default=DEFAULT_SYMBOLS)
    parser.add_argument("--sources", type=int, default=DEFAULT_SOURCES)
    parser.add_argument("--peers", default=",".join(PEERS), help="subset of ours,java,raw")
    args = parser.parse_args(argv)
    args.peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    if unknown := set(args.peers) - set(PEERS):
        parser.error(f"unknown peers {sorted(unknown)}")
    if args.messages < 1 or args.repeats < 1:
        parser.error("--messages and --repeats must be positive")
    return args


def summary(args: argparse.Namespace, runs: dict[str, list[Run]], value_bytes: float) -> str:
    rate = {peer: statistics.median(r.rate for r in rs) for peer, rs in runs.items()}
    parts = []
    if "ours" in rate:
        parts.append(f"ours {rate['ours']:,.0f} msg/s")
    if "java" in rate:
        parts.append(f"ProducerPerformance {rate['java']:,.0f} msg/s")
        if "ours" in rate:
            verdict = "meets" if rate["ours"] >= TARGET * rate["java"] else "below"
            parts.append(
                f"ratio {rate['ours'] / rate['java']:.0%} ({verdict} the {TARGET:.0%} target)"
            )
    if "raw" in rate:
        share = f" ({rate['raw'] / rate['java']:.0%})" if "java" in rate else ""
        parts.append(f"pre-encoded confluent-kafka {rate['raw']:,.0f} msg/s{share}")
    setup = (
        f"{args.messages:,} market.prices ticks ({value_bytes:.0f}-byte values), 12 partitions, "
        f"acks=all, idempotent, snappy, linger {PRODUCER_DEFAULTS['linger.ms']} ms, batch 64 KiB, "
        f"median of {args.repeats}"
    )
    return f"producer: {' | '.join(parts)} | {setup}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings()
    connection = settings.kafka
    admin = connection.admin()
    namespace = new_namespace()
    log(f"producer: namespace {namespace} on {settings.kafka_bootstrap_servers}")
    java, cp = (java_binary(), classpath()) if "java" in args.peers else ("", "")

    started = time.perf_counter()
    simulator = MarketSimulator(
        SEED, symbols=args.symbols, sources=args.sources, start_ms=time.time_ns() // 10**6
    )
    models = list(simulator.price_ticks(args.messages))
    log(f"  built {len(models):,} models in {time.perf_counter() - started:.1f}s")
    # The same bytes the platform sends, for the tool's payload file and the raw loop.
    records: list[Record] = [(*encode(m), timestamp_ms(m)) for m in models]
    value_bytes = statistics.fmean(len(r[1]) for r in records)
    log(f"  encoded: average value {value_bytes:.1f} bytes")

    prefixes = {
        (peer, repeat): f"{namespace}r{repeat}.{peer}."
        for repeat in range(args.repeats)
        for peer in args.peers
    }
    runs: dict[str, list[Run]] = {peer: [] for peer in args.peers}
    with tempfile.TemporaryDirectory(prefix="ys-bench-producer-") as tmp:
        payload_file = Path(tmp) / "values.txt"
        if "java" in args.peers:
            # One value a line: the JSON values hold no newline (JSON escapes it in strings).
            with payload_file.open("wb") as out:
                for record in records:
                    out.write(record[1] + b"\n")
        try:
            create_topics(admin, [catalog_spec(TOPIC, f"{p}{TOPIC}") for p in prefixes.values()])
            for repeat in range(args.repeats):
                for peer in args.peers:
                    prefix = prefixes[(peer, repeat)]
                    if peer == "ours":
                        run = run_ours(settings, prefix, models)
                    elif peer == "raw":
                        run = run_raw(connection, f"{prefix}{TOPIC}", records)
                    else:
                        run = run_java(
                            settings,
                            f"{prefix}{TOPIC}",
                            args.messages,
                            payload_file,
                            args.symbols,
                            java,
                            cp,
                        )
                    runs[peer].append(run)
                    log(
                        f"  [{repeat + 1}/{args.repeats}] {peer}: {run.rate:,.0f} msg/s "
                        f"({run.count:,} in {run.seconds:.2f}s, "
                        f"{run.cpu_us_per_message:.1f} CPU-us/msg)"
                    )
        finally:
            deleted = delete_namespace(admin, namespace.rstrip("."))
            log(f"  deleted {len(deleted)} topics")
    if "ours" in runs and "java" in runs:
        paired = [o.rate / j.rate for o, j in zip(runs["ours"], runs["java"], strict=True)]
        log(f"  ours / ProducerPerformance per repeat: {', '.join(f'{p:.0%}' for p in paired)}")
    print(summary(args, runs, value_bytes), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
