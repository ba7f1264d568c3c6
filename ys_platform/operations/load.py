"""The load test (``ys-platform load``): simulated traffic at a target rate, and how the running
processors keep up with it.

:func:`run_load` streams the market simulator (:class:`~ys_platform.sources.MarketSimulator`,
the ``simulate`` command's) to the processors' input topics: catalog-valid records with their
keys and headers, through the platform's producer (:func:`~ys_platform.sources.publish.publish`,
``PRODUCER_DEFAULTS``, as the producers' principal), for ``duration_s`` at ``rate`` msg/s.

* **Pacing**: event time is wall time. The simulator's stream starts at the wall clock, and each
  record is produced when the wall clock reaches its event time (:class:`EventTimePacer`): a
  per-record schedule, so a slow moment is caught up at once instead of lowering the rate, and
  the achieved rate is the simulator's count over the duration. Its messages are spread at random
  within the schedule (a Poisson-like arrival, not a metronome).
* **Latency**: a read_committed reader of the processors' output topics notes when each output
  becomes visible; the latency of an output is measured from its triggering input's due time,
  as :mod:`ys_platform.operations.latency` defines it.
* **Lag**: the processors' groups' offset lag, read with the lag monitor's
  :class:`~ys_platform.monitoring.lag.LagReader` when the last input was acknowledged; then the
  load waits (up to ``drain_s``) for every group with members to reach lag 0 and says how long
  each took. A group without members (no processor running) is reported, not waited for.

Bounded: at most :data:`MAX_RATE` msg/s for :data:`MAX_DURATION_S`, and only against a loopback
cluster unless the caller allows another (:func:`check_loopback`): a load test floods the
cluster it is pointed at. The CDC-captured inputs (defi.transactions, users.portfolios) are
produced straight to their topics, as ``simulate`` does outside ``make dev``.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from ys_platform.catalog.codec import timestamp_ms, topic_of
from ys_platform.catalog.models import Message
from ys_platform.catalog.topics import CONSUMER_GROUPS, ConsumerGroupSpec
from ys_platform.clients.kafka import KafkaConnection, valid_records
from ys_platform.operations.admin import OperationError
from ys_platform.operations.latency import (
    Attribution,
    Cadence,
    LatencyStats,
    OutputSeen,
    WindowedOutputs,
    attributions,
    latency_by_topic,
)
from ys_platform.streaming.app import StreamApp

__all__ = [
    "DEFAULT_DURATION_S",
    "DEFAULT_RATE",
    "LOAD_TOPICS",
    "MAX_DURATION_S",
    "MAX_RATE",
    "EventTimePacer",
    "LoadError",
    "LoadPlan",
    "LoadPlanError",
    "LoadReport",
    "check_loopback",
    "run_load",
    "traffic",
]

_PROCESSORS: tuple[ConsumerGroupSpec, ...] = tuple(
    g for g in CONSUMER_GROUPS if g.kind == "processor"
)
_PROCESSOR_OUTPUTS = frozenset(t for g in _PROCESSORS for t in g.outputs)

LOAD_TOPICS: tuple[str, ...] = tuple(
    dict.fromkeys(t for g in _PROCESSORS for t in g.inputs if t not in _PROCESSOR_OUTPUTS)
)
"""The processors' inputs that no processor writes (market.analytics is price aggregation's
output): what the load produces to by default, in catalog order."""

DEFAULT_RATE = 2_000.0
"""Messages per second: ten times the dev simulator's 200, well inside what one Python producer
paces on a 2-core machine (drawing and encoding a message costs ~90 us here: 18 % of a core)."""
DEFAULT_DURATION_S = 30.0
MAX_RATE = 10_000.0
"""The fastest load accepted: drawing, validating and encoding a simulator message costs ~86 us
(measured here: 50,200 messages of the default mix in 4.3 s), so one process tops out near
11,000 msg/s on a whole core; beyond this the schedule slips and the rate is not the one asked
for."""
MAX_DURATION_S = 3_600.0
"""An hour: a load test is bounded, and an hour at MAX_RATE is 36M records (~10 GB of ticks)."""
DEFAULT_DRAIN_S = 30.0
"""How long, after the last input, the processors get to catch up: the catalog's lag bound of a
processor (``ConsumerGroupSpec.lag_bound_s``)."""
DEFAULT_SEED = 7
"""``ys-platform simulate``'s default seed."""
LATE_MS = 10.0
"""A record produced more than this after its due time counts as late (the generator slipped)."""

