"""Long-running workers (processors and sinks) as Dagster runs.

A worker's asset runs for as long as its Dagster run lives: the worker consumes in a thread,
while the step's thread keeps a heartbeat on the run (tags), records a materialization of the
worker's outputs at most every 30 s (a processor's topics with its offsets, throughput and lag; a
sink's tables and collections each with its own rows or points and its own topic's offsets and
lag), and stops the worker — after it commits what it holds — when the run is terminated or the
keep-alive sensor is stopped. The outputs carry code and data versions and provenance (see
:mod:`~ys_platform.assets.versions`), and so does the worker's own materialization at the end.

Termination (the UI's, the sensor's, ``make dev`` stopping) reaches the step as SIGINT, which
Dagster turns into a ``DagsterExecutionInterruptedError`` raised wherever the step happens to
be. While the worker runs, the step takes SIGINT/SIGTERM itself instead: the signal only asks
the worker to stop, the worker commits, the step records the outputs, and then raises the
interrupt on its own — Dagster's path for a terminated run, which ends it CANCELED. Dagster
records such a step as interrupted (a STEP_FAILURE whose error source is INTERRUPT: 1.13 has no
other event for a stopped step) and prints both that and the run's end with the stack where the
interrupt was raised; :data:`worker_console_logger` prints them as one INFO line each instead.
"""

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import dagster as dg
from dagster._core.events import JobCanceledData
from dagster._core.execution.plan.objects import StepFailureData
from dagster._core.log_manager import get_log_record_metadata, has_log_record_metadata

from ys_platform.assets.versions import PendingVersion, data_version, worker_output_event
from ys_platform.catalog.topics import ConsumerGroupSpec
from ys_platform.streaming.metrics import WorkerMetrics
from ys_platform.streaming.signals import stop_on_signals

WORKER_TAG = "ys/worker"
REPLICA_TAG = "ys/replica"
HEARTBEAT_TAG = "ys/heartbeat"
SENSOR_NAME_TAG = "dagster/sensor_name"

# The bound: lineage over time, not per message.
MATERIALIZE_EVERY_S = 30.0
# Often enough that the sensor's 120 s stall limit means several missed beats, rarely enough to
# keep run-storage writes negligible.
HEARTBEAT_EVERY_S = 10.0
SENSOR_CHECK_EVERY_S = 10.0
# How long a terminated run's worker gets to commit what it holds and close.
STOP_GRACE_S = 60.0
# The errors of a stop on request: what their stack shows is only where the signal landed.
_INTERRUPTS = frozenset({dg.DagsterExecutionInterruptedError.__name__, KeyboardInterrupt.__name__})


class Worker(Protocol):
    metrics: WorkerMetrics

    @property
    def group_id(self) -> str: ...

    def run(self, stop: threading.Event, max_idle_s: float | None = None) -> WorkerMetrics: ...


StoreCounter = Callable[[bool], Mapping[str, Mapping[str, dg.MetadataValue]]]
"""What a sink's outputs hold now, ``{target: metadata}`` (a table's rows, a collection's
points), read on the step's thread, given whether the worker still runs (and so holds its store);
a target is left out when its store cannot be read at this moment without waiting."""


@dataclass(frozen=True)
class WorkerOutput:
    """An asset a worker writes: its key and parents, the physical thing it names (topic, table or
    collection under the run's namespace) and its data version."""

    key: dg.AssetKey
    parents: tuple[dg.AssetKey, ...]
    """All of the asset's parents in the lineage graph (see ``worker_output_event``)."""
    target: str
    version: dg.DataVersion
    source_topic: str | None = None
    """For a sink's table or collection, the physical topic copied into it: its offsets and lag
    are reported instead of the whole group's counters."""


def worker_data_version(worker: Worker) -> dg.DataVersion:
    """What a worker's run has processed: the offsets it committed, per input partition."""
    return data_version("worker", worker.group_id, dict(sorted(worker.metrics.committed.items())))


def keepalive_sensor_name(group_id: str) -> str:
    return f"{group_id.replace('-', '_')}_keepalive"


