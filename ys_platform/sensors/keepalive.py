"""Keep exactly one long-running run of each replica of each processor and sink alive.

A worker runs as N replicas (``KeptWorker.replicas``: the catalog's count or
``YS_WORKER_REPLICAS``); replica ``i``'s runs are tagged ``ys/replica=i`` and configured with
``instance_id=i``, its static member id and (for a processor) its transactional id, so a
relaunched replica takes its partitions back and fences its predecessor's open transaction.

Each tick, for each replica: if a run of it is in progress and its heartbeat is fresh, do
nothing; if its heartbeat is stale (stalled), cancel it and count a failure; if none is in
progress, launch one — at once after a clean stop, after an exponential backoff after failures.

A tick with nothing to do returns a ``SensorResult`` with neither run requests nor a skip reason:
Dagster records it as skipped without a message, so the tick history shows reasons only for what
an operator may act on (a stall, a backoff).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import dagster as dg

from ys_platform.assets.keys import processor_asset_key
from ys_platform.assets.processors import PROCESSOR_GROUPS
from ys_platform.assets.workers import (
    HEARTBEAT_TAG,
    REPLICA_TAG,
    WORKER_TAG,
    keepalive_sensor_name,
    worker_job_name,
)
from ys_platform.catalog.topics import ConsumerGroupSpec
from ys_platform.streaming.supervisor import backoff_s

# A heartbeat is written every 10 s; 12 missed beats is a stall, not a slow batch.
STALL_AFTER_S = 120.0
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
# Runs of one worker in progress looked at per tick: its replicas (at most 12) and a few
# duplicates or stragglers being cancelled.
_ACTIVE_LIMIT = 50


@dataclass(frozen=True)
class ReplicaCursor:
    failures: int = 0
    """Consecutive failed runs (reset by a run that ended cleanly)."""
    last_seen_run: str | None = None
    """The last finished run already counted."""


@dataclass(frozen=True)
class KeepaliveCursor:
    """Each replica's failure count, by replica id."""

    replicas: Mapping[str, ReplicaCursor] = field(default_factory=dict)

    @classmethod
    def parse(cls, cursor: str | None) -> KeepaliveCursor:
        if not cursor:
            return cls()
        data = json.loads(cursor)
        if "replicas" not in data:  # written before replicas: the one run was replica 0
            data = {"replicas": {"0": data}}
        return cls(
            {
                replica: ReplicaCursor(int(c.get("failures", 0)), c.get("last_seen_run"))
                for replica, c in data["replicas"].items()
            }
        )

    def of(self, replica: str) -> ReplicaCursor:
        return self.replicas.get(replica, ReplicaCursor())

    def dump(self) -> str:
        return json.dumps(
            {"replicas": {r: c.__dict__ for r, c in sorted(self.replicas.items())}},
            sort_keys=True,
        )


@dataclass(frozen=True)
class KeptWorker:
    """A long-running worker the sensors keep alive: its group, the asset its runs materialize
    (whose op takes the replica's ``instance_id``) and how many replicas run."""

    group_id: str
    asset_key: dg.AssetKey
    replicas: int = 1

    def run_config(self, replica: str) -> dict[str, object]:
        op = self.asset_key.to_python_identifier()  # the asset's op name
        return {"ops": {op: {"config": {"instance_id": replica}}}}


def heartbeat_age_s(run: dg.DagsterRun, started_at: float | None, now: float) -> float | None:
    beat = run.tags.get(HEARTBEAT_TAG)
    reference = float(beat) if beat else started_at
    return None if reference is None else now - reference


def replica_of(run: dg.DagsterRun) -> str:
    """A run's replica id (runs launched before replicas were replica 0)."""
    return run.tags.get(REPLICA_TAG, "0")


@dataclass
class _Tick:
    """What one evaluation decides: runs to launch, what to say, the next cursor."""

    requests: list[dg.RunRequest] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    cursors: dict[str, ReplicaCursor] = field(default_factory=dict)


