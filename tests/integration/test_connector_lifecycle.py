"""The connector lifecycle for real: create, update, pause/resume from the file, and a task that
fails for real (its role loses REPLICATION and its walsender is terminated) restarted by the
health sensor once the privilege is back.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import dagster as dg
import psycopg
import pytest
from cdc_helpers import connect_stack, delete_connector, fresh_database, superuser_conninfo

from ys_platform.clients.kafka_connect import KafkaConnectClient
from ys_platform.connectors import (
    CONNECTORS_DIR,
    ConnectorFile,
    apply,
    load_connector_file,
    namespaced,
    status,
)
from ys_platform.resources.kafka import KafkaResource
from ys_platform.resources.kafka_connect import KafkaConnectResource
from ys_platform.sensors.connectors import build_connector_health_sensor
from ys_platform.settings import Settings
from ys_platform.streaming.topics import apply_plans, plan_topics

pytestmark = pytest.mark.timeout(300)

# Debezium retries a lost replication connection itself before failing the task; one quick
# retry keeps the test short (the file's own setting is 5).
FAST_FAILURE = {
    "errors.max.retries": "1",
    "errors.retry.delay.initial.ms": "300",
    "errors.retry.delay.max.ms": "1000",
}
FAIL_TIMEOUT_S = 90.0


@pytest.fixture(scope="module")
def stack() -> Iterator[Settings]:
    with connect_stack() as settings:
        yield settings


@pytest.fixture
def connector(stack: Settings) -> Iterator[tuple[ConnectorFile, str, str]]:
    """A connector file on a fresh database with its own role; deleted, slot dropped after."""
    suffix = uuid.uuid4().hex[:10]
    role = f"cdc_{suffix}"
    with psycopg.connect(superuser_conninfo(stack), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN REPLICATION")
    try:
        with fresh_database(stack) as dbname:
            with psycopg.connect(superuser_conninfo(stack, dbname), autocommit=True) as conn:
                # What the connector needs and no more: read the captured tables (snapshot).
                conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
            file = namespaced(
                load_connector_file(CONNECTORS_DIR / "postgres-source.json"),
                f"t{suffix}.",
                name=f"pg-life-{suffix}",
            ).with_config(
                **{
                    "database.hostname": "127.0.0.1",
                    "database.port": str(stack.postgres_port),
                    "database.dbname": dbname,
                    "database.user": role,
                    "slot.name": f"t_{suffix}",
                    "topic.prefix": f"t{suffix}",
                    **FAST_FAILURE,
                }
            )
            with KafkaConnectClient(stack.connect_url) as client:
                try:
                    yield file, dbname, role
                finally:
                    delete_connector(client, file.name)
    finally:
        with psycopg.connect(superuser_conninfo(stack), autocommit=True) as conn:
            conn.execute(f"DROP ROLE IF EXISTS {role}")


def _ensure(stack: Settings):
    admin = KafkaResource.of(stack.kafka).admin()
    return lambda specs: apply_plans(admin, plan_topics(admin, specs))


def test_create_update_pause_resume_follow_the_file(
    stack: Settings, connector: tuple[ConnectorFile, str, str]
) -> None:
    file, _, _ = connector
    with KafkaConnectClient(stack.connect_url) as client:
        created = apply(client, file, ensure_topics=_ensure(stack))
        assert (created.action, created.ok) == ("created", True), created.message
        assert status(client, file.name).is_("RUNNING")

        again = apply(client, file)
        assert (again.action, again.ok, again.changed_keys) == ("unchanged", True, ())

        slower = file.with_config(**{"heartbeat.interval.ms": "20000"})
        updated = apply(client, slower)
        assert (updated.action, updated.changed_keys, updated.ok) == (
            "updated",
            ("heartbeat.interval.ms",),
            True,
        )
        assert client.get_config(file.name)["heartbeat.interval.ms"] == "20000"
        # The platform's own fields never reach Connect; secrets stay references.
        stored = client.get_config(file.name)
        assert "desired_state" not in stored and "notes" not in stored
        assert stored["database.password"] == "${env:YS_CONNECT_PG_PASSWORD}"

        paused = apply(client, ConnectorFile(slower.name, slower.config, "PAUSED"))
        assert (paused.action, paused.ok) == ("unchanged", True), paused.message
        assert status(client, file.name).is_("PAUSED")

        resumed = apply(client, slower)
        assert resumed.ok, resumed.message
        assert status(client, file.name).is_("RUNNING")


def test_failed_task_is_restarted_by_the_health_sensor(
    stack: Settings, connector: tuple[ConnectorFile, str, str]
) -> None:
    file, dbname, role = connector
    sensor = build_connector_health_sensor([file])
    resources = {
        "kafka_connect": KafkaConnectResource(url=stack.connect_url),
        "kafka": KafkaResource.of(stack.kafka),
    }
    with KafkaConnectClient(stack.connect_url) as client:
        assert apply(client, file, ensure_topics=_ensure(stack)).ok

        # Break it for real: no REPLICATION any more, and the live walsender is killed, so
        # Debezium's reconnect is refused and, its retries spent, the task fails.
        with psycopg.connect(superuser_conninfo(stack), autocommit=True) as conn:
            conn.execute(f"ALTER ROLE {role} NOREPLICATION")
            # RUNNING comes before the snapshot ends; the walsender exists once streaming starts.
            deadline = time.monotonic() + FAIL_TIMEOUT_S
            terminated = False
            while not terminated and time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT bool_or(pg_terminate_backend(active_pid)) FROM pg_replication_slots"
                    " WHERE database = %s AND active_pid IS NOT NULL",
                    (dbname,),
                ).fetchone()
                terminated = bool(row and row[0])
                time.sleep(0.2)
            assert terminated, "the connector's walsender never became active"
        deadline = time.monotonic() + FAIL_TIMEOUT_S
        live = status(client, file.name)
        while not live.failed and time.monotonic() < deadline:
            time.sleep(1)
            live = status(client, file.name)
        assert live.failed, live.summary()

        # Healthy sensors do nothing to healthy connectors; this one restarts the failed task.
        with psycopg.connect(superuser_conninfo(stack), autocommit=True) as conn:
            conn.execute(f"ALTER ROLE {role} REPLICATION")
        context = dg.build_sensor_context(cursor=None, resources=resources)
        result = sensor(context)
        assert isinstance(result, dg.SensorResult)
        assert "restart #1" in (result.skip_reason.skip_message if result.skip_reason else "")

        # The restart is asynchronous: the status can still show the old FAILED task for a
        # moment, so wait for RUNNING itself rather than stopping at the first FAILED.
        deadline = time.monotonic() + 60
        back = status(client, file.name)
        while not back.is_("RUNNING") and time.monotonic() < deadline:
            time.sleep(0.5)
            back = status(client, file.name)
        assert back.is_("RUNNING"), back.summary()

        # The next tick sees it healthy and resets the streak.
        context = dg.build_sensor_context(cursor=result.cursor, resources=resources)
        result = sensor(context)
        assert "healthy again" in (result.skip_reason.skip_message if result.skip_reason else "")
