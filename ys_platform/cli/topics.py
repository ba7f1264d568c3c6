"""``ys-platform topics apply|describe|tail``: reconcile the cluster's topics to the catalog, look
at one topic and at its records."""

from __future__ import annotations

import argparse

from ys_platform.cli.core import CommandError, ExitCode, print_table, with_settings
from ys_platform.settings import Settings


def register(commands: argparse._SubParsersAction) -> None:
    topics = commands.add_parser("topics", help="Kafka topics: reconcile, describe, tail")
    sub = topics.add_subparsers(dest="topics_command", required=True)
    apply = sub.add_parser(
        "apply", help="create missing topics, fix configs, add partitions; never deletes"
    )
    apply.add_argument("topics", nargs="*", help="catalog topic names (default: all)")
    apply.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    apply.add_argument("--strict", action="store_true", help="exit 1 if drift remains")
    apply.set_defaults(func=with_settings(_apply))
    describe = sub.add_parser(
        "describe", help="partitions, leaders, replicas, ISR, non-default configs, offsets"
    )
    describe.add_argument("topic")
    describe.set_defaults(func=with_settings(_describe))
    tail = sub.add_parser("tail", help="the last records, decoded (read committed), as JSON lines")
    tail.add_argument("topic")
    tail.add_argument(
        "--from-beginning", action="store_true", help="the first records instead (all without -n)"
    )
    tail.add_argument("-n", type=int, default=None, metavar="N", help="how many (default 10)")
    tail.add_argument("--key", help="only records with this key")
    tail.add_argument(
        "--namespace", default="", help="prefix to strip to find the catalog topic (its codec)"
    )
    tail.set_defaults(func=with_settings(_tail))


def _apply(args: argparse.Namespace, settings: Settings) -> ExitCode:
    from ys_platform.catalog.topics import ALL_TOPICS, topic
    from ys_platform.clients.kafka import check_reachable
    from ys_platform.streaming.topics import TopicAdminError, apply_plans, plan_topics

    try:
        specs = [topic(name) for name in args.topics] if args.topics else list(ALL_TOPICS)
    except KeyError as exc:
        raise CommandError(str(exc.args[0]), ExitCode.CONFIG) from None
    check_reachable(settings.kafka)  # one sentence, not librdkafka's retries, if nothing answers
    admin = settings.kafka.admin()
    try:
        plans = plan_topics(admin, specs)
        if not args.dry_run:
            apply_plans(admin, plans)
    except TopicAdminError as exc:
        raise CommandError(
            f"topic reconcile failed against {settings.kafka_bootstrap_servers}: {exc}"
        ) from exc
    verb = "would" if args.dry_run else "did"
    for plan in plans:
        lines = [f"{verb} {c}" for c in plan.changes] + [f"drift: {d}" for d in plan.drift]
        lines += [f"warning: {w}" for w in plan.warnings]
        print(f"{plan.spec.name}: {'in sync' if not lines else ''}".rstrip())
        for line in lines:
            print(f"    {line}")
    changed = sum(1 for p in plans if p.changes)
    drifted = sum(1 for p in plans if p.drift)
    changed_word = "to change" if args.dry_run else "changed"
    print(f"{len(plans)} topics, {changed} {changed_word}, {drifted} with drift")
    return ExitCode.FAILED if drifted and args.strict else ExitCode.OK


def _describe(args: argparse.Namespace, settings: Settings) -> ExitCode:
    from ys_platform.clients.kafka import check_reachable
    from ys_platform.operations.topics import describe_topic

    check_reachable(settings.kafka)
    view = describe_topic(settings.kafka.admin(), args.topic)
    under = sum(p.under_replicated for p in view.partitions)
    print(
        f"topic {view.name}: {len(view.partitions)} partitions, replication factor "
        f"{view.replication_factor}, {under} under-replicated, id {view.topic_id}"
    )
    rows = [("PARTITION", "LEADER", "REPLICAS", "ISR", "EARLIEST", "LATEST")] + [
        (
            str(p.partition),
            "-" if p.leader is None else str(p.leader),
            ",".join(map(str, p.replicas)),
            ",".join(map(str, p.isr)),
            str(p.earliest),
            str(p.latest),
        )
        for p in view.partitions
    ]
    print_table(rows)
    print("configs that differ from the defaults:" if view.configs else "all configs default")
    for c in view.configs:
        print(f"    {c.name}={'(sensitive)' if c.value is None else c.value}  ({c.source})")
    return ExitCode.OK


def _tail(args: argparse.Namespace, settings: Settings) -> ExitCode:
    from ys_platform.clients.kafka import check_reachable
    from ys_platform.operations.records import json_line
    from ys_platform.operations.topics import DEFAULT_TAIL, tail

    if args.n is not None and args.n < 0:
        raise CommandError("-n must be 0 or more", ExitCode.CONFIG)
    check_reachable(settings.kafka)
    count = args.n if args.n is not None or args.from_beginning else DEFAULT_TAIL
    records = tail(
        settings.kafka, args.topic, count=count, from_beginning=args.from_beginning, key=args.key
    )
    for record in records:
        print(json_line(record, args.namespace))
    return ExitCode.OK
