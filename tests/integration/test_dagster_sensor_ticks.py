"""Sensors with nothing to do say nothing: a tick while the worker runs (keep-alive) or while
every connector is healthy (the live Connect of the local stack) returns neither run requests
nor a skip reason, and logs no line; a tick with something to report still says it."""

import logging
import time
from contextlib import ExitStack

import dagster as dg
import pytest
from cdc_helpers import running_cdc_connector

from ys_platform.assets.keys import processor_asset_key
from ys_platform.assets.processors import processor_assets, processor_jobs
from ys_platform.assets.workers import HEARTBEAT_TAG, WORKER_TAG, worker_job_name
from ys_platform.clients.kafka_connect import KafkaConnectClient
from ys_platform.connectors import status
from ys_platform.resources.kafka import KafkaResource
from ys_platform.resources.kafka_connect import KafkaConnectResource
from ys_platform.sensors.connectors import build_connector_health_sensor
from ys_platform.sensors.keepalive import (
    STALL_AFTER_S,
    KeptWorker,
    evaluate_keepalive,
    keepalive_sensors,
)

GROUP = "price-aggregation-processor"
KEPT = KeptWorker(GROUP, processor_asset_key(GROUP))


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name}: {record.getMessage()}")


def _tick_log(context: dg.SensorEvaluationContext) -> _Lines:
    """The lines of the tick's own log (``context.log``, what the UI shows under the tick)."""
    lines = _Lines()
    context.log.addHandler(lines)
    return lines


def _platform_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The platform's module loggers (httpx's line per REST request is the HTTP client's)."""
    return [r.getMessage() for r in caplog.records if r.name.startswith("ys_platform")]


def test_keepalive_tick_while_running_is_silent(local_stack, caplog):
    defs = dg.Definitions(
        assets=processor_assets,
        jobs=processor_jobs,
        sensors=keepalive_sensors,
        resources={"kafka": KafkaResource.of(local_stack.kafka)},
    )
    job = defs.resolve_job_def(worker_job_name(GROUP))
    with dg.instance_for_test() as instance:
        now = time.time()
        running = instance.create_run_for_job(
            job_def=job,
            tags={WORKER_TAG: GROUP, HEARTBEAT_TAG: str(now - 5)},
            status=dg.DagsterRunStatus.STARTED,
        )
        context = dg.build_sensor_context(instance=instance, cursor=None, definitions=defs)
        tick_log = _tick_log(context)
        with caplog.at_level(logging.DEBUG, logger="ys_platform"):
            result = evaluate_keepalive(context, KEPT, now=now)
        assert result.run_requests == [] and result.skip_reason is None
        assert tick_log.lines == [] and _platform_lines(caplog) == []
        context.log.info("a line the tick log does capture")
        assert [line.split(": ", 1)[1] for line in tick_log.lines] == [
            "a line the tick log does capture"
        ]

        # Something to report is still reported: the same run, its heartbeat now stale.
        stalled = evaluate_keepalive(context, KEPT, now=now + STALL_AFTER_S + 10)
        assert f"run {running.run_id} stalled" in stalled.skip_reason.skip_message


def test_connector_health_tick_with_all_healthy_is_silent(local_stack, caplog):
    with ExitStack() as exits:
        stack, file = running_cdc_connector(exits)
        with KafkaConnectClient(stack.connect_url) as client:
            deadline = time.monotonic() + 60
            while not status(client, file.name).is_("RUNNING"):
                assert time.monotonic() < deadline, status(client, file.name).summary()
                time.sleep(0.5)
        _healthy_tick_is_silent(stack, file, caplog)


def _healthy_tick_is_silent(stack, file, caplog) -> None:
    sensor = build_connector_health_sensor([file])
    context = dg.build_sensor_context(
        cursor=None,
        resources={
            "kafka_connect": KafkaConnectResource(url=stack.connect_url),
            "kafka": KafkaResource.of(stack.kafka),
        },
    )
    tick_log = _tick_log(context)
    with caplog.at_level(logging.DEBUG, logger="ys_platform"):
        result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    assert result.run_requests == [] and result.skip_reason is None
    assert tick_log.lines == [] and _platform_lines(caplog) == []
    assert result.cursor  # the healthy state is still recorded
