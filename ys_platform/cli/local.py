"""``ys-platform local up|down|status|logs``: the command-line face of the local stack."""

from __future__ import annotations

import argparse
import subprocess
import sys

from ys_platform.cli.core import CommandError, ExitCode, with_settings
from ys_platform.local import stack
from ys_platform.local.config import SUPPORTED_BROKER_COUNTS
from ys_platform.local.postgres_secrets import ENV_FILE as POSTGRES_ENV_FILE
from ys_platform.local.procs import tail_lines
from ys_platform.local.secrets import ADMIN_PRINCIPAL, credential_file, secrets_dir
from ys_platform.local.state import ServiceStatus
from ys_platform.settings import Settings

SERVICES = ["kafka", *(f"kafka-{i}" for i in range(1, max(SUPPORTED_BROKER_COUNTS) + 1))]
SERVICES += ["connect", "postgres"]

# Enough to see the last start or error without scrolling a terminal off the screen.
DEFAULT_LOG_LINES = 50


def register(commands: argparse._SubParsersAction) -> None:
    local = commands.add_parser(
        "local",
        help="start, stop and inspect the local stack (Kafka, Connect, PostgreSQL)",
        description="The local stack: Kafka in KRaft mode, a Kafka Connect worker with the "
        "Debezium PostgreSQL connector, and a private PostgreSQL cluster, run as processes on "
        "this machine with their state under YS_HOME (default .ys).",
    )
    sub = local.add_subparsers(dest="local_command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="start what is not running (idempotent)")
    up.add_argument(
        "--brokers",
        type=int,
        choices=SUPPORTED_BROKER_COUNTS,
        default=None,
        help="Kafka brokers, each also a KRaft controller (default: as formatted, else 1)",
    )
    up.add_argument(
        "--no-connect",
        action="store_true",
        help="do not start (or check) the Kafka Connect worker (YS_CONNECT_URL, default :8083)",
    )
    up.add_argument("--no-postgres", action="store_true", help="do not start (or check) PostgreSQL")
    up.add_argument(
        "--secure",
        action="store_true",
        help="SASL_SSL with SCRAM-SHA-512, TLS from a local CA and the StandardAuthorizer; "
        "credentials in YS_HOME/secrets/ (a state folder keeps the mode of its first up)",
    )
    up.set_defaults(func=with_settings(_up))

    sub.add_parser("down", help="stop the services; their data stays").set_defaults(
        func=with_settings(_down)
    )
    sub.add_parser(
        "status", help="services, endpoints, PIDs, memory, health (exit 3 if any is stopped)"
    ).set_defaults(func=with_settings(_status))

    logs = sub.add_parser("logs", help="show a service's log")
    logs.add_argument("service", choices=SERVICES, metavar="SERVICE", help=", ".join(SERVICES))
    logs.add_argument("-n", "--lines", type=int, default=DEFAULT_LOG_LINES, metavar="N")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.set_defaults(func=with_settings(_logs))


def _up(args: argparse.Namespace, settings: Settings) -> ExitCode:
    services = stack.up(
        settings,
        brokers=args.brokers,
        postgres=not args.no_postgres,
        connect=not args.no_connect,
        secure=args.secure,
    )
    _print_table(services)
    if args.secure:
        home = settings.home_dir
        sources = [credential_file(home, ADMIN_PRINCIPAL)]
        if not args.no_postgres and settings.uses_local_postgres:
            sources.append(secrets_dir(home) / POSTGRES_ENV_FILE)
        print(
            f"secure stack: credentials are in {secrets_dir(home)} (files 0600); to use it as "
            f"the administrator: set -a; {' '.join(f'. {p};' for p in sources)} set +a",
            file=sys.stderr,
        )
    bootstrap = stack.kafka_bootstrap(settings)
    if bootstrap != settings.kafka_bootstrap_servers:
        print(
            f"note: clients use YS_KAFKA_BOOTSTRAP_SERVERS={settings.kafka_bootstrap_servers}; "
            f"set it to {bootstrap} to reach this stack",
            file=sys.stderr,
        )
    return ExitCode.OK if all(s.healthy for s in services) else ExitCode.FAILED


def _down(args: argparse.Namespace, settings: Settings) -> ExitCode:
    stack.down(settings)
    return ExitCode.OK


def _status(args: argparse.Namespace, settings: Settings) -> ExitCode:
    services = stack.status(settings)
    _print_table(services)
    _print_worker_metrics(settings)
    if any(s.state == "stopped" for s in services):
        return ExitCode.NOT_RUNNING
    return ExitCode.OK if all(s.healthy for s in services) else ExitCode.FAILED


def _print_worker_metrics(settings: Settings) -> None:
    """The running workers' Prometheus endpoints, from their file_sd files (not part of the exit
    status: workers are not services of the stack)."""
    from ys_platform.streaming.exporter import registered_workers

    workers = registered_workers(settings.worker_metrics_dir)
    print()
    if not workers:
        print(f"worker metrics: none running (files in {settings.worker_metrics_dir})")
        return
    rows = [("WORKER", "KIND", "REPLICA", "METRICS", "STATE")]
    for w in workers:
        state = "serving" if w.answers() else f"not answering (stale {w.path.name}?)"
        rows.append(
            (
                w.labels.get("group", w.path.stem),
                w.labels.get("kind", "-"),
                w.labels.get("replica", "-"),
                f"http://{w.target}/metrics",
                state,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])


def _logs(args: argparse.Namespace, settings: Settings) -> ExitCode:
    path = stack.log_path(settings, args.service)
    if not path.exists():
        raise CommandError(f"{path} does not exist yet (has {args.service} ever started?)")
    if args.follow:
        # tail -F follows the file across log4j's rollovers; reimplementing that buys nothing.
        try:
            returncode = subprocess.run(["tail", "-n", str(args.lines), "-F", str(path)]).returncode
        except KeyboardInterrupt:
            return ExitCode.OK
        return ExitCode.OK if returncode == 0 else ExitCode.FAILED
    for line in tail_lines(path, args.lines):
        print(line)
    return ExitCode.OK


def _print_table(services: list[ServiceStatus]) -> None:
    rows = [("SERVICE", "STATE", "ENDPOINT", "PID", "MEMORY", "METRICS", "HEALTH")]
    for s in services:
        health = ("ok" if s.healthy else "FAILING") if s.state != "stopped" else "-"
        rows.append(
            (
                s.name,
                s.state,
                s.endpoint,
                str(s.pid) if s.pid else "-",
                f"{s.rss_bytes / 2**20:.0f} MiB" if s.rss_bytes else "-",
                s.metrics or "-",
                f"{health}: {s.detail}" if s.detail else health,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1]
        )