# The reader's settings: a fetch returns as soon as a commit makes a record readable
# (fetch.min.bytes=1), and an idle fetch waits at most 100 ms, so what it notes is visibility,
# not the platform consumers' batching (fetch.min.bytes 1 KiB, up to 500 ms).
_READER_CONFIG: dict[str, Any] = {"fetch.min.bytes": 1, "fetch.wait.max.ms": 100}
_READER_POLL_S = 0.05
_METADATA_TIMEOUT_S = 10.0
# After the processors caught up, the reader gets this long for the last commit's records (one
# fetch: fetch.wait.max.ms above, with room).
_READER_SLACK_S = 0.5
# The lag is read this often while draining (a reading takes ~30 ms here): the resolution of
# the caught-up times.
_LAG_POLL_S = 0.2


class LoadPlanError(ValueError):
    """A load the plan refuses; ``setting`` names what is wrong (``rate``, ``duration``,
    ``topics``, ``bootstrap``), for the command line to name its flag."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(message)
        self.setting = setting


class LoadError(OperationError):
    """The cluster cannot take the load as planned (an input topic is missing)."""


def check_loopback(bootstrap_servers: str) -> None:
    """Refuse a bootstrap list naming any host that is not this machine's loopback."""
    for server in bootstrap_servers.split(","):
        host = server.strip().rsplit(":", 1)[0].strip("[]")
        if host == "localhost":
            continue
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise LoadPlanError(
                "bootstrap",
                f"the load test only runs against a loopback cluster, and {server.strip()} is "
                "not one (it floods the cluster it is pointed at)",
            )


