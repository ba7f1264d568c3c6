"""``ys-platform simulate``: stream a deterministic simulated market into the cluster."""

from __future__ import annotations

import argparse

from ys_platform.cli.core import ExitCode, with_settings
from ys_platform.settings import Settings


def register(commands: argparse._SubParsersAction) -> None:
    simulate = commands.add_parser("simulate", help="stream a deterministic simulated market")
    simulate.add_argument("--rate", type=float, default=200.0, help="messages per second")
    simulate.add_argument("--duration", type=float, default=60.0, help="seconds of event time")
    simulate.add_argument("--seed", type=int, default=7)
    simulate.set_defaults(func=with_settings(_simulate))


def _simulate(args: argparse.Namespace, settings: Settings) -> ExitCode:
    from ys_platform.sources.publish import run_simulation

    counts = run_simulation(settings, rate=args.rate, duration_s=args.duration, seed=args.seed)
    for topic_name, count in sorted(counts.items()):
        print(f"{topic_name}: {count}")
    return ExitCode.OK
