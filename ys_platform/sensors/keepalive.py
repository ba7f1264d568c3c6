"""Keep exactly one long-running run of each processor and sink alive.

Each tick: if a run of the processor is in progress and its heartbeat is fresh, do nothing; if
its heartbeat is stale (stalled), cancel it and count a failure; if none is in progress, launch
one — at once after a clean stop, after an exponential backoff after failures.

A tick with nothing to do returns a ``SensorResult`` with neither run requests nor a skip reason:
Dagster records it as skipped without a message, so the tick history shows reasons only for what
an operator may act on (a stall, a backoff).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import dagster as dg

from ys_platform.assets.processors import PROCESSOR_GROUPS
from ys_platform.assets.workers import (
    HEARTBEAT_TAG,
    WORKER_TAG,
    keepalive_sensor_name,
    worker_job_name,
)

# A heartbeat is written every 10 s; 12 missed beats is a stall, not a slow batch.
STALL_AFTER_S = 120.0
BACKOFF_BASE_S = 15.0
# A processor failing for a structural reason (topic deleted, auth) is retried every 10 minutes
# at most, and an operator sees the failures meanwhile.
BACKOFF_MAX_S = 600.0
# Dagster's daemon floor for sensors is 5 s; 15 s keeps the relaunch delay small and ticks cheap.
SENSOR_INTERVAL_S = 15

IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
FAILED = {dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


@dataclass(frozen=True)
class KeepaliveCursor:
    failures: int = 0
    """Consecutive failed runs (reset by a run that ended cleanly)."""
    last_seen_run: str | None = None
    """The last finished run already counted."""

    @classmethod
    def parse(cls, cursor: str | None) -> KeepaliveCursor:
        if not cursor:
            return cls()
        data = json.loads(cursor)
        return cls(failures=int(data.get("failures", 0)), last_seen_run=data.get("last_seen_run"))

    def dump(self) -> str:
        return json.dumps({"failures": self.failures, "last_seen_run": self.last_seen_run})


def backoff_s(failures: int) -> float:
    if failures <= 0:
        return 0.0
    return min(BACKOFF_BASE_S * 2 ** (failures - 1), BACKOFF_MAX_S)


def heartbeat_age_s(run: dg.DagsterRun, started_at: float | None, now: float) -> float | None:
    beat = run.tags.get(HEARTBEAT_TAG)
    reference = float(beat) if beat else started_at
    return None if reference is None else now - reference


def evaluate_keepalive(
    context: dg.SensorEvaluationContext, group_id: str, now: float | None = None
) -> dg.SensorResult:
    now = time.time() if now is None else now
    instance = context.instance
    cursor = KeepaliveCursor.parse(context.cursor)
    tags = {WORKER_TAG: group_id}
    active = instance.get_run_records(
        filters=dg.RunsFilter(tags=tags, statuses=IN_PROGRESS), limit=10
    )
    if active:
        newest, *extra = active  # newest first
        for record in extra:  # exactly one: a duplicate launch is cancelled
            instance.run_coordinator.cancel_run(record.dagster_run.run_id)
        run = newest.dagster_run
        if run.status == dg.DagsterRunStatus.STARTED:
            age = heartbeat_age_s(run, newest.start_time, now)
            if age is not None and age > STALL_AFTER_S:
                if not instance.run_coordinator.cancel_run(run.run_id):
                    # The launcher could not reach the run (its process is gone): record it.
                    instance.report_run_canceled(run, message=f"no heartbeat for {age:.0f} s")
                return dg.SensorResult(
                    skip_reason=f"run {run.run_id} stalled (no heartbeat for {age:.0f} s): "
                    "cancelled, a new one follows after the backoff",
                    cursor=KeepaliveCursor(cursor.failures, cursor.last_seen_run).dump(),
                )
        return dg.SensorResult(cursor=context.cursor)  # running: nothing to do or to say

    (last,) = instance.get_run_records(filters=dg.RunsFilter(tags=tags), limit=1) or (None,)
    failures = cursor.failures
    if last is not None and last.dagster_run.run_id != cursor.last_seen_run:
        failures = failures + 1 if last.dagster_run.status in FAILED else 0
    seen = last.dagster_run.run_id if last is not None else cursor.last_seen_run
    next_cursor = KeepaliveCursor(failures, seen).dump()
    if last is not None and failures:
        ended = last.end_time or last.update_timestamp.timestamp()
        wait = ended + backoff_s(failures) - now
        if wait > 0:
            return dg.SensorResult(
                skip_reason=f"{group_id} failed {failures} time(s) in a row; "
                f"relaunching in {wait:.0f} s",
                cursor=next_cursor,
            )
    return dg.SensorResult(
        run_requests=[dg.RunRequest(tags={**tags, "ys/attempt": str(failures + 1)})],
        cursor=next_cursor,
    )


def _build_sensor(group_id: str) -> dg.SensorDefinition:
    @dg.sensor(
        name=keepalive_sensor_name(group_id),
        job_name=worker_job_name(group_id),
        minimum_interval_seconds=SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Keeps one run of {group_id} alive; stop this sensor to stop the processor.",
    )
    def _keepalive(context: dg.SensorEvaluationContext):
        return evaluate_keepalive(context, group_id)

    return _keepalive


def build_keepalive_sensors(group_ids: list[str]) -> list[dg.SensorDefinition]:
    """One keep-alive sensor per long-running worker (processors and sinks)."""
    return [_build_sensor(group_id) for group_id in group_ids]


keepalive_sensors = build_keepalive_sensors([g.group_id for g in PROCESSOR_GROUPS])