@dataclass(frozen=True)
class LoadPlan:
    """What to produce: validated when made (:class:`LoadPlanError`)."""

    rate: float = DEFAULT_RATE
    """Messages per second, over every topic of ``topics``."""
    duration_s: float = DEFAULT_DURATION_S
    topics: tuple[str, ...] = LOAD_TOPICS
    """Catalog names, a subset of :data:`LOAD_TOPICS`; the simulator's mix shared among them."""
    namespace: str = ""
    """Prefix of the topics and groups (an isolated copy, as a worker's namespace)."""
    seed: int = DEFAULT_SEED
    symbols: int = 40
    users: int = 200
    drain_s: float = DEFAULT_DRAIN_S

    def __post_init__(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise LoadPlanError("rate", f"rate must be a positive number, not {self.rate}")
        if self.rate > MAX_RATE:
            raise LoadPlanError(
                "rate", f"rate {self.rate:,.0f} msg/s is above the limit of {MAX_RATE:,.0f}"
            )
        if not (self.duration_s > 0 and math.isfinite(self.duration_s)):
            raise LoadPlanError(
                "duration", f"duration must be a positive number of seconds, not {self.duration_s}"
            )
        if self.duration_s > MAX_DURATION_S:
            raise LoadPlanError(
                "duration",
                f"duration {self.duration_s:,.0f} s is above the limit of {MAX_DURATION_S:,.0f} s",
            )
        if not self.topics:
            raise LoadPlanError("topics", "at least one topic is needed")
        unknown = [t for t in self.topics if t not in LOAD_TOPICS]
        if unknown:
            raise LoadPlanError(
                "topics",
                f"{', '.join(unknown)}: not an input the load produces; it produces "
                f"{', '.join(LOAD_TOPICS)}",
            )
        if not self.drain_s >= 0:
            raise LoadPlanError("drain", "drain must not be negative")

    @property
    def groups(self) -> tuple[ConsumerGroupSpec, ...]:
        """The processors reading any of ``topics``."""
        return tuple(g for g in _PROCESSORS if set(g.inputs) & set(self.topics))

    @property
    def outputs(self) -> tuple[str, ...]:
        """Their output topics (catalog names)."""
        return tuple(dict.fromkeys(t for g in self.groups for t in g.outputs))

    def mix(self) -> dict[str, float]:
        """The simulator's mix (:data:`~ys_platform.sources.DEFAULT_MIX`) of ``topics`` only."""
        from ys_platform.sources import DEFAULT_MIX

        return {t: share if t in self.topics else 0.0 for t, share in DEFAULT_MIX.items()}

    def physical(self, name: str) -> str:
        return f"{self.namespace}{name}"


class EventTimePacer:
    """The per-record schedule: :meth:`__call__` returns when a message's event time (epoch ms)
    is reached, counted on the monotonic clock from ``start_ms`` = ``started``; it returns at
    once for a message already due (catching up), or when ``stop`` is set.

    ``clock`` and ``wait`` (seconds -> None) are the monotonic clock and the sleep: the real
    ones by default.
    """

    def __init__(
        self,
        start_ms: int,
        *,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], Any] | None = None,
    ) -> None:
        self.start_ms = start_ms
        self._clock = clock
        self._wait = wait if wait is not None else (stop.wait if stop is not None else time.sleep)
        self.started = clock()
        self.first_ms: int | None = None
        """Event time of the first message paced."""
        self.last_ms: int | None = None
        """... and of the latest."""
        self.late = 0
        """Messages produced more than :data:`LATE_MS` after their due time."""
        self.max_late_ms = 0.0

    def due(self, event_ms: int) -> float:
        """The monotonic time message of ``event_ms`` is due."""
        return self.started + (event_ms - self.start_ms) / 1000

    def __call__(self, _index: int, message: Message) -> None:
        event_ms = timestamp_ms(message)
        due = self.due(event_ms)
        lead = due - self._clock()
        if lead > 0:
            self._wait(lead)
        else:
            late_ms = -lead * 1000
            if late_ms > LATE_MS:
                self.late += 1
            self.max_late_ms = max(self.max_late_ms, late_ms)
        if self.first_ms is None:
            self.first_ms = event_ms
        self.last_ms = event_ms


@dataclass(frozen=True)
class GroupLag:
    """A processor group's lag: records of its inputs it has not committed."""

    group_id: str
    lag: int
    running: bool
    """Whether the group has members owning partitions (a processor is running)."""


