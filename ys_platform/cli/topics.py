"""``ys-platform topics apply``: reconcile the cluster's topics to the catalog."""

from __future__ import annotations

import argparse

from ys_platform.cli.core import CommandError, ExitCode, with_settings
from ys_platform.settings import Settings


def register(commands: argparse._SubParsersAction) -> None:
    topics = commands.add_parser("topics", help="reconcile Kafka topics to the catalog")
    sub = topics.add_subparsers(dest="topics_command", required=True)
    apply = sub.add_parser(
        "apply", help="create missing topics, fix configs, add partitions; never deletes"
    )
    apply.add_argument("topics", nargs="*", help="catalog topic names (default: all)")
    apply.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    apply.add_argument("--strict", action="store_true", help="exit 1 if drift remains")
    apply.set_defaults(func=with_settings(_apply))


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
