"""``ys-platform dlq list|show|replay GROUP``: a consumer group's dead letters."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ys_platform.cli.core import CommandError, ExitCode, with_settings
from ys_platform.cli.groups import iso_datetime
from ys_platform.settings import Settings

if TYPE_CHECKING:
    from ys_platform.operations.dead_letters import DeadLetterTopic


def register(commands: argparse._SubParsersAction) -> None:
    dlq = commands.add_parser("dlq", help="dead letters of a consumer group: count, show, replay")
    sub = dlq.add_subparsers(dest="dlq_command", required=True)

    def group_command(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, help=help_text)
        parser.add_argument(
            "group", help="a catalog consumer group, e.g. price-aggregation-processor"
        )
        parser.add_argument("--namespace", default="", help="the worker's namespace, if any")
        return parser

    group_command("list", "dead letters per source topic and reason").set_defaults(
        func=with_settings(_list)
    )
    show = group_command("show", "the last dead letters with their reasons")
    show.add_argument("-n", type=int, default=10, metavar="N", help="how many (default 10)")
    show.set_defaults(func=with_settings(_show))
    replay = group_command("replay", "re-produce dead letters to their source, each at most once")
    replay.add_argument(
        "--since", type=iso_datetime, metavar="ISO", help="only those dead-lettered from then on"
    )
    replay.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    replay.set_defaults(func=with_settings(_replay))


def _dlq(args: argparse.Namespace, settings: Settings) -> DeadLetterTopic:
    from ys_platform.clients.kafka import check_reachable
    from ys_platform.operations.dead_letters import DeadLetterTopic

    try:
        dlq = DeadLetterTopic(args.group, args.namespace)
    except KeyError as exc:
        raise CommandError(str(exc.args[0]), ExitCode.CONFIG) from None
    check_reachable(settings.kafka)
    return dlq


def _list(args: argparse.Namespace, settings: Settings) -> ExitCode:
    from ys_platform.operations.dead_letters import summarize

    summary = summarize(settings.kafka, _dlq(args, settings))
    print(
        f"{summary.topic}: {summary.total} dead letters, {summary.replayed} replayed or passed "
        f"over, {summary.total - summary.replayed} not yet replayed"
    )
    for source, reason, count in summary.by_source_and_reason:
        print(f"{count:>8}  {source}  {reason}")
    return ExitCode.OK


def _show(args: argparse.Namespace, settings: Settings) -> ExitCode:
    from ys_platform.operations.records import json_line
    from ys_platform.operations.topics import tail

    dlq = _dlq(args, settings)
    for record in tail(settings.kafka, dlq.topic, count=args.n):
        print(json_line(record, args.namespace))
    return ExitCode.OK


def _replay(args: argparse.Namespace, settings: Settings) -> ExitCode:
    from ys_platform.operations.dead_letters import REPLAY, replay

    report = replay(settings.kafka, _dlq(args, settings), since=args.since, dry_run=args.dry_run)
    verb = "would replay" if args.dry_run else "replayed"
    for item in report.items:
        where = f"{report.topic}[{item.partition}]@{item.offset}"
        if item.action == REPLAY:
            assert item.source is not None
            target = f"{item.source[0]}[{item.source[1]}]"
            print(f"{verb} {where} -> {target} ({item.reason})")
        else:
            print(f"passed over {where}: {item.action}")
    passed = ", ".join(f"{n} {why}" for why, n in sorted(report.passed_over().items()))
    print(
        f"{report.replayed} {verb}, {sum(report.passed_over().values())} passed over"
        + (f" ({passed})" if passed else "")
        + (" (dry run, nothing changed)" if args.dry_run else "")
    )
    return ExitCode.OK
