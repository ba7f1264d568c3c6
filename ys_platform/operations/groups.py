"""Consumer groups as an operator sees them: state, members, lag, and resetting offsets.

Lag is the lag monitor's (``ys_platform.monitoring.lag``, read once): records still to read,
so a transactional processor that is caught up lags 0, not the 1 of its commit marker that
kafka-consumer-groups' high watermark − committed offset shows. The high watermark is shown
beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient, ConsumerGroupDescription, OffsetSpec

from ys_platform.clients.kafka import KafkaConnection
from ys_platform.operations.admin import (
    ADMIN_TIMEOUT_S,
    OperationError,
    list_offsets,
    partitions_of,
    result,
    results,
)

# Kafka's own names of the states (kafka-consumer-groups prints these).
_STATE_NAMES = {
    ConsumerGroupState.STABLE: "Stable",
    ConsumerGroupState.EMPTY: "Empty",
    ConsumerGroupState.DEAD: "Dead",
    ConsumerGroupState.PREPARING_REBALANCING: "PreparingRebalance",
    ConsumerGroupState.COMPLETING_REBALANCING: "CompletingRebalance",
}

Partition = tuple[str, int]


class GroupActiveError(OperationError):
    """The group has members: its offsets may not be changed under them."""


@dataclass(frozen=True)
class Member:
    member_id: str
    client_id: str
    host: str
    instance_id: str | None
    assignment: tuple[Partition, ...]


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None
    """None: the group has no committed offset there."""
    high_watermark: int | None
    """None: the topic was deleted between reading the offsets and the watermarks."""
    lag: int | None
    """Records still to read (:func:`ys_platform.monitoring.lag.offset_lag`: transaction
    markers and aborted records are not lag); None without a committed offset."""
    member: Member | None


@dataclass(frozen=True)
class GroupView:
    group_id: str
    state: str
    protocol: str
    """Group type and assignor, e.g. ``classic/range``."""
    coordinator: str
    members: tuple[Member, ...]
    partitions: tuple[PartitionLag, ...]

    @property
    def total_lag(self) -> int | None:
        """The sum over partitions with a committed offset; None if there is none."""
        lags = [p.lag for p in self.partitions if p.lag is not None]
        return sum(lags) if lags else None


def _state(description: ConsumerGroupDescription) -> str:
    return _STATE_NAMES.get(description.state, description.state.name.title())


def _members(description: ConsumerGroupDescription) -> tuple[Member, ...]:
    return tuple(
        Member(
            member_id=m.member_id,
            client_id=m.client_id,
            host=m.host,
            instance_id=m.group_instance_id,
            assignment=tuple(
                sorted((tp.topic, tp.partition) for tp in m.assignment.topic_partitions)
            ),
        )
        for m in sorted(description.members, key=lambda m: m.member_id)
    )


def _committed(admin: AdminClient, group_id: str) -> dict[Partition, int]:
    request = [ConsumerGroupTopicPartitions(group_id)]
    futures = admin.list_consumer_group_offsets(request, request_timeout=ADMIN_TIMEOUT_S)
    listed = result(futures[group_id], f"could not list the offsets of group {group_id}")
    return {
        (tp.topic, tp.partition): tp.offset
        for tp in listed.topic_partitions or ()
        if tp.offset >= 0
    }


def group_ids(admin: AdminClient) -> list[str]:
    listed = result(
        admin.list_consumer_groups(request_timeout=ADMIN_TIMEOUT_S),
        "could not list consumer groups",
    )
    return sorted(g.group_id for g in listed.valid)


def describe_groups(connection: KafkaConnection, ids: Sequence[str]) -> list[GroupView]:
    """State, members and per-partition lag of each group (those the cluster does not know
    raise an :class:`OperationError` naming them)."""
    from ys_platform.monitoring.lag import GroupFilter, LagReader, LagReadError, offset_lag

    if not ids:
        return []
    admin = connection.admin()
    descriptions = results(
        admin.describe_consumer_groups(list(ids), request_timeout=ADMIN_TIMEOUT_S),
        "could not describe consumer groups",
    )
    reader = LagReader(connection, GroupFilter.exactly(ids), timeout_s=ADMIN_TIMEOUT_S)
    try:
        reading = reader.read()
    except LagReadError as exc:
        raise OperationError(str(exc)) from exc
    finally:
        reader.close()
    committed = {
        g.group_id: {(p.topic, p.partition): p for p in g.partitions} for g in reading.groups
    }
    unknown = [
        g for g in ids if descriptions[g].state == ConsumerGroupState.DEAD and not committed[g]
    ]
    if unknown:
        raise OperationError(f"no consumer group {', '.join(map(repr, unknown))} on the cluster")
    # A partition a member owns but the group never committed is part of the view too: its
    # high watermark is read here (the reading has those of committed partitions).
    members = {g: _members(descriptions[g]) for g in ids}
    owned = {g: {tp: m for m in members[g] for tp in m.assignment} for g in ids}
    uncommitted = sorted({tp for g in ids for tp in owned[g]} - set(reading.offsets))
    high = {tp: offsets.latest for tp, offsets in reading.offsets.items()}
    high.update(list_offsets(admin, uncommitted, OffsetSpec.latest(), skip_missing=True))
    views = []
    for group_id in ids:
        description = descriptions[group_id]
        keys = sorted({*committed[group_id], *owned[group_id]})
        rows = []
        for t, p in keys:
            position = committed[group_id].get((t, p))
            rows.append(
                PartitionLag(
                    topic=t,
                    partition=p,
                    committed=position.committed if position is not None else None,
                    high_watermark=high.get((t, p)),
                    lag=(
                        offset_lag(position, reading.offsets[t, p])
                        if position is not None
                        else None
                    ),
                    member=owned[group_id].get((t, p)),
                )
            )
        views.append(
            GroupView(
                group_id=group_id,
                state=_state(description),
                protocol=f"{description.type.name.lower()}/{description.partition_assignor or '-'}",
                coordinator=str(description.coordinator.id),
                members=members[group_id],
                partitions=tuple(rows),
            )
        )
    return views


# --- resetting offsets --------------------------------------------------------------------------


@dataclass(frozen=True)
class ResetTarget:
    """Where to move a group's offsets: ``earliest``, ``latest`` or the first record at or after
    ``at`` (``datetime``), as kafka-consumer-groups' ``--to-earliest|--to-latest|--to-datetime``."""

    kind: str
    at: datetime | None = None

    def spec(self) -> OffsetSpec:
        if self.kind == "earliest":
            return OffsetSpec.earliest()
        if self.kind == "latest":
            return OffsetSpec.latest()
        assert self.at is not None
        return OffsetSpec.for_timestamp(int(self.at.timestamp() * 1000))


