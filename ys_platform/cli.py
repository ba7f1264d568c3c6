"""The ``ys-platform`` command: local stack, topic reconcile, schemas and the dev server."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ys_platform.settings import Settings, SettingsError, load_settings

EXIT_CONFIG = 2
EXIT_FAILED = 1


def _with_settings(run: Callable[[argparse.Namespace, Settings], int]) -> Callable[..., int]:
    def handler(args: argparse.Namespace) -> int:
        try:
            settings = load_settings()
        except SettingsError as exc:
            print(exc, file=sys.stderr)
            return EXIT_CONFIG
        return run(args, settings)

    return handler


def _topics_apply(args: argparse.Namespace, settings: Settings) -> int:
    from ys_platform.catalog.topics import ALL_TOPICS, topic
    from ys_platform.clients.kafka import KafkaUnreachableError, check_reachable
    from ys_platform.streaming.topics import TopicAdminError, apply_plans, plan_topics

    specs = [topic(name) for name in args.topics] if args.topics else list(ALL_TOPICS)
    admin = settings.kafka.admin()
    try:
        check_reachable(settings.kafka)
        plans = plan_topics(admin, specs)
        if not args.dry_run:
            apply_plans(admin, plans)
    except KafkaUnreachableError as exc:
        print(exc, file=sys.stderr)
        return EXIT_FAILED
    except TopicAdminError as exc:
        print(
            f"Topic reconcile failed against {settings.kafka_bootstrap_servers}: {exc}",
            file=sys.stderr,
        )
        return EXIT_FAILED
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
    return EXIT_FAILED if drifted and args.strict else 0


def _schemas_export(args: argparse.Namespace, settings: Settings) -> int:
    from ys_platform.catalog.schemas import write_json_schemas

    for path in write_json_schemas(Path(args.folder)):
        print(path)
    return 0


def _processor_run(args: argparse.Namespace, settings: Settings) -> int:
    import logging

    from ys_platform.processors.registry import resolve
    from ys_platform.processors.runner import run_processor
    from ys_platform.streaming.worker import WorkerConfig, WorkerStopped

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        group_id = resolve(args.name)
    except KeyError as exc:
        print(exc.args[0], file=sys.stderr)
        return EXIT_CONFIG
    config = WorkerConfig(
        batch_size=args.batch_size, instance_id=args.instance, namespace=args.namespace
    )

    def report(metrics) -> None:
        print(json.dumps({"group": metrics.group_id, **metrics.summary()}), file=sys.stderr)

    try:
        metrics = run_processor(
            settings, group_id, config=config, max_idle_s=args.max_idle, on_progress=report
        )
    except WorkerStopped as exc:
        print(f"{group_id} stopped: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps({"group": metrics.group_id, **metrics.summary()}))
    return 0


def _simulate(args: argparse.Namespace, settings: Settings) -> int:
    from ys_platform.sources.publish import run_simulation

    counts = run_simulation(settings, rate=args.rate, duration_s=args.duration, seed=args.seed)
    for topic_name, count in sorted(counts.items()):
        print(f"{topic_name}: {count}")
    return 0


def _sink_run(args: argparse.Namespace) -> int:
    from ys_platform.sinks.runtime import main as sink_main

    return sink_main([args.sink, *args.options])


def _search(args: argparse.Namespace, settings: Settings) -> int:
    from ys_platform.clients.locks import StoreLockedError
    from ys_platform.clients.qdrant import open_qdrant
    from ys_platform.sinks.vector import collection_prefix, search_collection

    api_key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
    collection = f"{collection_prefix(args.namespace)}{args.collection}"
    try:
        with open_qdrant(
            url=settings.qdrant_url,
            path=None if settings.qdrant_url else str(settings.qdrant_path),
            api_key=api_key,
        ) as client:
            if not client.collection_exists(collection):
                print(f"no collection {collection!r}: is the vector sink running?", file=sys.stderr)
                return EXIT_FAILED
            hits = search_collection(client, collection, args.query, args.limit)
    except StoreLockedError as exc:
        print(exc, file=sys.stderr)
        return EXIT_FAILED
    for score, payload in hits:
        shown = {k: v for k, v in payload.items() if not k.startswith("_")}
        print(f"{score:.3f}  {payload.get('_key', '?')}  {json.dumps(shown, default=str)}")
    return 0


def _dev(args: argparse.Namespace, settings: Settings) -> int:
    from ys_platform.devserver import run_dev

    return run_dev(settings, brokers=args.brokers, port=args.port, simulate_rate=args.simulate)


def build_parser() -> argparse.ArgumentParser:
    from ys_platform.cli_connect import register as register_connect
    from ys_platform.local.cli import register as register_local

    parser = argparse.ArgumentParser(
        prog="ys-platform", description="YieldSensei's real-time DeFi data platform."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register_local(commands)
    register_connect(commands, _with_settings)

    topics = commands.add_parser("topics", help="reconcile Kafka topics to the catalog")
    topics_commands = topics.add_subparsers(dest="topics_command", required=True)
    apply = topics_commands.add_parser(
        "apply", help="create missing topics, fix configs, add partitions; never deletes"
    )
    apply.add_argument("topics", nargs="*", help="catalog topic names (default: all)")
    apply.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    apply.add_argument("--strict", action="store_true", help="exit 1 if drift remains")
    apply.set_defaults(func=_with_settings(_topics_apply))

    schemas = commands.add_parser("schemas", help="JSON Schema of every topic's messages")
    schemas_commands = schemas.add_subparsers(dest="schemas_command", required=True)
    export = schemas_commands.add_parser("export", help="write <topic>.schema.json files")
    export.add_argument("folder", help="where to write them")
    export.set_defaults(func=_with_settings(_schemas_export))

    processor = commands.add_parser("processor", help="run a stream processor in this process")
    processor_commands = processor.add_subparsers(dest="processor_command", required=True)
    run = processor_commands.add_parser("run", help="consume, process and produce exactly once")
    run.add_argument("name", help="e.g. price-aggregation (or its group id)")
    run.add_argument("--instance", default="0", help="stable replica id (transactional id)")
    run.add_argument("--batch-size", type=int, default=10_000)
    run.add_argument("--namespace", default="", help="prefix of topics and group (isolation)")
    run.add_argument("--max-idle", type=float, default=None, help="stop after S idle seconds")
    run.set_defaults(func=_with_settings(_processor_run))

    sink = commands.add_parser("sink", help="run a sink (ClickHouse) in this process")
    sink_commands = sink.add_subparsers(dest="sink_command", required=True)
    sink_run = sink_commands.add_parser(
        "run", help="consume topics into the store exactly once", add_help=False
    )
    sink_run.add_argument("sink", choices=["clickhouse"])
    sink_run.add_argument("options", nargs=argparse.REMAINDER, help="see --help of the sink")
    sink_run.set_defaults(func=_sink_run)

    simulate = commands.add_parser("simulate", help="stream a deterministic simulated market")
    simulate.add_argument("--rate", type=float, default=200.0, help="messages per second")
    simulate.add_argument("--duration", type=float, default=60.0, help="seconds of event time")
    simulate.add_argument("--seed", type=int, default=7)
    simulate.set_defaults(func=_with_settings(_simulate))

    search = commands.add_parser("search", help="semantic search in a Qdrant collection")
    search.add_argument("collection", help="e.g. protocols, tokens, user_behavior, documents")
    search.add_argument("query", help="free text, e.g. 'decentralized lending'")
    search.add_argument("--limit", type=int, default=5)
    search.add_argument("--namespace", default="", help="the sink's namespace, if any")
    search.set_defaults(func=_with_settings(_search))

    dev = commands.add_parser("dev", help="local stack, topics, then `dagster dev` (make dev)")
    dev.add_argument(
        "--brokers",
        type=int,
        choices=(1, 3),
        default=None,
        help="default: as the state folder was formatted",
    )
    dev.add_argument("--port", type=int, default=3000, help="Dagster UI port on 127.0.0.1")
    dev.add_argument(
        "--simulate", type=float, default=50.0, help="simulator messages/s (0: no simulator)"
    )
    dev.set_defaults(func=_with_settings(_dev))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
