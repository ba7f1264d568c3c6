"""Shared Kafka plumbing of the benchmarks: namespaced topics, a pre-filled input, clean-up.

Every benchmark run works under its own namespace prefix (``bench<hex>.``) so that it can run on
a cluster other engineers' tests use at the same time, and so that one prefix match finds every
topic it made (including topics a peer framework created on its own) for deletion at the end.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import replace
from typing import Any

from confluent_kafka import ConsumerGroupState, KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from ys_platform.catalog.topics import TopicSpec, topic
from ys_platform.clients.kafka import KafkaConnection
from ys_platform.sources.publish import fill_topic
from ys_platform.streaming.topics import apply_plans, describe_topics, plan_topics

# Topic creation and deletion are asynchronous on the broker: how long to wait until the
# metadata shows the change (a single local broker takes well under a second).
PROPAGATION_TIMEOUT_S = 30.0
ADMIN_TIMEOUT_S = 30.0
# The consumers' session.timeout.ms (CONSUMER_DEFAULTS: 30 s) plus slack for the broker's check.
SESSION_TIMEOUT_S = 35.0


LARGE_FETCHES: dict[str, int] = {
    "fetch.max.bytes": 104_857_600,
    "max.partition.fetch.bytes": 10_485_760,
    "queued.max.messages.kbytes": 1_048_576,
}
"""The peers' fetch settings: what lets a plain consumer read as fast as the broker delivers
(REFERENCES.md, measured ceilings: ~290k msg/s here, against ~150k with the seed's 1 MB
partition fetches). Set explicitly, so the ceiling does not move with our own defaults."""


def log(message: str) -> None:
    """Diagnostics go to stderr: stdout carries only a benchmark's one summary line."""
    print(message, file=sys.stderr, flush=True)


def new_namespace() -> str:
    """A fresh prefix for topics, groups and transactional ids (8 hex digits: no collisions
    among the few runs a day a shared cluster sees)."""
    return f"bench{uuid.uuid4().hex[:8]}."


def catalog_spec(name: str, physical: str, partitions: int | None = None) -> TopicSpec:
    """The catalog's spec of topic ``name`` (configs, partitions unless given) as ``physical``."""
    spec = topic(name)
    return replace(spec, name=physical, partitions=partitions or spec.partitions)


def create_topics(admin: AdminClient, specs: Sequence[TopicSpec]) -> list[str]:
    """Create ``specs`` (replication fitted to the cluster); returns their names once the
    cluster shows them all."""
    apply_plans(admin, plan_topics(admin, specs))
    physical = [s.name for s in specs]
    deadline = time.monotonic() + PROPAGATION_TIMEOUT_S
    while len(describe_topics(admin, physical)) < len(physical):
        if time.monotonic() > deadline:
            raise RuntimeError(f"topics {physical} not visible after {PROPAGATION_TIMEOUT_S}s")
        time.sleep(0.1)
    return physical


def prefill(
    connection: KafkaConnection, physical_topic: str, encoded: Iterable[tuple[bytes, bytes, int]]
) -> int:
    """Bulk-load ``(key, value, timestamp_ms)`` records; returns how many were acknowledged."""
    started = time.perf_counter()
    count = fill_topic(connection, physical_topic, encoded)
    log(f"  prefilled {count:,} records in {time.perf_counter() - started:.1f}s")
    return count


def delete_namespace(admin: AdminClient, marker: str) -> list[str]:
    """Delete every topic and consumer group whose name contains ``marker`` (the namespace's
    hex id): ours, and those a peer made under its group (quixstreams' changelog topics).
    Returns the topics deleted; a failure is logged and the clean-up goes on."""
    names = [n for n in admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics if marker in n]
    for name, error in _settle(admin.delete_topics(names, operation_timeout=ADMIN_TIMEOUT_S)):
        log(f"  could not delete topic {name}: {error.str()}")
    listed = admin.list_consumer_groups(request_timeout=ADMIN_TIMEOUT_S).result(ADMIN_TIMEOUT_S)
    groups = [g.group_id for g in listed.valid if marker in g.group_id]
    # A static member (the worker's consumer) stays in its group for the session timeout after
    # closing, and a group with members cannot be deleted: retry those until they have expired.
    deadline = time.monotonic() + SESSION_TIMEOUT_S
    while groups:
        futures = admin.delete_consumer_groups(groups, request_timeout=ADMIN_TIMEOUT_S)
        failed = _settle(futures)
        groups = [g for g, e in failed if e.code() == KafkaError.NON_EMPTY_GROUP]
        for group, error in failed:
            if group not in groups or time.monotonic() > deadline:
                log(f"  could not delete group {group}: {error.str()}")
        if time.monotonic() > deadline:
            break
        if groups:
            time.sleep(1.0)
    return names


def _settle(futures: Mapping[str, Future[Any]]) -> list[tuple[str, KafkaError]]:
    """Wait for admin futures; returns the (name, error) of those that failed."""
    failed = []
    for name, future in futures.items():
        try:
            future.result(ADMIN_TIMEOUT_S)
        except KafkaException as exc:
            failed.append((name, exc.args[0]))
    return failed


def create_catalog_topics(
    admin: AdminClient, namespace: str, names: Sequence[str], partitions: int | None = None
) -> list[str]:
    """The catalog topics ``names`` under ``namespace`` (catalog configs and partitions)."""
    return create_topics(admin, [catalog_spec(n, f"{namespace}{n}", partitions) for n in names])


def wait_for_assignment(
    admin: AdminClient, group_id: str, timeout_s: float, members: int = 1
) -> int:
    """Wait until consumer group ``group_id`` is stable with ``members`` members, each with
    partitions assigned (a benchmark starts its input only then: joining a group is a one-off
    cost, not latency); returns the number of partitions assigned."""
    deadline = time.monotonic() + timeout_s
    while True:
        future = admin.describe_consumer_groups([group_id], request_timeout=ADMIN_TIMEOUT_S)
        try:
            group = future[group_id].result(ADMIN_TIMEOUT_S)
        except KafkaException:
            group = None  # not known to the coordinator yet
        if group is not None and group.state == ConsumerGroupState.STABLE:
            assigned = [len(m.assignment.topic_partitions) for m in group.members]
            if len(assigned) == members and all(assigned):
                return sum(assigned)
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"group {group_id} had no stable assignment to {members} members after {timeout_s}s"
            )
        time.sleep(0.2)
