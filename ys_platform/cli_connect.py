"""``ys-platform db ...`` and ``ys-platform connectors ...``: the source of record and its CDC."""

from __future__ import annotations

import argparse
import sys

from ys_platform.settings import Settings

EXIT_FAILED = 1


def ensure_topics(settings: Settings):
    """The platform's topic reconcile, as the connector apply's hook for Debezium's own topics."""
    from ys_platform.streaming.topics import apply_plans, plan_topics

    admin = settings.kafka.admin()

    def reconcile(specs) -> None:
        apply_plans(admin, plan_topics(admin, list(specs)))

    return reconcile


def db_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from ys_platform.clients.postgres import PostgresUnavailableError
    from ys_platform.postgres import MigrationError, migrate

    try:
        applied = migrate(settings.postgres_conninfo())
    except (PostgresUnavailableError, MigrationError) as exc:
        print(f"migrations failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print("\n".join(f"applied {name}" for name in applied) or "up to date")
    return 0


def connectors_apply(args: argparse.Namespace, settings: Settings) -> int:
    from ys_platform.clients.kafka_connect import ConnectError, KafkaConnectClient
    from ys_platform.connectors import ConnectorFileError, apply, connector_files

    try:
        files = connector_files(settings.connectors_dir)
    except ConnectorFileError as exc:
        print(exc, file=sys.stderr)
        return 2
    selected = [f for f in files if not args.names or f.name in args.names]
    failed = 0
    with KafkaConnectClient(settings.connect_url) as client:
        for file in selected:
            try:
                result = apply(client, file, ensure_topics=ensure_topics(settings))
            except ConnectError as exc:
                print(f"{file.name}: {exc}", file=sys.stderr)
                failed += 1
                continue
            print(result.message)
            failed += not result.ok
    return EXIT_FAILED if failed else 0


def connectors_status(args: argparse.Namespace, settings: Settings) -> int:
    from ys_platform.clients.kafka_connect import ConnectError, KafkaConnectClient
    from ys_platform.connectors import connector_files, status

    unhealthy = 0
    with KafkaConnectClient(settings.connect_url) as client:
        for file in connector_files(settings.connectors_dir):
            try:
                current = status(client, file.name)
            except ConnectError as exc:
                print(f"{file.name}: {exc}", file=sys.stderr)
                return EXIT_FAILED
            print(f"{current.summary()} (desired {file.desired_state})")
            unhealthy += not current.is_(file.desired_state)
    return EXIT_FAILED if unhealthy else 0


def connectors_restart(args: argparse.Namespace, settings: Settings) -> int:
    from ys_platform.clients.kafka_connect import ConnectError, KafkaConnectClient
    from ys_platform.connectors import restart_failed

    with KafkaConnectClient(settings.connect_url) as client:
        try:
            result = restart_failed(client, args.name)
        except ConnectError as exc:
            print(f"{args.name}: {exc}", file=sys.stderr)
            return EXIT_FAILED
    print(f"{args.name}: restart requested, now {result.summary()}")
    return 0


def register(commands: argparse._SubParsersAction, with_settings) -> None:
    db = commands.add_parser("db", help="the PostgreSQL source of record")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser("migrate", help="apply pending migrations").set_defaults(
        func=with_settings(db_migrate)
    )

    connectors = commands.add_parser("connectors", help="Kafka Connect connectors (CDC)")
    sub = connectors.add_subparsers(dest="connectors_command", required=True)
    apply_parser = sub.add_parser("apply", help="create/update connectors from connectors/*.json")
    apply_parser.add_argument("names", nargs="*", help="connector names (default: all)")
    apply_parser.set_defaults(func=with_settings(connectors_apply))
    sub.add_parser("status", help="state of each connector and task").set_defaults(
        func=with_settings(connectors_status)
    )
    restart = sub.add_parser("restart", help="restart a connector's failed tasks")
    restart.add_argument("name")
    restart.set_defaults(func=with_settings(connectors_restart))
