"""The vector sink as a Dagster run (in-process, local broker, a tmp Qdrant path): protocols
become points, the collection asset reports them, and `ys-platform search` ranks a paraphrase."""

import uuid

import dagster as dg
from kafka_helpers import create_namespaced_topics

from ys_platform.assets.keys import qdrant_collection_key
from ys_platform.assets.vector_sink import vector_sink_definitions
from ys_platform.cli import main
from ys_platform.clients.kafka import produce_messages
from ys_platform.resources.kafka import KafkaResource
from ys_platform.resources.qdrant import QdrantResource
from ys_platform.sinks.vector import load_mapping
from ys_platform.sources.simulator import MarketSimulator


def test_vector_sink_run_then_search(local_stack, tmp_path, monkeypatch, capsys):
    mapping = load_mapping()
    namespace = f"t{uuid.uuid4().hex[:8]}."
    kafka = KafkaResource.of(local_stack.kafka)
    create_namespaced_topics(
        kafka.admin(), namespace, [*mapping.topics, "dlq.vector-sink"], partitions=2
    )
    protocols = MarketSimulator(5).protocols()
    assert len(protocols) >= 20
    with kafka.get_producer() as producer:
        produce_messages(producer, protocols, namespace=namespace)

    qdrant = QdrantResource(path=str(tmp_path / "qdrant"))
    assets, jobs = vector_sink_definitions(mapping)
    defs = dg.Definitions(assets=assets, jobs=jobs, resources={"kafka": kafka, "qdrant": qdrant})
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("vector_sink_job").execute_in_process(
            instance=instance,
            run_config={
                "ops": {
                    "sinks__vector_sink": {"config": {"namespace": namespace, "max_idle_s": 3.0}}
                }
            },
        )
        assert result.success
        # Each collection reports its own points (local mode: asked of the sink, or counted
        # once it closed the store).
        for collection in {m.collection for m in mapping.topics.values()}:
            event = instance.get_latest_materialization_event(qdrant_collection_key(collection))
            metadata = event.asset_materialization.metadata
            expected = len(protocols) if collection == "protocols" else 0
            assert metadata["points"].value == expected, collection
            assert "consumed" not in metadata and "produced" not in metadata

    prefix = namespace.replace(".", "_")
    with qdrant.get_client() as client:
        assert client.count(f"{prefix}protocols", exact=True).count == len(protocols)

    lending = next(p for p in protocols if p.category == "lending")
    monkeypatch.delenv("YS_QDRANT_URL", raising=False)
    monkeypatch.setenv("YS_HOME", str(tmp_path))
    query = f"{lending.name} lets people borrow and lend crypto"
    assert main(["search", "protocols", query, "--namespace", namespace, "--limit", "3"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.split()[1] == lending.id