@dataclass
class LoadReport:
    """What a load run produced and how the processors kept up (see the module docstring)."""

    target_rate: float
    duration_s: float
    produced: dict[str, int]
    """Records produced (and acknowledged) per catalog topic."""
    seconds: float
    """From the first record's due time to the last record's acknowledgement."""
    latency: LatencyStats | None
    """Over every output caused by the load; None when no output was seen."""
    latency_by_topic: dict[str, LatencyStats]
    outputs: dict[str, int]
    """Output records caused by the load and read, per catalog output topic."""
    lag_at_end: dict[str, int]
    """Each processor group's lag when the last input was acknowledged."""
    caught_up_s: dict[str, float | None]
    """Seconds after that until each running group's lag was 0 (None: not within the drain), at
    the resolution of a lag reading: ~0.2 s, ~1 s for the first after the load (its small lags
    are probed for transaction markers: ``monitoring/lag.py``)."""
    lag_after_drain: dict[str, int]
    running: tuple[str, ...]
    """The groups with members at the end."""
    late_inputs: int = 0
    """Inputs produced more than :data:`LATE_MS` after their due time."""
    max_late_ms: float = 0.0
    stopped: bool = False
    """Ended early by the stop event."""

    @property
    def total(self) -> int:
        return sum(self.produced.values())

    @property
    def achieved_rate(self) -> float:
        return self.total / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line: the rate, the latency (or why there is none), the lag."""
        topics = ", ".join(f"{t} {n:,}" for t, n in self.produced.items())
        parts = [
            f"load: {self.total:,} records in {self.seconds:.1f} s ({topics}): "
            f"{self.achieved_rate:,.0f} msg/s for a target of {self.target_rate:,.0f}"
        ]
        if self.latency is None:
            parts.append(self.no_latency_reason())
        else:
            stats = self.latency
            parts.append(
                f"latency p50 {stats.p50_ms:,.0f} ms, p95 {stats.p95_ms:,.0f} ms, "
                f"p99 {stats.p99_ms:,.0f} ms over {stats.samples:,} outputs"
            )
        lags = []
        for group_id, lag in self.lag_at_end.items():
            caught = self.caught_up_s.get(group_id)
            if group_id not in self.running:
                after = "not running"
            elif caught is None:
                after = f"still {self.lag_after_drain[group_id]:,} after the drain"
            else:
                after = f"0 after {caught:.1f} s"
            lags.append(f"{group_id} {lag:,} ({after})")
        parts.append("lag at the end: " + ", ".join(lags))
        if self.stopped:
            parts.append("stopped early")
        return "; ".join(parts)

    def no_latency_reason(self) -> str:
        """The sentence said instead of percentiles when no output was seen."""
        if not self.running:
            return (
                "no latency: no processor is running on these topics, so no output became "
                "visible (start one: `ys-platform processor run NAME`)"
            )
        return (
            "no latency: the running processors made no output of this load visible before "
            "the drain ended"
        )

    def to_json(self) -> dict[str, Any]:
        def stats(s: LatencyStats | None) -> dict[str, float] | None:
            if s is None:
                return None
            return {
                "samples": s.samples,
                "p50_ms": round(s.p50_ms, 1),
                "p95_ms": round(s.p95_ms, 1),
                "p99_ms": round(s.p99_ms, 1),
                "max_ms": round(s.max_ms, 1),
            }

        return {
            "target_rate": self.target_rate,
            "duration_s": self.duration_s,
            "produced": self.produced,
            "total": self.total,
            "seconds": round(self.seconds, 3),
            "achieved_rate": round(self.achieved_rate, 1),
            "late_inputs": self.late_inputs,
            "max_late_ms": round(self.max_late_ms, 1),
            "latency": stats(self.latency),
            "latency_by_topic": {t: stats(s) for t, s in self.latency_by_topic.items()},
            "outputs": self.outputs,
            "lag_at_end": self.lag_at_end,
            "caught_up_s": {
                g: None if s is None else round(s, 2) for g, s in self.caught_up_s.items()
            },
            "lag_after_drain": self.lag_after_drain,
            "running": list(self.running),
            "stopped": self.stopped,
            "note": None if self.latency is not None else self.no_latency_reason(),
        }


# --- the run --------------------------------------------------------------------------------------


def run_load(
    connection: KafkaConnection,
    plan: LoadPlan,
    stop: threading.Event | None = None,
) -> LoadReport:
    """Produce ``plan``'s traffic through ``connection`` and report how the processors kept up.

    Blocks for about ``plan.duration_s`` plus the drain (at most ``plan.drain_s``); setting
    ``stop`` (from another thread: a fault test runs this in the background) ends the traffic
    early, between two records, and the report still covers what was produced. Records go as
    the producers' principal of the namespace (``connection.as_principal``, as a worker goes as
    its namespaced group); the output reader and the lag use
    ``connection`` itself, which must be allowed to read the output topics and describe the
    groups. The loopback rule is the caller's (:func:`check_loopback`).

    Raises :class:`LoadError` when an input topic is missing or the cluster does not answer the
    lag query, and ``DeliveryError`` when records were not acknowledged.
    """
    from ys_platform.monitoring.lag import GroupFilter, LagReader
    from ys_platform.security.principals import PRODUCER_NAME
    from ys_platform.sources.publish import publish

    stop = stop or threading.Event()
    admin = connection.admin()
    present = _existing_topics(admin, [plan.physical(t) for t in (*plan.topics, *plan.outputs)])
    missing = [t for t in plan.topics if plan.physical(t) not in present]
    if missing:
        raise LoadError(
            f"the load's input topics {', '.join(plan.physical(t) for t in missing)} do not "
            "exist: create them first (`ys-platform topics apply`)"
        )
    group_ids = [plan.physical(g.group_id) for g in plan.groups]
    apps = _processors()
    inputs = {
        plan.physical(g.group_id): [plan.physical(t) for t in g.member_inputs] for g in plan.groups
    }
    lag_reader = LagReader(connection, GroupFilter.exactly(group_ids), inputs=inputs)
    outputs = [t for t in plan.outputs if plan.physical(t) in present]
    reader = _OutputReader(connection, plan.namespace, outputs)
    attribution = _attributions(apps)
    counts: Counter[str] = Counter()
    try:
        reader.start()
        start_ms = time.time_ns() // 1_000_000
        pacer = EventTimePacer(start_ms, stop=stop)
        publish(
            # The producers' principal of the namespace, as a worker's is its namespaced group.
            connection.as_principal(plan.physical(PRODUCER_NAME)),
            traffic(plan, start_ms),
            pace=pacer,
            namespace=plan.namespace,
            stop=stop,
            counts=counts,
        )
        ended = time.monotonic()
        seconds = ended - pacer.due(pacer.first_ms) if pacer.first_ms is not None else 0.0
        at_end = _lags(lag_reader)
        caught_up, after = _drain(lag_reader, at_end, ended, plan.drain_s, stop)
        time.sleep(_READER_SLACK_S)
    finally:
        reader.stop()
        lag_reader.close()
    seen = reader.result()
    first_ms = pacer.first_ms if pacer.first_ms is not None else start_ms
    last_ms = pacer.last_ms if pacer.last_ms is not None else start_ms
    samples = latency_by_topic(seen, attribution, first_ms, last_ms)
    every = [v for values in samples.values() for v in values]
    return LoadReport(
        target_rate=plan.rate,
        duration_s=plan.duration_s,
        produced={t: counts[t] for t in plan.topics},
        seconds=seconds,
        latency=LatencyStats.of(every),
        latency_by_topic={
            t: s for t in outputs if (s := LatencyStats.of(samples.get(t, []))) is not None
        },
        outputs={t: len(samples.get(t, [])) for t in outputs},
        lag_at_end={g: at_end[g].lag for g in group_ids},
        caught_up_s={g: caught_up[g] for g in group_ids if g in caught_up},
        lag_after_drain={g: after[g].lag for g in group_ids},
        running=tuple(g for g in group_ids if after[g].running),
        late_inputs=pacer.late,
        max_late_ms=pacer.max_late_ms,
        stopped=stop.is_set(),
    )


def traffic(plan: LoadPlan, start_ms: int) -> Iterator[Message]:
    """The simulator's stream of ``plan.topics``, event time from ``start_ms``: the initial
    portfolio snapshots (when portfolios are loaded), then ``rate`` msg/s for the duration."""
    from ys_platform.sources import MarketSimulator

    lending = {"defi.transactions", "users.portfolios"} & set(plan.topics)
    simulator = MarketSimulator(
        plan.seed,
        symbols=plan.symbols,
        start_ms=start_ms,
        users=plan.users if lending else 0,
        mix=plan.mix(),
    )
    wanted = frozenset(plan.topics)
    for message in simulator.events(plan.duration_s, plan.rate):
        # The initial snapshots come whatever the mix (a user's first state): only with
        # users.portfolios loaded.
        if topic_of(message) in wanted:
            yield message


def _processors() -> dict[str, StreamApp]:
    """The logic of every processor (no I/O): what it declares about its inputs and outputs."""
    from ys_platform.processors.registry import build_processor

    return {g.group_id: build_processor(g.group_id) for g in _PROCESSORS}


def _attributions(apps: Mapping[str, StreamApp]) -> dict[str, Attribution]:
    """How each output topic names its cause, from the processors' logic and the catalog."""
    cadences = {
        group_id: Cadence(app.emit_interval_ms, app.emit_delay_ms)
        for group_id, app in apps.items()
        if isinstance(app, WindowedOutputs)
    }
    return attributions(
        {g.group_id: g.inputs for g in _PROCESSORS},
        {g.group_id: g.outputs for g in _PROCESSORS},
        cadences,
    )


