"""Shared by the CDC and connector lifecycle tests: Connect up, a fresh database, cleanup."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from confluent_kafka import TopicPartition
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ys_platform.clients.kafka import KafkaConnection
from ys_platform.clients.kafka_connect import ConnectError, KafkaConnectClient
from ys_platform.connectors import (
    CONNECTORS_DIR,
    ConnectorFile,
    load_connector_file,
    namespaced,
)
from ys_platform.local import postgres as local_postgres
from ys_platform.local import up
from ys_platform.local.postgres_secrets import PostgresSecrets
from ys_platform.local.state import Layout
from ys_platform.postgres import migrate
from ys_platform.settings import Settings, load_settings

# The worker resolves these from its environment (EnvVarConfigProvider, YS_CONNECT_* only).
# They are set before `up` starts the worker; a worker already running keeps the environment it
# was started with, so the tests also override host/port/dbname/user in the config with
# literals. The local cluster trusts loopback: the password reference is never checked.
PG_ENV = ("YS_CONNECT_PG_HOST", "YS_CONNECT_PG_PORT", "YS_CONNECT_PG_DBNAME", "YS_CONNECT_PG_USER")
# An active slot stays active for a moment after its connector is deleted (the walsender exits
# when the task's connection closes); 30 s bounds that wait.
SLOT_RELEASE_TIMEOUT_S = 30.0


def start_connect(settings: Settings) -> None:
    """Start whatever of the local stack (Connect included) is not running, with the variables
    the stack's own connector file reads; every service must come up healthy."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("YS_CONNECT_PG_HOST", "127.0.0.1")
        env.setenv("YS_CONNECT_PG_PORT", str(settings.postgres_port))
        env.setenv("YS_CONNECT_PG_DBNAME", "yieldsensei")
        env.setenv("YS_CONNECT_PG_USER", "yieldsensei")
        env.setenv("YS_CONNECT_PG_PASSWORD", "unused-loopback-trust")
        services = up(settings, connect=True)
    unhealthy = [s.name for s in services if not s.healthy]
    assert not unhealthy, f"unhealthy: {unhealthy}"


@contextmanager
def connect_stack() -> Iterator[Settings]:
    settings = load_settings()
    if not settings.uses_local_postgres:
        pytest.skip("needs the local stack's PostgreSQL (superuser on loopback)")
    start_connect(settings)
    yield settings


def _secrets(settings: Settings) -> PostgresSecrets | None:
    """The secure stack's PostgreSQL passwords (None on the plaintext one, which trusts
    loopback)."""
    return local_postgres.postgres_secrets(settings, Layout(settings.home_dir))


def _conninfo(settings: Settings, **fields: str) -> str:
    params = {**conninfo_to_dict(settings.postgres_conninfo()), **fields}
    secrets = _secrets(settings)
    if secrets is not None:
        # libpq reads the role's password from the stack's password file: none in the string.
        params["passfile"] = str(secrets.passfile)
    return make_conninfo(**params)


def superuser_conninfo(settings: Settings, dbname: str = "yieldsensei") -> str:
    return _conninfo(settings, user="postgres", dbname=dbname)


def app_conninfo(settings: Settings, dbname: str) -> str:
    return _conninfo(settings, dbname=dbname)


def capture_role(settings: Settings) -> str:
    """The role Debezium logs in as: the app role on the plaintext stack, its own (REPLICATION,
    SELECT on the captured tables) on the secure one."""
    return local_postgres.APP_ROLE if _secrets(settings) is None else local_postgres.DEBEZIUM_ROLE


