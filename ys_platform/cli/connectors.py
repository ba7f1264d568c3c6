"""``ys-platform connectors apply|status|restart``: the Kafka Connect connectors (CDC)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from ys_platform.cli.core import CommandError, ExitCode, with_settings
from ys_platform.settings import Settings

if TYPE_CHECKING:
    from ys_platform.catalog.topics import TopicSpec


def register(commands: argparse._SubParsersAction) -> None:
    connectors = commands.add_parser("connectors", help="Kafka Connect connectors (CDC)")
    sub = connectors.add_subparsers(dest="connectors_command", required=True)
    apply_parser = sub.add_parser("apply", help="create/update connectors from connectors/*.json")
    apply_parser.add_argument("names", nargs="*", help="connector names (default: all)")
    apply_parser.set_defaults(func=with_settings(apply))
    sub.add_parser("status", help="state of each connector and task").set_defaults(
        func=with_settings(_status)
    )
    restart = sub.add_parser("restart", help="restart a connector's failed tasks")
    restart.add_argument("name")
    restart.set_defaults(func=with_settings(_restart))


def _topic_reconciler(settings: Settings) -> Callable[[list[TopicSpec]], None]:
    """The platform's topic reconcile, as the connector apply's hook for Debezium's own topics."""
    from ys_platform.streaming.topics import apply_plans, plan_topics

    admin = settings.kafka.admin()

    def reconcile(specs: list[TopicSpec]) -> None:
        apply_plans(admin, plan_topics(admin, specs))

    return reconcile


def apply(args: argparse.Namespace, settings: Settings) -> ExitCode:
    from ys_platform.clients.kafka_connect import ConnectError, KafkaConnectClient
    from ys_platform.connectors import apply as apply_connector
    from ys_platform.connectors import connector_files, for_cluster

    selected = [
        for_cluster(f, settings.kafka)
        for f in connector_files(settings.connectors_dir)
        if not args.names or f.name in args.names
    ]
    reconcile = _topic_reconciler(settings)
    failed = 0
    with KafkaConnectClient(settings.connect_url) as client:
        for file in selected:
            try:
                result = apply_connector(client, file, ensure_topics=reconcile)
            except ConnectError as exc:
                # One connector that cannot be applied must not keep the others from it.
                print(f"{file.name}: {exc}", file=sys.stderr)
                failed += 1
                continue
            print(result.message)
            failed += not result.ok
    return ExitCode.FAILED if failed else ExitCode.OK


def _status(args: argparse.Namespace, settings: Settings) -> ExitCode:
    from ys_platform.clients.kafka_connect import ConnectError, KafkaConnectClient
    from ys_platform.connectors import connector_files, status

    unhealthy = 0
    with KafkaConnectClient(settings.connect_url) as client:
        for file in connector_files(settings.connectors_dir):
            try:
                current = status(client, file.name)
            except ConnectError as exc:
                raise CommandError(f"{file.name}: {exc}") from exc
            print(f"{current.summary()} (desired {file.desired_state})")
            unhealthy += not current.is_(file.desired_state)
    return ExitCode.FAILED if unhealthy else ExitCode.OK


def _restart(args: argparse.Namespace, settings: Settings) -> ExitCode:
    from ys_platform.clients.kafka_connect import ConnectError, KafkaConnectClient
    from ys_platform.connectors import restart_failed

    with KafkaConnectClient(settings.connect_url) as client:
        try:
            result = restart_failed(client, args.name)
        except ConnectError as exc:
            raise CommandError(f"{args.name}: {exc}") from exc
    print(f"{args.name}: restart requested, now {result.summary()}")
    return ExitCode.OK
