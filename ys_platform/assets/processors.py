"""Stream processors as long-running assets: input topics → processor → output topics."""

import dagster as dg

from ys_platform.assets.keys import processor_asset_key, topic_asset_key
from ys_platform.assets.topics import topic_processors
from ys_platform.assets.versions import CODE_VERSION, topic_data_version
from ys_platform.assets.workers import WorkerOutput, run_worker_in_dagster, worker_job
from ys_platform.catalog.topics import CONSUMER_GROUPS, ConsumerGroupSpec, topic
from ys_platform.processors.registry import build_processor, processor_names
from ys_platform.resources.kafka import KafkaResource
from ys_platform.streaming.worker import TransactionalWorker, WorkerConfig

PROCESSOR_GROUP = "processors"


class ProcessorRunConfig(dg.Config):
    batch_size: int = WorkerConfig.batch_size
    instance_id: str = "0"
    namespace: str = ""
    """Topic/group prefix: run a copy on isolated topics (tests, replays)."""
    max_idle_s: float | None = None
    """Stop after this long without input (None: run until stopped)."""


def _build_processor_asset(group: ConsumerGroupSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=processor_asset_key(group.group_id),
        deps=[topic_asset_key(t) for t in group.inputs],
        group_name=PROCESSOR_GROUP,
        kinds={"kafka", "python"},
        description=group.description,
        code_version=CODE_VERSION,
    )
    def _processor(
        context: dg.AssetExecutionContext, kafka: KafkaResource, config: ProcessorRunConfig
    ) -> dg.MaterializeResult:
        worker = TransactionalWorker(
            kafka.connection,
            build_processor(group.group_id),
            WorkerConfig(
                batch_size=config.batch_size,
                instance_id=config.instance_id,
                namespace=config.namespace,
            ),
        )
        context.log.info(f"{worker.group_id}: consuming {', '.join(group.inputs)}")
        outputs = [
            WorkerOutput(
                topic_asset_key(t),
                # A CDC connector writing a processor's output would be a parent too; none does.
                tuple(topic_processors(t)),
                f"{config.namespace}{t}",
                topic_data_version(topic(t)),
            )
            for t in group.outputs
        ]
        return run_worker_in_dagster(context, worker, outputs, config.max_idle_s)

    return _processor


PROCESSOR_GROUPS: tuple[ConsumerGroupSpec, ...] = tuple(
    g for g in CONSUMER_GROUPS if g.group_id in processor_names()
)
processor_assets = [_build_processor_asset(g) for g in PROCESSOR_GROUPS]
processor_jobs = [worker_job(g, processor_asset_key(g.group_id)) for g in PROCESSOR_GROUPS]
