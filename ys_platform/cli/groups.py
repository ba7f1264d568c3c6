"""``ys-platform groups list|describe|reset-offsets``: consumer groups, their lag and offsets."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from ys_platform.cli.core import ExitCode, print_table, with_settings
from ys_platform.settings import Settings


def iso_datetime(text: str) -> datetime:
    """An ISO 8601 time for the command line; without a zone it is UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time (e.g. 2026-01-05T12:00:00Z)"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def register(commands: argparse._SubParsersAction) -> None:
    groups = commands.add_parser("groups", help="consumer groups: state, members, lag, offsets")
    sub = groups.add_subparsers(dest="groups_command", required=True)
    sub.add_parser("list", help="every group: state, members, protocol, total lag").set_defaults(
        func=with_settings(_list)
    )
    describe = sub.add_parser("describe", help="a group's offsets, lag and members per partition")
    describe.add_argument("group")
    describe.set_defaults(func=with_settings(_describe))
    reset = sub.add_parser(
        "reset-offsets", help="move a stopped group's offsets on a topic (refused while active)"
    )
    reset.add_argument("group")
    reset.add_argument("--topic", required=True, help="every partition of this topic")
    target = reset.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-earliest", action="store_true")
    target.add_argument("--to-latest", action="store_true")
    target.add_argument(
        "--to-datetime", type=iso_datetime, metavar="ISO", help="first record at or after it"
    )
    reset.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    reset.set_defaults(func=with_settings(_reset))


def _offset(value: int | None) -> str:
    return "-" if value is None else str(value)


def _list(args: argparse.Namespace, settings: Settings) -> ExitCode:
    from ys_platform.clients.kafka import check_reachable
    from ys_platform.operations.groups import describe_groups, group_ids

    check_reachable(settings.kafka)
    views = describe_groups(settings.kafka, group_ids(settings.kafka.admin()))
    rows = [("GROUP", "STATE", "MEMBERS", "PROTOCOL", "LAG")] + [
        (v.group_id, v.state, str(len(v.members)), v.protocol, _offset(v.total_lag)) for v in views
    ]
    print_table(rows)
    return ExitCode.OK


def _describe(args: argparse.Namespace, settings: Settings) -> ExitCode:
    from ys_platform.clients.kafka import check_reachable
    from ys_platform.operations.groups import describe_groups

    check_reachable(settings.kafka)
    (view,) = describe_groups(settings.kafka, [args.group])
    print(
        f"group {view.group_id}: {view.state}, {len(view.members)} member(s), protocol "
        f"{view.protocol}, coordinator {view.coordinator}, total lag {_offset(view.total_lag)}"
    )
    rows = [("TOPIC", "PARTITION", "COMMITTED", "HIGH-WATERMARK", "LAG", "MEMBER")] + [
        (
            p.topic,
            str(p.partition),
            _offset(p.committed),
            _offset(p.high_watermark),
            _offset(p.lag),
            p.member.member_id if p.member else "-",
        )
        for p in view.partitions
    ]
    print_table(rows)
    for m in view.members:
        assigned = ", ".join(f"{t}[{p}]" for t, p in m.assignment) or "nothing"
        instance = f" instance={m.instance_id}" if m.instance_id else ""
        print(f"member {m.member_id}: client={m.client_id} host={m.host}{instance}")
        print(f"    assigned {assigned}")
    return ExitCode.OK


def _reset(args: argparse.Namespace, settings: Settings) -> ExitCode:
    from ys_platform.clients.kafka import check_reachable
    from ys_platform.operations.groups import ResetTarget, apply_reset, plan_reset

    if args.to_datetime is not None:
        target = ResetTarget("datetime", args.to_datetime)
    else:
        target = ResetTarget("earliest" if args.to_earliest else "latest")
    check_reachable(settings.kafka)
    admin = settings.kafka.admin()
    moves = plan_reset(admin, args.group, args.topic, target)
    if not args.dry_run:
        apply_reset(admin, args.group, moves)
    verb = "would move" if args.dry_run else "moved"
    for m in moves:
        print(f"{args.group} {m.topic}[{m.partition}]: {verb} {_offset(m.old)} -> {m.new}")
    done = "planned (dry run, nothing changed)" if args.dry_run else "reset"
    print(f"{len(moves)} partitions {done}")
    return ExitCode.OK
