"""Connector health: restart failed Kafka Connect connectors/tasks with backoff, alert after N.

Each tick looks at every connector file's live status (a few REST calls, well inside the tick's
60 s). A connector or task in FAILED is restarted (Connect's onlyFailed restart) once its
backoff has passed; every restart that is followed by FAILED again counts as one more
consecutive failure. At ``ALERT_AFTER`` consecutive failures a ``SystemAlert`` goes to
``system.alerts`` (once per streak). A connector seen healthy resets its streak. The per-
connector streak and next allowed restart time live in the sensor cursor (JSON).

A tick where every connector is healthy, as before, returns no skip reason: only what changed or
needs an operator (a restart, a recovery, a connector missing or unreachable) is reported.
"""

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import dagster as dg

from ys_platform.catalog.models import SystemAlert
from ys_platform.clients.kafka_connect import ConnectError, KafkaConnectClient
from ys_platform.connectors import ConnectorFile, restart_failed, status
from ys_platform.resources.kafka import KafkaResource
from ys_platform.resources.kafka_connect import KafkaConnectResource

__all__ = [
    "ALERT_AFTER",
    "ConnectorHealth",
    "build_connector_health_sensor",
    "evaluate_connector_health",
]

SENSOR_NAME = "connector_health"
# Dagster's sensor loop floor is 5 s; 30 s notices a failed task quickly without polling the
# Connect REST API more than a dashboard would.
SENSOR_INTERVAL_S = 30
# First retry after 30 s, doubling to at most 15 min: a transient outage (database restart)
# heals on the first or second try; a structural one (revoked privilege) is not hammered.
BACKOFF_BASE_S = 30.0
BACKOFF_MAX_S = 900.0
# Three restarts that did not hold is no longer a blip: tell a human.
ALERT_AFTER = 3


@dataclass
class ConnectorHealth:
    failures: int = 0
    next_attempt_at: float = 0.0
    alerted: bool = False


def backoff_s(failures: int) -> float:
    return 0.0 if failures <= 0 else min(BACKOFF_BASE_S * 2 ** (failures - 1), BACKOFF_MAX_S)


def _parse(cursor: str | None) -> dict[str, ConnectorHealth]:
    if not cursor:
        return {}
    return {name: ConnectorHealth(**value) for name, value in json.loads(cursor).items()}


def _dump(state: dict[str, ConnectorHealth]) -> str:
    return json.dumps({name: asdict(value) for name, value in sorted(state.items())})


def evaluate_connector_health(
    context: dg.SensorEvaluationContext,
    client: KafkaConnectClient,
    kafka: KafkaResource | None,
    files: Sequence[ConnectorFile],
    *,
    now: float | None = None,
) -> dg.SensorResult:
    """One tick: returns the new cursor and, if anything needs saying, a skip reason saying it."""
    now = time.time() if now is None else now
    state = _parse(context.cursor)
    notes: list[str] = []
    alerts: list[SystemAlert] = []
    for file in files:
        health = state.setdefault(file.name, ConnectorHealth())
        try:
            live = status(client, file.name)
        except ConnectError as exc:
            notes.append(f"{file.name}: status unavailable ({exc.status})")
            continue
        if not live.exists:
            notes.append(f"{file.name}: not deployed (materialize its asset)")
            continue
        if not live.failed:
            if health.failures:
                notes.append(f"{file.name}: healthy again after {health.failures} restart(s)")
            state[file.name] = ConnectorHealth()
            continue
        if now < health.next_attempt_at:
            notes.append(
                f"{file.name}: FAILED; next restart in {health.next_attempt_at - now:.0f} s"
            )
            continue
        error = live.first_trace_line() or "no trace"
        restart_failed(client, file.name)
        health.failures += 1
        health.next_attempt_at = now + backoff_s(health.failures)
        notes.append(f"{file.name}: FAILED ({error}); restart #{health.failures}")
        context.log.warning(f"{file.name}: restarted failed connector/tasks: {error}")
        if health.failures >= ALERT_AFTER and not health.alerted:
            health.alerted = True
            alerts.append(
                SystemAlert(
                    # One id per streak: a consumer can de-duplicate a re-sent alert.
                    alert_id=f"connector-{file.name}-{int(now)}",
                    source=f"{SENSOR_NAME}-sensor",
                    severity="critical",
                    message=f"Connector {file.name} failed {health.failures} times in a row "
                    f"despite restarts: {error}",
                    labels={"connector": file.name, "failures": str(health.failures)},
                    ts=datetime.fromtimestamp(now, UTC),
                )
            )
    if alerts and kafka is not None:
        kafka.produce(alerts)
    return dg.SensorResult(skip_reason="; ".join(notes) or None, cursor=_dump(state))


def build_connector_health_sensor(files: Sequence[ConnectorFile]) -> dg.SensorDefinition:
    """The health sensor over ``files`` (from ``build_connector_defs(...).files``)."""

    @dg.sensor(
        name=SENSOR_NAME,
        minimum_interval_seconds=SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Restarts failed Kafka Connect connectors and tasks with backoff; alerts to "
        f"system.alerts after {ALERT_AFTER} consecutive failures.",
    )
    def connector_health(
        context: dg.SensorEvaluationContext,
        kafka_connect: KafkaConnectResource,
        kafka: KafkaResource,
    ) -> dg.SensorResult:
        with kafka_connect.get_client() as client:
            return evaluate_connector_health(context, client, kafka, files)

    return connector_health