def evaluate_keepalive(
    context: dg.SensorEvaluationContext, worker: KeptWorker, now: float | None = None
) -> dg.SensorResult:
    """Keep one run of each of ``worker``'s replicas alive, see the module doc. A replica beyond
    ``worker.replicas`` (the count was lowered) has its run cancelled."""
    now = time.time() if now is None else now
    instance = context.instance
    cursor = KeepaliveCursor.parse(context.cursor)
    group_tag = {WORKER_TAG: worker.group_id}
    active: dict[str, list[dg.RunRecord]] = {}
    for record in instance.get_run_records(
        filters=dg.RunsFilter(tags=group_tag, statuses=IN_PROGRESS), limit=_ACTIVE_LIMIT
    ):  # newest first
        active.setdefault(replica_of(record.dagster_run), []).append(record)
    wanted = [str(i) for i in range(worker.replicas)]
    tick = _Tick()
    for replica, records in active.items():
        if replica not in wanted:
            for record in records:
                instance.run_coordinator.cancel_run(record.dagster_run.run_id)
            tick.reasons.append(
                f"replica {replica} is beyond the {worker.replicas} configured: run cancelled"
            )
    for replica in wanted:
        _keep_replica(instance, worker, replica, active.get(replica, []), cursor, now, tick)
    next_cursor = KeepaliveCursor(tick.cursors).dump()
    if tick.requests:
        for reason in tick.reasons:  # a result with run requests carries no skip reason
            context.log.info(reason)
        return dg.SensorResult(run_requests=tick.requests, cursor=next_cursor)
    # Nothing to launch or say: neither requests nor a reason, so the tick history stays quiet.
    return dg.SensorResult(skip_reason="; ".join(tick.reasons) or None, cursor=next_cursor)


def _keep_replica(
    instance: dg.DagsterInstance,
    worker: KeptWorker,
    replica: str,
    active: list[dg.RunRecord],
    cursor: KeepaliveCursor,
    now: float,
    tick: _Tick,
) -> None:
    seen = cursor.of(replica)
    name = worker.group_id if worker.replicas == 1 else f"{worker.group_id} replica {replica}"
    if active:
        newest, *extra = active
        for record in extra:  # exactly one per replica: a duplicate launch is cancelled
            instance.run_coordinator.cancel_run(record.dagster_run.run_id)
        tick.cursors[replica] = seen
        run = newest.dagster_run
        if run.status == dg.DagsterRunStatus.STARTED:
            age = heartbeat_age_s(run, newest.start_time, now)
            if age is not None and age > STALL_AFTER_S:
                if not instance.run_coordinator.cancel_run(run.run_id):
                    # The launcher could not reach the run (its process is gone): record it.
                    instance.report_run_canceled(run, message=f"no heartbeat for {age:.0f} s")
                tick.reasons.append(
                    f"{name}: run {run.run_id} stalled (no heartbeat for {age:.0f} s): "
                    "cancelled, a new one follows after the backoff"
                )
        return  # running: nothing to do or to say

    tags = {WORKER_TAG: worker.group_id, REPLICA_TAG: replica}
    (last,) = instance.get_run_records(filters=dg.RunsFilter(tags=tags), limit=1) or (None,)
    failures = seen.failures
    if last is not None and last.dagster_run.run_id != seen.last_seen_run:
        failures = failures + 1 if last.dagster_run.status in FAILED else 0
    last_id = last.dagster_run.run_id if last is not None else seen.last_seen_run
    tick.cursors[replica] = ReplicaCursor(failures, last_id)
    if last is not None and failures:
        ended = last.end_time or last.update_timestamp.timestamp()
        wait = ended + backoff_s(failures) - now
        if wait > 0:
            tick.reasons.append(
                f"{name} failed {failures} time(s) in a row; relaunching in {wait:.0f} s"
            )
            return
    tick.requests.append(
        dg.RunRequest(
            tags={**tags, "ys/attempt": str(failures + 1)},
            run_config=worker.run_config(replica),
        )
    )


def _build_sensor(worker: KeptWorker) -> dg.SensorDefinition:
    replicas = "one run" if worker.replicas == 1 else f"{worker.replicas} replicas"

    @dg.sensor(
        name=keepalive_sensor_name(worker.group_id),
        job_name=worker_job_name(worker.group_id),
        minimum_interval_seconds=SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Keeps {replicas} of {worker.group_id} alive; stop this sensor to stop it.",
    )
    def _keepalive(context: dg.SensorEvaluationContext):
        return evaluate_keepalive(context, worker)

    return _keepalive


def build_keepalive_sensors(workers: Sequence[KeptWorker]) -> list[dg.SensorDefinition]:
    """One keep-alive sensor per long-running worker (processors and sinks)."""
    return [_build_sensor(worker) for worker in workers]


def processor_workers(replicas: Callable[[ConsumerGroupSpec], int]) -> list[KeptWorker]:
    """The processors, each with the replica count ``replicas`` gives it."""
    return [
        KeptWorker(g.group_id, processor_asset_key(g.group_id), replicas(g))
        for g in PROCESSOR_GROUPS
    ]


keepalive_sensors = build_keepalive_sensors(processor_workers(lambda group: group.replicas))
