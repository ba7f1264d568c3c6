"""Consumer-lag checks beside each processor and sink asset: lag in seconds within a bound and
the group's status OK, with the per-partition table in the check's metadata.

The lag itself comes from the lag monitor (``ys_platform.monitoring``, built separately): this
module needs only :class:`ConsumerLagSource`, one call per consumer group. Each evaluation
records ``max_lag_seconds`` and ``sum_offset_lag`` as numbers, so the asset page plots them over
time, and the partitions as a table. :func:`build_lag_checks` makes the checks and
:func:`lag_check_schedule` evaluates them every minute; neither is in the code location until a
monitor is there to pass in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple, Protocol

import dagster as dg

__all__ = [
    "CHECK_NAME",
    "DEFAULT_MAX_LAG_S",
    "ConsumerLagSource",
    "PartitionLag",
    "build_lag_checks",
    "evaluate_group_lag",
    "lag_check_schedule",
]

CHECK_NAME = "consumer_lag"

DEFAULT_MAX_LAG_S = 60.0
"""Lag in seconds a group may have before its check fails: twice the 30 s between worker
materializations, so a healthy worker never trips it while a stuck one does within a minute."""

# Burrow's statuses, best first: the group's status is its worst partition's.
STATUS_ORDER = ("OK", "WARN", "STALL", "STOP", "REWIND")


class PartitionLag(NamedTuple):
    """One partition of a group, as the lag monitor measures it."""

    topic: str
    partition: int
    offset_lag: int
    lag_seconds: float | None
    """Absent until the monitor has two offset/time points for the partition."""
    status: str
    """One of :data:`STATUS_ORDER`."""


class ConsumerLagSource(Protocol):
    """What the checks need from the lag monitor."""

    def lag_for_group(self, group: str) -> Sequence[PartitionLag]: ...


def _worst(statuses: Sequence[str]) -> str:
    known = [s for s in statuses if s in STATUS_ORDER]
    return max(known, key=STATUS_ORDER.index) if known else "OK"


_PARTITIONS_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("topic", "string"),
        dg.TableColumn("partition", "int"),
        dg.TableColumn("offset_lag", "int"),
        dg.TableColumn("lag_seconds", "float", description="empty until two samples exist"),
        dg.TableColumn("status", "string"),
    ]
)


def evaluate_group_lag(
    group: str, partitions: Sequence[PartitionLag], max_lag_s: float = DEFAULT_MAX_LAG_S
) -> dg.AssetCheckResult:
    """The check's result for ``group``: passes when every partition's status is OK and every
    known lag in seconds is within ``max_lag_s``. A group the monitor does not see fails."""
    status = _worst([p.status for p in partitions]) if partitions else "UNKNOWN"
    known = [p.lag_seconds for p in partitions if p.lag_seconds is not None]
    max_lag = max(known, default=None)
    problems = []
    if not partitions:
        problems.append(f"the lag monitor reports no partitions for {group}")
    if status not in ("OK", "UNKNOWN"):
        bad = [f"{p.topic}[{p.partition}] {p.status}" for p in partitions if p.status != "OK"]
        problems.append(f"status {status}: {', '.join(bad)}")
    if max_lag is not None and max_lag > max_lag_s:
        problems.append(f"lag {max_lag:.1f} s exceeds {max_lag_s:.0f} s")
    metadata: dict[str, dg.MetadataValue] = {
        "status": dg.MetadataValue.text(status),
        "sum_offset_lag": dg.MetadataValue.int(sum(p.offset_lag for p in partitions)),
        "max_offset_lag": dg.MetadataValue.int(max((p.offset_lag for p in partitions), default=0)),
        "partitions_without_lag_seconds": dg.MetadataValue.int(len(partitions) - len(known)),
        "partitions": dg.MetadataValue.table(
            [
                dg.TableRecord(
                    {
                        "topic": p.topic,
                        "partition": p.partition,
                        "offset_lag": p.offset_lag,
                        "lag_seconds": p.lag_seconds,
                        "status": p.status,
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
    # A group that stopped, stalled, rewound or vanished needs someone; a slow one may catch up.
    stuck = status in ("STALL", "STOP", "REWIND", "UNKNOWN")
    return dg.AssetCheckResult(
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR if stuck else dg.AssetCheckSeverity.WARN,
        description="; ".join(problems) or None,
        metadata=metadata,
    )


def build_lag_checks(
    groups: Mapping[str, dg.AssetKey],
    source: ConsumerLagSource,
    max_lag_s: float = DEFAULT_MAX_LAG_S,
) -> list[dg.AssetChecksDefinition]:
    """One check per ``{consumer group: its processor or sink asset}``, reading ``source``
    when evaluated (not when built: no I/O while the definitions load)."""

    def build(group: str, key: dg.AssetKey) -> dg.AssetChecksDefinition:
        @dg.asset_check(
            asset=key,
            name=CHECK_NAME,
            description=f"{group}: every partition OK and lag within {max_lag_s:.0f} s.",
        )
        def _check() -> dg.AssetCheckResult:
            return evaluate_group_lag(group, source.lag_for_group(group), max_lag_s)

        return _check

    return [build(group, key) for group, key in sorted(groups.items())]


def lag_check_schedule(checks: Sequence[dg.AssetChecksDefinition]) -> dg.ScheduleDefinition:
    """Evaluate ``checks`` every minute (Dagster's finest schedule), a point per minute on each
    asset's lag plot."""
    job = dg.define_asset_job(
        "consumer_lag_checks_job",
        selection=dg.AssetSelection.checks(*checks),
        description="Evaluate the consumer-lag checks of the processors and sinks.",
    )
    return dg.ScheduleDefinition(
        name="consumer_lag_checks_schedule",
        job=job,
        cron_schedule="* * * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
