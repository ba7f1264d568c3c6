"""Offset lag of every consumer group on the cluster, read with the admin API.

For each monitored group: its committed offsets (``list_consumer_group_offsets``), its members
and what they own (``describe_consumer_groups``), and for each of its partitions the earliest and
latest offsets and the last stable offset (``list_offsets``). The offset lag of a partition is
its end minus the committed offset, where:

- the end is the **last stable offset** (``list_offsets`` latest under READ_COMMITTED): records
  of a transaction still open are not readable by the platform's read_committed groups, so they
  are not lag yet; on a topic without transactions it is the high watermark;
- a **transaction marker is not lag**. A transactional producer's commit (or abort) marker
  occupies an offset a consumer never receives, so a group that read everything and committed
  "last record + 1" sits one offset (one per transaction, plus any aborted records) below the
  end: naively a lag of 1 for ever. When a partition's naive lag is small enough to hold
  markers worth correcting (``PROBE_MAX_LAG``), a read_committed probe consumer is assigned at
  the committed offset and reads to the end: the records it gets are the lag, exactly (markers
  and aborted records skipped), and the first of them is the next record (whose age is the time
  lag). Verdicts are cached while the committed offset and the end stay where they were, so a
  quiet partition is probed once.

Which groups: every group the cluster lists, filtered by ``YS_MONITOR_GROUPS_ALLOW`` /
``YS_MONITOR_GROUPS_DENY`` (:class:`GroupFilter`), plus the catalog's groups always, present on
the cluster or not.

**Before a group's first commit** it has no committed offset, yet it has work: a new member
starts at ``auto.offset.reset`` (``earliest`` for every platform worker, ``clients/kafka.py``).
For the groups whose input topics the reader is given (``inputs``: the catalog's), each input
partition the group never committed is reported at its earliest offset, so a fresh stack shows
every catalog group's lag from the first poll instead of only after its first transaction.
:attr:`CommittedPartition.started` tells the two apart.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec

from ys_platform.clients.kafka import KafkaConnection

log = logging.getLogger(__name__)

# The probe's group id: it never subscribes and never commits, so the cluster never lists it.
PROBE_GROUP = "ys-platform-lag-monitor-probe"

# Naive lags up to this are checked for markers and aborted records. Every transaction leaves
# one marker per partition it wrote, so a caught-up group lags 1 (or a few, between polls); an
# aborted transaction leaves its records too, up to a batch. Beyond that, lag is real: the
# probe's verdict (a record at the committed offset) would only confirm it, at a fetch a poll.
PROBE_MAX_LAG = 1024
# The probe reads one small fetch per partition: the first record is all it needs.
_PROBE_CONFIG = {
    "enable.partition.eof": True,
    "fetch.max.bytes": 1_048_576,
    "max.partition.fetch.bytes": 65_536,
    "queued.max.messages.kbytes": 4_096,
    "fetch.wait.max.ms": 10,
    "auto.offset.reset": "earliest",
}
# Measured here: the local broker answers a probe of a few partitions in ~20 ms; 2 s leaves room
# for a remote cluster and a leader moving, after which the naive lag is reported that poll.
PROBE_TIMEOUT_S = 2.0
ADMIN_TIMEOUT_S = 10.0


Key = tuple[str, int, int]
"""(topic, partition, committed offset)."""
Verdict = tuple[int, int]
"""The probe's finding: (offset of the next readable record or the end, readable records)."""


class LagReadError(RuntimeError):
    """The cluster did not answer a lag query; the message says which and why."""


@dataclass(frozen=True)
class GroupFilter:
    """Which groups are monitored: the catalog's always, the others by allow/deny patterns.

    Patterns match the whole group id (``re.fullmatch``, as kafka-lag-exporter's whitelist).
    """

    always: frozenset[str] = frozenset()
    allow: re.Pattern[str] | None = None
    deny: re.Pattern[str] | None = None

    @classmethod
    def of(
        cls, always: Iterable[str], allow: str | None = None, deny: str | None = None
    ) -> GroupFilter:
        return cls(
            frozenset(always),
            re.compile(allow) if allow is not None else None,
            re.compile(deny) if deny is not None else None,
        )

    @classmethod
    def exactly(cls, group_ids: Iterable[str]) -> GroupFilter:
        """These groups and no other (a one-shot read of known groups)."""
        return cls(frozenset(group_ids), re.compile(r"(?!)"))

    def admits(self, group_id: str) -> bool:
        if group_id in self.always:
            return True
        if self.allow is not None and not self.allow.fullmatch(group_id):
            return False
        return not (self.deny is not None and self.deny.fullmatch(group_id))


