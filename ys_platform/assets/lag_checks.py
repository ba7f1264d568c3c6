"""Consumer-lag checks beside each processor and sink asset: lag in seconds within the group's
bound and the group's status OK, with the per-partition table in the check's metadata.

Each evaluation reads the group once (:class:`ConsumerLagSource`; on a cluster
:class:`~ys_platform.assets.lag_source.KafkaLagSource`) and records ``max_lag_seconds`` and
``total_offset_lag`` as numbers, so the asset page plots them over time, and the partitions as
a table. :func:`build_lag_checks` makes the checks (no I/O while the definitions load) and
:func:`monitoring_check_schedule` evaluates them every minute.

Status. Burrow's rules (:mod:`ys_platform.monitoring.status`) judge a window of commits; a
check runs once a minute in a fresh process, so its window is its own history: the previous
evaluation's table (committed offset, offset lag, since when the offset has not moved) and this
one, a window of two. Over it the same :func:`~ys_platform.monitoring.status.evaluate` gives
REWIND (the committed offset went back), STALL (a member owns the partition, lag > 0 and the
offset did not move for a minute), STOP (nobody owns it and the offset has not moved for more
than the minute between evaluations), WARN (the offset moved but the lag grew) or OK; the first
evaluation, with no history, can only say OK. The monitor's own window (10 polls of 5 s) stays
the monitor's: the check does not talk to its process.
"""

import time
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, Protocol

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from ys_platform.monitoring.status import Observation, Status, evaluate, worst
from ys_platform.resources.kafka import KafkaResource

__all__ = [
    "CHECK_NAME",
    "ConsumerLagSource",
    "PartitionLag",
    "PartitionReading",
    "Position",
    "build_lag_checks",
    "evaluate_group_lag",
    "monitoring_check_schedule",
    "previous_positions",
    "with_status",
]

CHECK_NAME = "consumer_lag"

# Burrow's window over the check's history: the previous evaluation and this one.
WINDOW = 2


class PartitionReading(NamedTuple):
    """One partition of a group as read now."""

    topic: str
    partition: int
    committed: int
    offset_lag: int
    lag_seconds: float | None
    """The age of the next record the group reads, 0 when caught up; None when not read."""
    owned: bool
    """A live member of the group has the partition assigned."""


class ConsumerLagSource(Protocol):
    """What the checks need from the cluster: one group's partitions, read now."""

    def lag_for_group(self, group: str) -> Sequence[PartitionReading]: ...


class PartitionLag(NamedTuple):
    """A partition as the check reports it: the reading and its status over the window."""

    topic: str
    partition: int
    committed: int
    offset_lag: int
    lag_seconds: float | None
    status: Status
    committed_since: float
    """When the committed offset was first seen at its value (Unix seconds)."""


class Position(NamedTuple):
    """A partition as the previous evaluation left it (from its table)."""

    committed: int
    offset_lag: int
    at: float
    committed_since: float


def with_status(
    readings: Sequence[PartitionReading], previous: Mapping[tuple[str, int], Position], now: float
) -> list[PartitionLag]:
    """Each reading with its Burrow status over ``previous`` and now (see the module doc)."""
    judged = []
    for r in readings:
        before = previous.get((r.topic, r.partition))
        entries = []
        since = now
        if before is not None:
            entries.append(Observation(before.committed, before.offset_lag, before.at))
            if before.committed == r.committed:
                since = before.committed_since
        entries.append(Observation(r.committed, r.offset_lag, now))
        status = evaluate(entries, moved_at=since, owned=r.owned, size=WINDOW)
        judged.append(
            PartitionLag(
                r.topic, r.partition, r.committed, r.offset_lag, r.lag_seconds, status, since
            )
        )
    return judged


_PARTITIONS_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("topic", "string"),
        dg.TableColumn("partition", "int"),
        dg.TableColumn("committed", "int"),
        dg.TableColumn("offset_lag", "int"),
        dg.TableColumn("lag_seconds", "float", description="empty when the record was not read"),
        dg.TableColumn("status", "string"),
        dg.TableColumn("committed_since", "float", description="Unix seconds"),
    ]
)
_STUCK = (Status.STALL, Status.STOP, Status.REWIND, Status.NOTFOUND)


