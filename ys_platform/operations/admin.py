"""What the operations share: their error and the admin-client calls that raise it."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any, TypeVar

from confluent_kafka import IsolationLevel, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

ADMIN_TIMEOUT_S = 30.0

K = TypeVar("K")


class OperationError(RuntimeError):
    """An operation the cluster refused or that may not be done now; the message says why."""


def reason(exc: KafkaException) -> str:
    err = exc.args[0] if exc.args else None
    return err.str() if hasattr(err, "str") else str(exc)


def result(future: Future, what: str, timeout_s: float = ADMIN_TIMEOUT_S) -> Any:
    """``future.result()``, a broker's refusal turned into an :class:`OperationError`."""
    try:
        return future.result(timeout=timeout_s)
    except KafkaException as exc:
        raise OperationError(f"{what}: {reason(exc)}") from None


def results(futures: Mapping[K, Future], what: str) -> dict[K, Any]:
    return {key: result(future, what) for key, future in futures.items()}


def partitions_of(admin: AdminClient, topic: str) -> list[int]:
    """The partition ids of ``topic``; an :class:`OperationError` if the cluster has no such."""
    try:
        metadata = admin.list_topics(topic, timeout=ADMIN_TIMEOUT_S)
    except KafkaException as exc:
        raise OperationError(f"could not read the metadata of {topic}: {reason(exc)}") from None
    found = metadata.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        raise OperationError(f"there is no topic {topic!r} on the cluster")
    return sorted(found.partitions)


def list_offsets(
    admin: AdminClient,
    partitions: list[tuple[str, int]],
    spec: OffsetSpec,
    *,
    committed_only: bool = False,
    skip_missing: bool = False,
) -> dict[tuple[str, int], int]:
    """One offset per partition: earliest, latest or for a timestamp (-1: none that late).

    ``skip_missing`` leaves out the partitions of topics deleted since they were listed (the
    broker drops a group's offsets on a deleted topic, but not at the same instant) instead of
    failing the whole listing.

    ``latest`` is the high watermark, or with ``committed_only`` the last stable offset, which
    never points into a transaction still open (so a reset there cannot skip records that
    commit later).
    """
    if not partitions:
        return {}
    futures = admin.list_offsets(
        {TopicPartition(t, p): spec for t, p in partitions},
        isolation_level=IsolationLevel.READ_COMMITTED
        if committed_only
        else IsolationLevel.READ_UNCOMMITTED,
        request_timeout=ADMIN_TIMEOUT_S,
    )
    offsets = {}
    for tp, future in futures.items():
        try:
            offsets[(tp.topic, tp.partition)] = future.result(timeout=ADMIN_TIMEOUT_S).offset
        except KafkaException as exc:
            if skip_missing and exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                continue
            raise OperationError(
                f"could not list the offsets of {tp.topic}[{tp.partition}]: {reason(exc)}"
            ) from None
    return offsets