@dataclass(frozen=True, slots=True)
class Member:
    """The group member that owns a partition (kafka-lag-exporter's member labels)."""

    consumer_id: str
    client_id: str
    host: str


@dataclass(frozen=True, slots=True)
class PartitionOffsets:
    """What the cluster says of one partition: its offsets, independent of any group."""

    earliest: int
    latest: int
    """The high watermark: the offset the next record written will take."""
    stable: int
    """The last stable offset: the end a read_committed consumer reaches."""


@dataclass(frozen=True, slots=True)
class CommittedPartition:
    """One group's position on one partition."""

    topic: str
    partition: int
    committed: int
    next_record: int
    """The first record a read_committed consumer gets at or after ``committed`` (past markers
    and aborted records), or the end when there is none; ``committed`` when not probed."""
    readable: int | None
    """Records a read_committed consumer gets from ``committed`` to the end, counted by the
    probe; None when not probed (the naive lag stands)."""
    owner: Member | None
    started: bool = True
    """False for an input partition the group never committed: ``committed`` is then the
    earliest offset, where a new member starts (``auto.offset.reset=earliest``)."""


@dataclass(frozen=True)
class GroupOffsets:
    group_id: str
    state: str
    """The coordinator's group state (STABLE, EMPTY, ...), DEAD for a group it does not know."""
    simple: bool
    """A group whose offsets are committed without a group protocol (assign(), not subscribe)."""
    partitions: tuple[CommittedPartition, ...]


@dataclass(frozen=True)
class OffsetReading:
    """One poll of the cluster: every monitored group's commits and the partitions' offsets."""

    at: float
    """Wall time of the reading (Unix seconds), taken when the end offsets were read."""
    groups: tuple[GroupOffsets, ...]
    offsets: Mapping[tuple[str, int], PartitionOffsets] = field(default_factory=dict)
    duration_s: float = 0.0


def offset_lag(partition: CommittedPartition, offsets: PartitionOffsets) -> int:
    """Records the group has still to read: counted by the probe, else the end (last stable
    offset) − the committed offset, ≥ 0."""
    if partition.readable is not None:
        return partition.readable
    return max(offsets.stable - partition.committed, 0)


_Description = tuple[str, bool, dict[tuple[str, int], Member]]
"""A group's state, whether it is simple, and the member owning each partition."""
_UNKNOWN_GROUP: _Description = ("DEAD", False, {})


def _offsets_of(futures: dict[TopicPartition, Future]) -> dict[tuple[str, int], int]:
    found: dict[tuple[str, int], int] = {}
    for tp, future in futures.items():
        try:
            found[tp.topic, tp.partition] = future.result().offset
        except KafkaException as exc:
            # A partition deleted since the group committed it, or a leader moving: left out of
            # this poll, the others are still read.
            log.warning("offsets of %s[%d]: %s", tp.topic, tp.partition, exc.args[0].str())
    return found