def _existing_topics(admin: Any, names: Sequence[str]) -> frozenset[str]:
    try:
        topics = admin.list_topics(timeout=_METADATA_TIMEOUT_S).topics
    except KafkaException as exc:
        raise LoadError(f"could not read the cluster's topics: {exc.args[0].str()}") from None
    return frozenset(n for n in names if n in topics and topics[n].error is None)


def _lags(reader: Any) -> dict[str, GroupLag]:
    """Each group's total lag and whether it has members, from one lag reading."""
    from ys_platform.monitoring.lag import LagReadError, offset_lag

    try:
        reading = reader.read()
    except LagReadError as exc:
        raise LoadError(f"could not read the processors' lag: {exc}") from None
    return {
        g.group_id: GroupLag(
            g.group_id,
            sum(offset_lag(p, reading.offsets[p.topic, p.partition]) for p in g.partitions),
            any(p.owner is not None for p in g.partitions),
        )
        for g in reading.groups
    }


def _drain(
    reader: Any,
    at_end: Mapping[str, GroupLag],
    ended: float,
    drain_s: float,
    stop: threading.Event,
) -> tuple[dict[str, float | None], dict[str, GroupLag]]:
    """Wait until every running group's lag is 0, at most ``drain_s``: the seconds each took
    (from ``ended``; None if it did not), and the last reading."""
    caught_up: dict[str, float | None] = {
        g: 0.0 if lag.lag == 0 else None for g, lag in at_end.items() if lag.running
    }
    latest = dict(at_end)
    deadline = ended + drain_s
    while any(v is None for v in caught_up.values()) and time.monotonic() < deadline:
        if stop.wait(_LAG_POLL_S):
            break
        latest = _lags(reader)
        now = time.monotonic()
        for group_id, lag in latest.items():
            if lag.running and lag.lag == 0 and caught_up.get(group_id) is None:
                caught_up[group_id] = now - ended
    return caught_up, latest


