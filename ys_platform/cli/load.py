"""``ys-platform load``: the load test — simulated traffic to the processors' inputs at a target
rate for a duration, then the achieved rate, end-to-end latency and lag (one line, or JSON)."""

from __future__ import annotations

import argparse
import json
import threading

from ys_platform.cli.core import CommandError, ExitCode, with_settings
from ys_platform.settings import Settings

# The defaults, repeated from ys_platform.operations.load so that `--help` imports nothing more;
# tests/unit/test_load.py checks the two agree.
DEFAULT_RATE = 2_000.0
DEFAULT_DURATION_S = 30.0


def register(commands: argparse._SubParsersAction) -> None:
    load = commands.add_parser(
        "load",
        help="load-test the running processors: traffic at a rate, latency and lag",
        description="Produce the market simulator's traffic to the processors' input topics at "
        "--rate msg/s for --duration s (event time = wall time), then print the achieved rate, "
        "the end-to-end latency percentiles (input produced -> output visible to a "
        "read_committed consumer) and the processors' lag. Runs against a loopback cluster "
        "only, unless --allow-remote.",
    )
    load.add_argument(
        "--rate", type=float, default=DEFAULT_RATE, help="messages per second (at most 10,000)"
    )
    load.add_argument(
        "--duration", type=float, default=DEFAULT_DURATION_S, help="seconds (at most 3,600)"
    )
    load.add_argument(
        "--topics",
        default=None,
        help="comma-separated input topics (default: every processor input the simulator "
        "makes: market.prices, defi.transactions, users.portfolios, crosschain.events)",
    )
    load.add_argument("--namespace", default="", help="prefix of topics and groups (isolation)")
    load.add_argument("--seed", type=int, default=7, help="the simulator's seed")
    load.add_argument(
        "--drain",
        type=float,
        default=30.0,
        help="seconds the processors get to catch up after the last input (default 30)",
    )
    load.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a bootstrap server that is not on this machine's loopback",
    )
    load.add_argument("--json", action="store_true", help="print the report as a JSON document")
    load.set_defaults(func=with_settings(_load))


_FLAGS = {"rate": "--rate", "duration": "--duration", "topics": "--topics", "drain": "--drain"}


def _load(args: argparse.Namespace, settings: Settings) -> ExitCode:
    from ys_platform.clients.kafka import check_reachable
    from ys_platform.operations.load import (
        LOAD_TOPICS,
        LoadPlan,
        LoadPlanError,
        check_loopback,
        run_load,
    )
    from ys_platform.streaming.signals import stop_on_signals

    topics = LOAD_TOPICS
    if args.topics is not None:
        topics = tuple(t.strip() for t in args.topics.split(",") if t.strip())
    try:
        plan = LoadPlan(
            rate=args.rate,
            duration_s=args.duration,
            topics=topics,
            namespace=args.namespace,
            seed=args.seed,
            drain_s=args.drain,
        )
        if not args.allow_remote:
            check_loopback(settings.kafka.bootstrap_servers)
    except LoadPlanError as exc:
        flag = _FLAGS.get(exc.setting)
        if flag is None:  # the bootstrap servers
            raise CommandError(
                f"{exc}; pass --allow-remote to load it anyway", ExitCode.CONFIG
            ) from None
        raise CommandError(f"{flag}: {exc}", ExitCode.CONFIG) from None
    check_reachable(settings.kafka)
    # Ctrl-C or SIGTERM ends the traffic early; the report covers what was produced.
    stop = threading.Event()
    with stop_on_signals(stop, "load"):
        report = run_load(settings.kafka, plan, stop)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.summary())
    return ExitCode.INTERRUPTED if report.stopped else ExitCode.OK
