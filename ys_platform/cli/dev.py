"""``ys-platform dev`` (``make dev``): local stack, topics and CDC, then Dagster's dev server."""

from __future__ import annotations

import argparse
from pathlib import Path

from ys_platform.cli.core import ExitCode, with_settings
from ys_platform.settings import Settings

DEFAULT_PORT = 3000


def register(commands: argparse._SubParsersAction) -> None:
    from ys_platform.devserver import SIMULATOR_RATE

    dev = commands.add_parser("dev", help="local stack, topics, then Dagster's dev server")
    dev.add_argument(
        "--brokers",
        type=int,
        choices=(1, 3),
        default=None,
        help="default: as the state folder was formatted",
    )
    dev.add_argument("--port", type=int, default=DEFAULT_PORT, help="Dagster UI port on 127.0.0.1")
    dev.add_argument(
        "--simulate",
        type=float,
        default=SIMULATOR_RATE,
        help="simulator messages/s (0: no simulator)",
    )
    dev.add_argument(
        "--dagster-home",
        type=Path,
        default=None,
        help="Dagster's instance folder (runs, event log, schedules); default: YS_HOME/dagster",
    )
    dev.add_argument(
        "--secure",
        action="store_true",
        help="the secure stack (`local up --secure`): SASL_SSL, SCRAM, ACLs, passwords",
    )
    dev.set_defaults(func=with_settings(_dev))


def _dev(args: argparse.Namespace, settings: Settings) -> ExitCode:
    from ys_platform.devserver import run_dev

    return run_dev(
        settings,
        brokers=args.brokers,
        port=args.port,
        simulate_rate=args.simulate,
        dagster_home=args.dagster_home,
        secure=args.secure,
    )