def worker_job_name(group_id: str) -> str:
    return f"{group_id.replace('-', '_')}_job"


def worker_job(group: ConsumerGroupSpec, asset_key: dg.AssetKey):  # -> unresolved asset job
    return dg.define_asset_job(
        worker_job_name(group.group_id),
        selection=dg.AssetSelection.assets(asset_key),
        tags={WORKER_TAG: group.group_id},
        # One long-running step: in-process, so termination signals reach it directly.
        executor_def=dg.in_process_executor,
        # Selects the code location's "console" logger (worker_console_logger); a run config
        # that names only ops keeps this default.
        config={"loggers": {"console": {}}},
        description=f"Keeps {group.group_id} running (launched by its keep-alive sensor).",
    )


def _output_metadata(
    worker: Worker, output: WorkerOutput, stored: Mapping[str, dg.MetadataValue]
) -> dict[str, Any]:
    metrics = worker.metrics
    metadata: dict[str, Any] = {"written_to": dg.MetadataValue.text(output.target)}
    if output.source_topic is None:
        # A processor's output topic: what the processor did to write it.
        summary = metrics.summary()
        metadata |= {
            "consumed": dg.MetadataValue.int(metrics.consumed),
            "produced": dg.MetadataValue.int(metrics.produced),
            "dead_lettered": dg.MetadataValue.int(metrics.dead_lettered),
            "messages_per_s": dg.MetadataValue.float(float(summary["messages_per_s"] or 0.0)),
            "consumer_lag": dg.MetadataValue.int(metrics.total_lag),
            "committed_offsets": dg.MetadataValue.json(dict(sorted(metrics.committed.items()))),
            "batch_latency_p99_s": dg.MetadataValue.float(
                float(summary["batch_latency_p99_s"] or 0)
            ),
        }
    else:
        # A sink's table or collection: its own topic's progress, and what it holds.
        def own(values: Mapping[str, int]) -> dict[str, int]:
            return {
                name: value
                for name, value in sorted(values.items())
                if name.rsplit("[", 1)[0] == output.source_topic
            }

        metadata |= {
            "source_topic": dg.MetadataValue.text(output.source_topic),
            "committed_offsets": dg.MetadataValue.json(own(metrics.committed)),
            "consumer_lag": dg.MetadataValue.int(sum(own(metrics.lag).values())),
        }
    return metadata | dict(stored)


def _sensor_stopped(instance: dg.DagsterInstance, sensor_name: str | None) -> bool:
    if not sensor_name:
        return False
    return any(
        state.name == sensor_name and state.status.value == "STOPPED"
        for state in instance.all_instigator_state()
    )