class LagReader:
    """Reads :class:`OffsetReading` s from the cluster: one admin client, one probe consumer."""

    def __init__(
        self,
        connection: KafkaConnection,
        groups: GroupFilter,
        *,
        timeout_s: float = ADMIN_TIMEOUT_S,
        probe_max_lag: int = PROBE_MAX_LAG,
        inputs: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        self.groups = groups
        self.inputs = {g: tuple(topics) for g, topics in (inputs or {}).items()}
        """Each group's input topics: partitions it never committed count from their start."""
        self.timeout_s = timeout_s
        self.probe_max_lag = probe_max_lag
        self._admin: AdminClient = connection.admin()
        self._probe_consumer: Consumer = connection.consumer(PROBE_GROUP, **_PROBE_CONFIG)
        # (topic, partition, committed) → (the end probed to, its verdict).
        self._verdicts: dict[Key, tuple[int, Verdict]] = {}
        # Groups this principal may not describe (another namespace's, another application's):
        # said once, then left out quietly on every poll.
        self._refused: set[str] = set()
        self.probes = 0
        """How many partitions the probe has read (a figure for tests and the poll log)."""

    def close(self) -> None:
        self._probe_consumer.close()

    def read(self) -> OffsetReading:
        started = time.monotonic()
        group_ids = self._group_ids()
        described = self._describe(group_ids)
        committed = self._committed(group_ids)
        uncommitted = self._uncommitted(group_ids, committed)
        partitions = sorted(
            {tp for tps in committed.values() for tp in tps}
            | {tp for tps in uncommitted.values() for tp in tps}
        )
        at = time.time()
        offsets = self._offsets(partitions)
        for group_id, tps in uncommitted.items():
            for tp in tps:
                if tp in offsets:
                    committed[group_id][tp] = offsets[tp].earliest
        needs_probe = {
            (topic, p, offset): offsets[topic, p].stable
            for tps in committed.values()
            for (topic, p), offset in tps.items()
            if (topic, p) in offsets and 0 < offsets[topic, p].stable - offset <= self.probe_max_lag
        }
        verdicts = self._verdicts_for(needs_probe)
        groups = []
        for group_id in group_ids:
            state, simple, owners = described.get(group_id, _UNKNOWN_GROUP)
            rows = tuple(
                CommittedPartition(
                    topic,
                    p,
                    offset,
                    *verdicts.get((topic, p, offset), (offset, None)),
                    owners.get((topic, p)),
                    (topic, p) not in uncommitted.get(group_id, ()),
                )
                for (topic, p), offset in sorted(committed[group_id].items())
                if (topic, p) in offsets
            )
            groups.append(GroupOffsets(group_id, state, simple, rows))
        return OffsetReading(at, tuple(groups), offsets, time.monotonic() - started)

    # --- the admin calls -------------------------------------------------------------------------
    def _group_ids(self) -> list[str]:
        try:
            listed = self._admin.list_consumer_groups(request_timeout=self.timeout_s).result()
        except KafkaException as exc:
            raise LagReadError(f"listing the consumer groups failed: {exc.args[0].str()}") from exc
        for error in listed.errors:
            log.warning("listing consumer groups: %s", error)
        on_cluster = {g.group_id for g in listed.valid if g.group_id != PROBE_GROUP}
        return sorted({g for g in on_cluster if self.groups.admits(g)} | self.groups.always)

    def _warn(self, group_id: str, what: str, exc: KafkaException) -> None:
        error = exc.args[0]
        if error.code() != KafkaError.GROUP_AUTHORIZATION_FAILED:
            log.warning("%s: %s", what, error.str())
        elif group_id not in self._refused:
            self._refused.add(group_id)
            log.warning(
                "%s: %s; this principal may not describe it: it is left out of the lag report",
                what,
                error.str(),
            )

    def _describe(self, group_ids: list[str]) -> dict[str, _Description]:
        if not group_ids:
            return {}
        futures = self._admin.describe_consumer_groups(group_ids, request_timeout=self.timeout_s)
        described: dict[str, _Description] = {}
        for group_id, future in futures.items():
            try:
                description = future.result()
            except KafkaException as exc:
                self._warn(group_id, f"describing group {group_id} failed", exc)
                continue
            owners = {
                (tp.topic, tp.partition): Member(m.member_id, m.client_id, m.host)
                for m in description.members
                for tp in (m.assignment.topic_partitions if m.assignment else [])
            }
            state = description.state.name if description.state is not None else "UNKNOWN"
            described[group_id] = (state, bool(description.is_simple_consumer_group), owners)
        return described

    def _committed(self, group_ids: list[str]) -> dict[str, dict[tuple[str, int], int]]:
        """Each group's committed offsets; partitions a group never committed are left out."""
        # confluent-kafka takes one group per request: all are sent at once, then awaited (one
        # after the other, 76 groups took 3-7 s a poll here on the loaded 2-core machine).
        futures = {
            group_id: self._admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group_id)], request_timeout=self.timeout_s
            )[group_id]
            for group_id in group_ids
        }
        committed: dict[str, dict[tuple[str, int], int]] = {}
        for group_id, future in futures.items():
            try:
                result = future.result()
            except KafkaException as exc:
                # A group deleted since it was listed, or its coordinator moving: this poll goes
                # on without it (a cluster that is down already failed the listing).
                self._warn(group_id, f"offsets of group {group_id}", exc)
                committed[group_id] = {}
                continue
            committed[group_id] = {
                (tp.topic, tp.partition): tp.offset
                for tp in result.topic_partitions or []
                if tp.error is None and tp.offset >= 0
            }
        return committed

    def _uncommitted(
        self, group_ids: list[str], committed: dict[str, dict[tuple[str, int], int]]
    ) -> dict[str, frozenset[tuple[str, int]]]:
        """The input partitions each group with known inputs has never committed."""
        wanted = {g: self.inputs[g] for g in group_ids if g in self.inputs}
        if not wanted:
            return {}
        try:
            topics = self._admin.list_topics(timeout=self.timeout_s).topics
        except KafkaException as exc:
            raise LagReadError(f"listing the topics failed: {exc.args[0].str()}") from exc
        found: dict[str, frozenset[tuple[str, int]]] = {}
        for group_id, names in wanted.items():
            missing = frozenset(
                (name, p)
                for name in names
                if name in topics and topics[name].error is None
                for p in topics[name].partitions
                if (name, p) not in committed[group_id]
            )
            if missing:
                found[group_id] = missing
        return found

    def _offsets(
        self, partitions: list[tuple[str, int]]
    ) -> dict[tuple[str, int], PartitionOffsets]:
        if not partitions:
            return {}
        # The three requests go out together, then are awaited.
        requests = [
            self._list_offsets(partitions, OffsetSpec.latest(), committed_only=False),
            self._list_offsets(partitions, OffsetSpec.latest(), committed_only=True),
            self._list_offsets(partitions, OffsetSpec.earliest(), committed_only=False),
        ]
        latest, stable, earliest = (_offsets_of(futures) for futures in requests)
        # Two answers, two instants: a record written between them can put the last stable
        # offset past the high watermark read first. The reading is of the watermark's instant.
        return {
            tp: PartitionOffsets(earliest[tp], latest[tp], min(stable[tp], latest[tp]))
            for tp in partitions
            if tp in earliest and tp in latest and tp in stable
        }

    def _list_offsets(
        self, partitions: list[tuple[str, int]], spec: OffsetSpec, *, committed_only: bool
    ) -> dict[TopicPartition, Future]:
        isolation = (
            IsolationLevel.READ_COMMITTED if committed_only else IsolationLevel.READ_UNCOMMITTED
        )
        return self._admin.list_offsets(
            {TopicPartition(t, p): spec for t, p in partitions},
            isolation_level=isolation,
            request_timeout=self.timeout_s,
        )

    # --- the marker probe ------------------------------------------------------------------------
    def _verdicts_for(self, wanted: dict[tuple[str, int, int], int]) -> dict[Key, Verdict]:
        """(next record, readable count) of each (topic, partition, committed offset) up to its
        end (the value); cached while the committed offset and the end do not move."""
        verdicts: dict[Key, Verdict] = {}
        todo: dict[Key, int] = {}
        for key, end in wanted.items():
            cached = self._verdicts.get(key)
            if cached is not None and cached[0] == end:
                verdicts[key] = cached[1]
            else:
                todo[key] = end
        if todo:
            verdicts.update(self._probe(todo))
        # Only what is still wanted stays: the cache is bounded by the partitions in lag.
        self._verdicts = {key: (wanted[key], v) for key, v in verdicts.items()}
        return verdicts

    def _probe(self, todo: dict[Key, int]) -> dict[Key, Verdict]:
        # Two groups may sit at different offsets of one partition: one probe round per offset.
        rounds: list[dict[tuple[str, int], tuple[int, int]]] = []
        for (topic, p, committed), end in sorted(todo.items()):
            for round_ in rounds:
                if (topic, p) not in round_:
                    round_[topic, p] = (committed, end)
                    break
            else:
                rounds.append({(topic, p): (committed, end)})
        found: dict[Key, Verdict] = {}
        for round_ in rounds:
            for (topic, p), verdict in self._probe_round(round_).items():
                found[topic, p, round_[topic, p][0]] = verdict
        return found

    def _probe_round(
        self, starts: dict[tuple[str, int], tuple[int, int]]
    ) -> dict[tuple[str, int], Verdict]:
        """Read each partition from its committed offset to its end with read_committed."""
        probe = self._probe_consumer
        probe.assign([TopicPartition(t, p, start) for (t, p), (start, _) in starts.items()])
        pending = dict(starts)
        first: dict[tuple[str, int], int] = {}
        counts = dict.fromkeys(starts, 0)
        done: dict[tuple[str, int], Verdict] = {}

        def finish(key: tuple[str, int]) -> None:
            _, end = pending.pop(key)
            done[key] = (first.get(key, end), counts[key])
            self.probes += 1

        deadline = time.monotonic() + PROBE_TIMEOUT_S
        try:
            while pending and time.monotonic() < deadline:
                for record in probe.consume(num_messages=1000, timeout=0.1):
                    key = (record.topic(), record.partition())
                    if key not in pending:
                        continue
                    error = record.error()
                    end = pending[key][1]
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            finish(key)  # the end as it is now: nothing more to count
                        else:
                            log.warning("probing %s[%d]: %s", *key, error.str())
                        continue
                    offset = record.offset()
                    if offset < end:
                        first.setdefault(key, offset)
                        counts[key] += 1
                    if offset >= end - 1:
                        finish(key)
        finally:
            probe.unassign()
        for topic, p in pending:
            log.warning("probing %s[%d] for markers timed out; its naive lag stands", topic, p)
        return done
