"""The local stack as a whole: start, stop and inspect Kafka, Connect and PostgreSQL together."""

from __future__ import annotations

from pathlib import Path

from ys_platform.local import connect as connect_service
from ys_platform.local import jmx_exporter, kafka
from ys_platform.local import postgres as pg
from ys_platform.local.config import SUPPORTED_BROKER_COUNTS, bootstrap_servers
from ys_platform.local.state import (
    Layout,
    ServiceStatus,
    check_secure,
    locked,
    read_cluster,
    read_secure,
)
from ys_platform.settings import Settings


def _layout(settings: Settings) -> Layout:
    return Layout(settings.home_dir)


def up(
    settings: Settings,
    brokers: int | None = None,
    postgres: bool = True,
    connect: bool = False,
    secure: bool = False,
) -> list[ServiceStatus]:
    """Start whatever is not running yet and return the status of every service started.

    secure=True runs the secure stack (`local up --secure`): SASL_SSL with SCRAM-SHA-512, the
    StandardAuthorizer, credentials in $YS_HOME/secrets/. A state folder keeps the mode of its
    first `up`; the other mode is refused (LocalStackError) before anything starts.
    brokers=None keeps the broker count the state folder was formatted with (1 on a fresh one).
    connect=True also starts the Kafka Connect worker (after Kafka, whose topics hold its state).
    It is opt-in here, unlike on the command line, so that test fixtures which only need Kafka
    do not pay its ~15 s start or claim its REST port (8083 unless YS_CONNECT_URL moves it).
    Raises LocalStackError with a readable message when a service cannot start.
    """
    if brokers is not None and brokers not in SUPPORTED_BROKER_COUNTS:
        raise ValueError(f"brokers must be one of {SUPPORTED_BROKER_COUNTS}, not {brokers}")
    layout = _layout(settings)
    with locked(layout):
        check_secure(layout, secure)
        result = kafka.up(settings, layout, brokers, secure=secure)
        if secure:
            # Here, not at the top: the catalog's principals import the local config, which
            # imports this package.
            from ys_platform.local.principals import ensure_catalog_principals

            cluster = read_cluster(layout)
            ensure_catalog_principals(
                settings,
                layout,
                bootstrap_servers(settings.local_kafka_port, cluster.brokers if cluster else 1),
            )
        if connect:
            result.append(connect_service.up(settings, layout))
        # What runs now, for Prometheus: a worker left running by an earlier `up` stays listed.
        cluster = read_cluster(layout)
        jmx_exporter.write_scrape_targets(
            layout.prometheus_targets,
            jmx_exporter.scrape_targets(
                settings.jmx_exporter_port,
                brokers=cluster.brokers if cluster else 1,
                connect=connect_service.running_pid(layout) is not None,
            ),
        )
        if postgres:
            result.append(pg.up(settings, layout))
    return result


def down(settings: Settings) -> None:
    """Stop every service this state folder started; data stays for the next `up`."""
    layout = _layout(settings)
    with locked(layout):
        # Connect first: a worker whose brokers are gone spends its shutdown in client timeouts.
        connect_service.down(layout)
        kafka.down(layout)
        pg.down(settings, layout)


def status(settings: Settings) -> list[ServiceStatus]:
    """Every service of the state folder, running or not, with its health and memory.

    Connect is listed once it has started in this state folder (or YS_CONNECT_URL names an
    external worker): a stack run without it is not missing anything.
    """
    layout = _layout(settings)
    result = kafka.status(settings, layout)
    if connect_service.was_started(settings, layout):
        result.append(connect_service.status(settings, layout))
    result.append(pg.status(settings, layout))
    return result


def log_path(settings: Settings, service: str) -> Path:
    """The log file of a service: kafka-1 .. kafka-3 (kafka means kafka-1), connect, postgres."""
    name = "kafka-1" if service == "kafka" else service
    valid = [f"kafka-{i}" for i in range(1, max(SUPPORTED_BROKER_COUNTS) + 1)]
    valid += [connect_service.NAME, pg.NAME]
    if name not in valid:
        raise ValueError(f"unknown service {service!r}; one of {', '.join(valid)}")
    return _layout(settings).log(name)


def is_secure(settings: Settings) -> bool:
    """Whether the state folder holds a secure stack (False for one never started)."""
    return bool(read_secure(_layout(settings)))


def kafka_bootstrap(settings: Settings) -> str:
    """bootstrap.servers of the local cluster, for the broker count it was formatted with."""
    cluster = read_cluster(_layout(settings))
    return bootstrap_servers(settings.local_kafka_port, cluster.brokers if cluster else 1)