def run_worker_in_dagster(
    context: dg.AssetExecutionContext,
    worker: Worker,
    outputs: Sequence[WorkerOutput],
    max_idle_s: float | None,
    counter: StoreCounter | None = None,
) -> dg.MaterializeResult:
    """Drive ``worker`` for the life of the run, recording ``outputs`` as it goes. See the module
    doc for the stop, and :mod:`~ys_platform.assets.versions` for the versions recorded."""
    stop = threading.Event()
    failure: list[BaseException] = []

    def work() -> None:
        try:
            worker.run(stop, max_idle_s=max_idle_s)
        except BaseException as exc:  # re-raised on the step's thread, which fails the run
            failure.append(exc)

    thread = threading.Thread(target=work, name=f"{worker.group_id}-worker", daemon=True)
    instance, run_id, key = context.instance, context.run.run_id, context.asset_key
    sensor_name = context.run.tags.get(SENSOR_NAME_TAG)
    sensor_stopped = False
    last_beat = last_check = 0.0
    last_materialized = time.monotonic()
    materialized_at = -1
    stop_requested_at: float | None = None
    try:
        with stop_on_signals(stop, worker.group_id):
            thread.start()
            while thread.is_alive():
                thread.join(1.0)
                now = time.monotonic()
                if stop.is_set() and stop_requested_at is None:
                    stop_requested_at = now
                if stop_requested_at is not None and now - stop_requested_at > STOP_GRACE_S:
                    context.log.warning(
                        f"{worker.group_id} did not finish its commit within "
                        f"{STOP_GRACE_S:.0f} s of the stop request: ending the run without it"
                    )
                    break
                if now - last_beat >= HEARTBEAT_EVERY_S:
                    instance.add_run_tags(run_id, {HEARTBEAT_TAG: str(round(time.time(), 3))})
                    last_beat = now
                if now - last_check >= SENSOR_CHECK_EVERY_S and not stop.is_set():
                    last_check = now
                    if _sensor_stopped(instance, sensor_name):
                        context.log.info(f"{sensor_name} was stopped: stopping {worker.group_id}")
                        sensor_stopped = True
                        stop.set()
                if (
                    now - last_materialized >= MATERIALIZE_EVERY_S
                    and worker.metrics.consumed != materialized_at
                ):
                    _record_outputs(context, worker, outputs, counter, running=True)
                    last_materialized, materialized_at = now, worker.metrics.consumed
    except BaseException:
        # Off the main thread no handler could be set, so Dagster's interrupt (or any other
        # exit) lands here: the worker still gets to commit what it holds before the step ends.
        stop.set()
        thread.join(STOP_GRACE_S)
        raise
    if failure:
        raise failure[0]
    # Dagster's own signal for a terminated step: the run ends CANCELED (FAILURE only if nobody
    # asked to terminate it, as for any unexpected interrupt).
    interrupted = thread.is_alive() or (stop.is_set() and not sensor_stopped)
    version = worker_data_version(worker)
    # Always, even with nothing new: the outputs' last events name the worker's materialization
    # that follows, so they stay in sync with it (an interrupted run records none).
    _record_outputs(
        context,
        worker,
        outputs,
        counter,
        running=thread.is_alive(),
        pending=None if interrupted else PendingVersion(key, version),
    )
    if thread.is_alive():  # given up on (warned above)
        raise dg.DagsterExecutionInterruptedError()
    if interrupted:
        context.log.info(
            f"{worker.group_id} stopped on request after committing what it held "
            f"({worker.metrics.consumed} records consumed in this run)"
        )
        raise dg.DagsterExecutionInterruptedError()
    return dg.MaterializeResult(
        metadata={k: v for k, v in worker.metrics.summary().items() if v is not None},
        data_version=version,
    )


def _record_outputs(
    context: dg.AssetExecutionContext,
    worker: Worker,
    outputs: Sequence[WorkerOutput],
    counter: StoreCounter | None,
    *,
    running: bool,
    pending: PendingVersion | None = None,
) -> None:
    stored = counter(running) if counter is not None else {}
    for output in outputs:
        context.log_event(
            worker_output_event(
                context.instance,
                output.key,
                output.parents,
                output.version,
                description=f"written by {worker.group_id}",
                metadata=_output_metadata(worker, output, stored.get(output.target, {})),
                pending=pending,
            )
        )


class _InterruptsInOneLine(logging.Filter):
    """An interrupted step's failure and its run's cancellation, without the interrupt's stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not has_log_record_metadata(record):
            return True
        event = get_log_record_metadata(record)["dagster_event"]
        data = event.event_specific_data if event is not None else None
        error = data.error if isinstance(data, StepFailureData | JobCanceledData) else None
        if error is not None and error.cls_name in _INTERRUPTS:
            # The message is Dagster's sentence, then a blank line, then the error.
            head = str(record.msg).split("\n\n", 1)[0]
            record.msg = f"{head} (interrupted: the run was asked to stop)"
            record.args = ()
            # A stop on request is no error to a reader of the console (the event log keeps
            # Dagster's own level and the whole error).
            record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
        return True


@dg.logger(
    config_schema=dg.colored_console_logger.config_schema,
    description="Dagster's colored console logger, printing a stop on request (an interrupted "
    "step and its canceled run) as one line each instead of the interrupt's stack.",
)
def worker_console_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = dg.colored_console_logger.logger_fn(init_context)
    logger.addFilter(_InterruptsInOneLine())
    return logger