@dataclass
class _OutputReader:
    """A read_committed reader of the output topics from their current ends, in a thread of its
    own; :meth:`stop` stops it, :meth:`result` returns what it saw."""

    connection: KafkaConnection
    namespace: str
    topics: Sequence[str]
    seen: list[OutputSeen] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _failure: BaseException | None = None

    def start(self) -> None:
        if not self.topics:
            return
        consumer = self.connection.consumer(f"{self.namespace}ys-load-reader", **_READER_CONFIG)
        try:
            # From the ends as they are now, read before the first input: every output the
            # load causes comes after them (earlier ones are not read at all).
            consumer.assign(self._ends(consumer))
        except BaseException:
            consumer.close()
            raise
        self._thread = threading.Thread(
            target=self._run, args=(consumer,), name="load-output-reader", daemon=True
        )
        self._thread.start()

    def _ends(self, consumer: Consumer) -> list[TopicPartition]:
        metadata = consumer.list_topics(timeout=_METADATA_TIMEOUT_S)
        assigned = []
        for name in self.topics:
            physical = f"{self.namespace}{name}"
            for partition in sorted(metadata.topics[physical].partitions):
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(physical, partition), timeout=_METADATA_TIMEOUT_S
                )
                assigned.append(TopicPartition(physical, partition, high))
        return assigned

    def _run(self, consumer: Consumer) -> None:
        prefix = len(self.namespace)
        seen = self.seen
        try:
            while not self._stop.is_set():
                batch = valid_records(consumer.consume(1000, timeout=_READER_POLL_S), "load")
                if not batch:
                    continue
                visible_ms = time.time() * 1000
                for record in batch:
                    topic = record.topic()[prefix:]
                    seen.append(OutputSeen(topic, record.timestamp()[1], visible_ms))
        except BaseException as exc:  # raised by result(), in the caller's thread
            self._failure = exc
        finally:
            consumer.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def result(self) -> list[OutputSeen]:
        """What the reader saw (after :meth:`stop`); raises what stopped it, if anything did."""
        if self._failure is not None:
            raise LoadError(f"the load's output reader failed: {self._failure}")
        return self.seen