def evaluate_group_lag(
    group: str, partitions: Sequence[PartitionLag], max_lag_s: float, checked_at: float
) -> dg.AssetCheckResult:
    """The check's result for ``group``: passes when every partition's status is OK and every
    known lag in seconds is within ``max_lag_s``. A group without committed offsets fails."""
    status = worst(p.status for p in partitions) if partitions else Status.NOTFOUND
    known = [p.lag_seconds for p in partitions if p.lag_seconds is not None]
    max_lag = max(known, default=None)
    problems = []
    if not partitions:
        problems.append(f"{group} has no committed offsets on the cluster")
    if status not in (Status.OK, Status.NOTFOUND):
        bad = [
            f"{p.topic}[{p.partition}] {p.status.name}"
            for p in partitions
            if p.status is not Status.OK
        ]
        problems.append(f"status {status.name}: {', '.join(bad)}")
    if max_lag is not None and max_lag > max_lag_s:
        problems.append(f"lag {max_lag:.1f} s exceeds {max_lag_s:.0f} s")
    metadata: dict[str, dg.MetadataValue] = {
        "status": dg.MetadataValue.text(status.name),
        "total_offset_lag": dg.MetadataValue.int(sum(p.offset_lag for p in partitions)),
        "max_offset_lag": dg.MetadataValue.int(max((p.offset_lag for p in partitions), default=0)),
        "lag_bound_s": dg.MetadataValue.float(float(max_lag_s)),
        "partitions_without_lag_seconds": dg.MetadataValue.int(len(partitions) - len(known)),
        "checked_at": dg.MetadataValue.timestamp(checked_at),
        "partitions": dg.MetadataValue.table(
            [
                dg.TableRecord(
                    {
                        "topic": p.topic,
                        "partition": p.partition,
                        "committed": p.committed,
                        "offset_lag": p.offset_lag,
                        "lag_seconds": p.lag_seconds,
                        "status": p.status.name,
                        "committed_since": p.committed_since,
                    }
                )
                for p in sorted(partitions, key=lambda p: (p.topic, p.partition))
            ],
            schema=_PARTITIONS_SCHEMA,
        ),
    }
    if max_lag is not None:
        # Only when measured: a 0 standing in for "unknown" would plot as caught up.
        metadata["max_lag_seconds"] = dg.MetadataValue.float(float(max_lag))
    # A group that stopped, stalled, rewound or never committed needs someone; a slow one may
    # catch up.
    return dg.AssetCheckResult(
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR if status in _STUCK else dg.AssetCheckSeverity.WARN,
        description="; ".join(problems) or None,
        metadata=metadata,
    )


def previous_positions(
    instance: dg.DagsterInstance, check_key: dg.AssetCheckKey
) -> dict[tuple[str, int], Position]:
    """The partitions of the check's last evaluation (none before the first)."""
    evaluated = {AssetCheckExecutionRecordStatus.SUCCEEDED, AssetCheckExecutionRecordStatus.FAILED}
    records = instance.event_log_storage.get_asset_check_execution_history(
        check_key, limit=1, status=evaluated
    )
    if not records or records[0].event is None or records[0].event.dagster_event is None:
        return {}
    record = records[0]
    metadata = record.event.dagster_event.asset_check_evaluation_data.metadata
    table, at = metadata.get("partitions"), metadata.get("checked_at")
    if not isinstance(table, dg.TableMetadataValue) or not isinstance(
        at, dg.TimestampMetadataValue
    ):
        return {}  # an evaluation of an earlier version of the check: no window yet
    return {
        (row.data["topic"], row.data["partition"]): Position(
            row.data["committed"], row.data["offset_lag"], at.value, row.data["committed_since"]
        )
        for row in table.records
    }


def build_lag_checks(
    groups: Mapping[str, tuple[dg.AssetKey, float]],
    source: Callable[[KafkaResource], ConsumerLagSource],
    clock: Callable[[], float] = time.time,
) -> list[dg.AssetChecksDefinition]:
    """One check per ``{consumer group: (its processor or sink asset, lag bound in seconds)}``,
    reading ``source(kafka)`` when evaluated (not when built: no I/O while the definitions
    load)."""

    def build(group: str, key: dg.AssetKey, bound_s: float) -> dg.AssetChecksDefinition:
        @dg.asset_check(
            asset=key,
            name=CHECK_NAME,
            description=f"{group}: every partition OK and lag within {bound_s:.0f} s.",
        )
        def _check(
            context: dg.AssetCheckExecutionContext, kafka: KafkaResource
        ) -> dg.AssetCheckResult:
            previous = previous_positions(context.instance, context.check_specs[0].key)
            readings = source(kafka).lag_for_group(group)
            now = clock()
            return evaluate_group_lag(group, with_status(readings, previous, now), bound_s, now)

        return _check

    return [build(group, key, bound) for group, (key, bound) in sorted(groups.items())]


def monitoring_check_schedule(
    checks: Sequence[dg.AssetChecksDefinition],
) -> tuple[UnresolvedAssetJobDefinition, dg.ScheduleDefinition]:
    """A job evaluating ``checks`` and its schedule, every minute (Dagster's finest), a point per
    minute on each asset's plots."""
    job = dg.define_asset_job(
        "monitoring_checks_job",
        selection=dg.AssetSelection.checks(*checks),
        description="Evaluate the consumer-lag and source-freshness checks.",
        # One process for all: a subprocess per check would import the code location once per
        # check every minute on the two cores the whole stack shares.
        executor_def=dg.in_process_executor,
    )
    schedule = dg.ScheduleDefinition(
        name="monitoring_checks_schedule",
        job=job,
        cron_schedule="* * * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    return job, schedule