@dataclass(frozen=True)
class OffsetMove:
    topic: str
    partition: int
    old: int | None
    new: int


def plan_reset(
    admin: AdminClient, group_id: str, topic: str, target: ResetTarget
) -> list[OffsetMove]:
    """The moves a reset of ``group_id`` on every partition of ``topic`` makes.

    Refused (:class:`GroupActiveError`) while the group has members: they would commit over
    the new offsets, or keep consuming from their positions.
    """
    description = result(
        admin.describe_consumer_groups([group_id], request_timeout=ADMIN_TIMEOUT_S)[group_id],
        f"could not describe group {group_id}",
    )
    if description.members:
        raise GroupActiveError(
            f"group {group_id} has {len(description.members)} active member(s) (state "
            f"{_state(description)}); stop its consumers before resetting its offsets"
        )
    partitions = [(topic, p) for p in partitions_of(admin, topic)]
    committed = _committed(admin, group_id)
    new = list_offsets(admin, partitions, target.spec(), committed_only=True)
    missing = [tp for tp, offset in new.items() if offset < 0]
    if missing:
        # No record at or after the time: the end, as kafka-consumer-groups does.
        new.update(list_offsets(admin, missing, OffsetSpec.latest(), committed_only=True))
    return [OffsetMove(t, p, committed.get((t, p)), new[(t, p)]) for t, p in partitions]


def apply_reset(admin: AdminClient, group_id: str, moves: Sequence[OffsetMove]) -> None:
    """Commit the planned offsets for the group (the broker refuses if members joined since)."""
    request = ConsumerGroupTopicPartitions(
        group_id, [TopicPartition(m.topic, m.partition, m.new) for m in moves]
    )
    futures = admin.alter_consumer_group_offsets([request], request_timeout=ADMIN_TIMEOUT_S)
    altered = result(futures[group_id], f"could not reset the offsets of group {group_id}")
    failed = [tp for tp in altered.topic_partitions if tp.error is not None]
    if failed:
        raise OperationError(
            f"could not reset {failed[0].topic}[{failed[0].partition}] of group {group_id}: "
            f"{failed[0].error.str()}"
        )