@contextmanager
def fresh_database(settings: Settings, *, migrated: bool = True) -> Iterator[str]:
    """A new database owned by the app role (migrated; on the secure stack with Debezium's
    grants, as `up` makes them), dropped with its slots afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(superuser_conninfo(settings), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} OWNER yieldsensei")
    try:
        if migrated:
            migrate(app_conninfo(settings, name))
            secrets = _secrets(settings)
            if secrets is not None:
                local_postgres.grant_capture(settings, secrets, name)
        yield name
    finally:
        drop_slots_of(settings, name)
        with psycopg.connect(superuser_conninfo(settings), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def drop_slots_of(settings: Settings, dbname: str) -> None:
    """Drop the database's replication slots (slots pin WAL), waiting for them to go idle."""
    deadline = time.monotonic() + SLOT_RELEASE_TIMEOUT_S
    with psycopg.connect(superuser_conninfo(settings), autocommit=True) as conn:
        while True:
            rows = conn.execute(
                "SELECT slot_name, active_pid FROM pg_replication_slots WHERE database = %s",
                (dbname,),
            ).fetchall()
            if not rows:
                return
            for slot, pid in rows:
                if pid is not None:
                    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
                else:
                    conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            if time.monotonic() > deadline:
                raise AssertionError(f"slots of {dbname} still active: {rows}")
            time.sleep(0.2)


def delete_connector(client: KafkaConnectClient, name: str) -> None:
    try:
        client.delete(name)
    except ConnectError as exc:
        if exc.status != 404:
            raise


def read_records(
    connection: KafkaConnection, topic: str, count: int, *, timeout_s: float = 60.0
) -> list:
    """At least ``count`` records of ``topic`` from its start, in offset order per partition."""
    consumer = connection.consumer(f"test-cdc-{uuid.uuid4().hex[:8]}")
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        records: list = []
        deadline = time.monotonic() + timeout_s
        while len(records) < count and time.monotonic() < deadline:
            records += [r for r in consumer.consume(100, timeout=0.5) if r.error() is None]
        assert len(records) >= count, f"{topic}: {len(records)} of {count} records in {timeout_s}s"
        # Give a surplus record (a duplicate, an unexpected event) a moment to show up too.
        records += [r for r in consumer.consume(100, timeout=1.0) if r.error() is None]
        return sorted(records, key=lambda r: (r.partition(), r.offset()))
    finally:
        consumer.close()


def namespaced_source(stack: Settings, dbname: str, suffix: str) -> ConnectorFile:
    """The repository's postgres-source connector on database ``dbname``, its topics under
    ``t<suffix>.``, with its own name, slot and topic prefix: isolated from the stack's own."""
    base = load_connector_file(CONNECTORS_DIR / "postgres-source.json")
    return namespaced(base, f"t{suffix}.", name=f"pg-cdc-{suffix}").with_config(
        **{
            "database.hostname": "127.0.0.1",
            "database.port": str(stack.postgres_port),
            "database.dbname": dbname,
            "database.user": capture_role(stack),
            "slot.name": f"t_{suffix}",
            "topic.prefix": f"t{suffix}",
        }
    )


def apply_connector(client: KafkaConnectClient, file: ConnectorFile, connection: KafkaConnection):
    """Apply ``file`` the way ``ys-platform connectors apply`` does: as the connector's own
    principal where ``connection`` has per-principal credentials, Debezium's own topics
    reconciled to the catalog first."""
    from ys_platform.connectors import apply, for_cluster
    from ys_platform.streaming.topics import apply_plans, plan_topics

    admin = connection.admin()
    return apply(
        client,
        for_cluster(file, connection),
        ensure_topics=lambda specs: apply_plans(admin, plan_topics(admin, specs)),
    )


STACK_CONNECTOR = "postgres-source"


def running_cdc_connector(exits):
    """``(settings, file)`` of a streaming CDC connector: the stack's own ``postgres-source``
    when it is RUNNING (as under ``make dev``), else the repository's connector file applied in
    a namespace and database of its own, removed when ``exits`` closes."""
    import uuid

    from ys_platform.clients.kafka_connect import KafkaConnectClient
    from ys_platform.connectors import connector_files, status

    stack = exits.enter_context(connect_stack())
    client = exits.enter_context(KafkaConnectClient(stack.connect_url))
    if status(client, STACK_CONNECTOR).is_("RUNNING"):
        (file,) = [f for f in connector_files(stack.connectors_dir) if f.name == STACK_CONNECTOR]
        return stack, file
    suffix = uuid.uuid4().hex[:10]
    file = namespaced_source(stack, exits.enter_context(fresh_database(stack)), suffix)
    exits.callback(delete_connector, client, file.name)
    result = apply_connector(client, file, stack.kafka)
    assert result.ok, result.message
    return stack, file
