"""`ys-platform local up|down|status|logs`: the command-line face of the local stack."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable

from ys_platform.local import stack
from ys_platform.local.config import SUPPORTED_BROKER_COUNTS
from ys_platform.local.procs import tail_lines
from ys_platform.local.state import LocalStackError, ServiceStatus
from ys_platform.settings import Settings, SettingsError, load_settings

# Exit codes: 2 is argparse's for a usage error, so a bad configuration shares it; 3 is the LSB
# code for "not running", which lets scripts tell a stopped stack from a broken one (1).
EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_NOT_RUNNING = 0, 1, 2, 3

SERVICES = ["kafka", *(f"kafka-{i}" for i in range(1, max(SUPPORTED_BROKER_COUNTS) + 1))]
SERVICES += ["connect", "postgres"]

# Enough to see the last start or error without scrolling a terminal off the screen.
DEFAULT_LOG_LINES = 50


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `local` command to the parent CLI's subparsers; handlers return an exit code."""
    local = subparsers.add_parser(
        "local",
        help="start, stop and inspect the local stack (Kafka, Connect, PostgreSQL)",
        description="The local stack: Kafka in KRaft mode, a Kafka Connect worker with the "
        "Debezium PostgreSQL connector, and a private PostgreSQL cluster, run as processes on "
        "this machine with their state under YS_HOME (default .ys).",
    )
    commands = local.add_subparsers(dest="local_command", required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="start what is not running (idempotent)")
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
    up.set_defaults(func=_handler(_up))

    down = commands.add_parser("down", help="stop the services; their data stays")
    down.set_defaults(func=_handler(_down))

    status = commands.add_parser(
        "status", help="services, endpoints, PIDs, memory, health (exit 3 if any is stopped)"
    )
    status.set_defaults(func=_handler(_status))

    logs = commands.add_parser("logs", help="show a service's log")
    logs.add_argument("service", choices=SERVICES, metavar="SERVICE", help=", ".join(SERVICES))
    logs.add_argument("-n", "--lines", type=int, default=DEFAULT_LOG_LINES, metavar="N")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.set_defaults(func=_handler(_logs))


def _handler(run: Callable[[Settings, argparse.Namespace], int]) -> Callable[..., int]:
    def handle(args: argparse.Namespace) -> int:
        try:
            settings = load_settings()
        except SettingsError as exc:
            print(exc, file=sys.stderr)
            return EXIT_CONFIG
        try:
            return run(settings, args)
        except LocalStackError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILED

    return handle


def _up(settings: Settings, args: argparse.Namespace) -> int:
    services = stack.up(
        settings,
        brokers=args.brokers,
        postgres=not args.no_postgres,
        connect=not args.no_connect,
    )
    _print_table(services)
    bootstrap = stack.kafka_bootstrap(settings)
    if bootstrap != settings.kafka_bootstrap_servers:
        print(
            f"note: clients use YS_KAFKA_BOOTSTRAP_SERVERS={settings.kafka_bootstrap_servers}; "
            f"set it to {bootstrap} to reach this stack",
            file=sys.stderr,
        )
    return EXIT_OK if all(s.healthy for s in services) else EXIT_FAILED


def _down(settings: Settings, args: argparse.Namespace) -> int:
    stack.down(settings)
    return EXIT_OK


def _status(settings: Settings, args: argparse.Namespace) -> int:
    services = stack.status(settings)
    _print_table(services)
    if any(s.state == "stopped" for s in services):
        return EXIT_NOT_RUNNING
    return EXIT_OK if all(s.healthy for s in services) else EXIT_FAILED


def _logs(settings: Settings, args: argparse.Namespace) -> int:
    path = stack.log_path(settings, args.service)
    if not path.exists():
        print(
            f"error: {path} does not exist yet (has {args.service} ever started?)", file=sys.stderr
        )
        return EXIT_FAILED
    if args.follow:
        # tail -F follows the file across log4j's rollovers; reimplementing that buys nothing.
        try:
            return subprocess.run(["tail", "-n", str(args.lines), "-F", str(path)]).returncode
        except KeyboardInterrupt:
            return EXIT_OK
    for line in tail_lines(path, args.lines):
        print(line)
    return EXIT_OK


def _print_table(services: list[ServiceStatus]) -> None:
    rows = [("SERVICE", "STATE", "ENDPOINT", "PID", "MEMORY", "HEALTH")]
    for s in services:
        health = ("ok" if s.healthy else "FAILING") if s.state != "stopped" else "-"
        rows.append(
            (
                s.name,
                s.state,
                s.endpoint,
                str(s.pid) if s.pid else "-",
                f"{s.rss_bytes / 2**20:.0f} MiB" if s.rss_bytes else "-",
                f"{health}: {s.detail}" if s.detail else health,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1]
        )
