"""Connector files: the repository's parse and route every captured table; secrets by reference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ys_platform.catalog.topics import topic
from ys_platform.connectors import (
    CONNECTORS_DIR,
    ConnectorFileError,
    connector_files,
    heartbeat_topic,
    load_connector_file,
    namespaced,
    output_topics,
    parse_connector,
    source_tables,
)
from ys_platform.postgres import CAPTURED, PUBLICATION

SOURCE = CONNECTORS_DIR / "postgres-source.json"


def _document(**config: str) -> dict:
    base = json.loads(SOURCE.read_text())
    base["config"].update(config)
    return base


def test_the_repository_files_are_valid_and_sink_mappings_are_skipped() -> None:
    assert [f.name for f in connector_files()] == ["postgres-source"]


def test_postgres_source_routes_every_captured_table_to_its_catalog_topic() -> None:
    file = load_connector_file(SOURCE)
    assert file.desired_state == "RUNNING"
    assert source_tables(file) == [c.table for c in CAPTURED]
    assert output_topics(file) == [c.topic for c in CAPTURED]
    config = file.config
    assert config["publication.name"] == PUBLICATION
    assert config["publication.autocreate.mode"] == "disabled"
    assert config["plugin.name"] == "pgoutput"
    assert config["key.converter"] == "org.apache.kafka.connect.storage.StringConverter"
    for captured in CAPTURED:
        # The key column is the catalog's key of the topic.
        assert topic(captured.topic).key == captured.key
        assert config[f"transforms.key_{captured.table}.field"] == captured.key
        assert f"public.{captured.table}:{captured.key}" in config["message.key.columns"]
    assert heartbeat_topic(file) == "__debezium-heartbeat.ys"


def test_captured_topics_are_the_change_streams_and_get_the_delete_mark() -> None:
    from ys_platform.catalog.codec import CDC_OP_HEADER
    from ys_platform.catalog.topics import TOPICS

    assert {t.name for t in TOPICS if t.change_stream} == {c.topic for c in CAPTURED}
    config = load_connector_file(SOURCE).config
    prefix, op = CDC_OP_HEADER.rsplit(".", 1)
    for unwrap in ("unwrap_compacted", "unwrap_events"):
        assert config[f"transforms.{unwrap}.add.headers"] == op
        assert config[f"transforms.{unwrap}.add.headers.prefix"] == prefix + "."
    # Deletes on the event topics: the deleted row, without the __deleted field rewrite adds.
    assert config["transforms.unwrap_events.delete.tombstone.handling.mode"] == "rewrite"
    assert config["transforms.drop_deleted_flag.exclude"] == "__deleted"
    order = config["transforms"].split(",")
    assert order.index("drop_deleted_flag") == order.index("unwrap_events") + 1


def test_namespaced_prefixes_only_the_routed_topics() -> None:
    file = namespaced(load_connector_file(SOURCE), "t1.", name="x")
    assert file.name == "x"
    assert output_topics(file) == [f"t1.{c.topic}" for c in CAPTURED]


@pytest.mark.parametrize(
    "key", ["database.password", "sasl.jaas.config", "ssl.key.password", "api.token"]
)
def test_a_secret_literal_is_refused_without_echoing_it(key: str) -> None:
    with pytest.raises(ConnectorFileError, match="literal") as caught:
        parse_connector(_document(**{key: "hunter2"}))
    assert "hunter2" not in str(caught.value)


def test_references_must_use_the_env_provider_and_the_allowed_prefix() -> None:
    with pytest.raises(ConnectorFileError, match="YS_CONNECT_"):
        parse_connector(_document(**{"database.password": "${env:AWS_SECRET_ACCESS_KEY}"}))
    with pytest.raises(ConnectorFileError, match="provider"):
        parse_connector(_document(**{"database.password": "${file:/etc/secret:pw}"}))


def test_names_like_key_tokens_are_not_taken_for_secrets() -> None:
    parse_connector(_document(**{"transforms.key_tokens.field": "address"}))


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"desired_state": "STOPPED"}, "desired_state"),
        ({"extra": 1}, "unknown"),
        ({"name": "has space"}, "name"),
    ],
)
def test_malformed_files_are_refused(change: dict, error: str) -> None:
    with pytest.raises(ConnectorFileError, match=error):
        parse_connector({**_document(), **change})


def test_config_values_must_be_strings(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(_document(**{"tasks.max": 1})))  # type: ignore[arg-type]
    with pytest.raises(ConnectorFileError, match="string"):
        load_connector_file(path)


def test_on_a_cluster_with_per_principal_credentials_a_connector_logs_in_as_itself(
    tmp_path: Path,
) -> None:
    from ys_platform.clients.kafka import CredentialsError, KafkaConnection
    from ys_platform.connectors import for_cluster

    file = load_connector_file(SOURCE)
    plain = KafkaConnection()
    assert for_cluster(file, plain) == file
    secure = KafkaConnection(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="ys-dagster",
        sasl_password="dagster-secret",
        credentials_dir=tmp_path,
    )
    # No file for the connector's principal: a sentence naming it, before anything is PUT.
    with pytest.raises(CredentialsError, match="principal postgres-source"):
        for_cluster(file, secure)
    (tmp_path / "postgres-source.env").write_text(
        "YS_KAFKA_SASL_USERNAME=postgres-source\nYS_KAFKA_SASL_PASSWORD=connector-secret\n"
    )
    applied = for_cluster(file, secure)
    assert {k: v for k, v in applied.config.items() if k not in file.config} == {
        "producer.override.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            'username="postgres-source" '
            f'password="${{file:{tmp_path}/postgres-source.env:YS_KAFKA_SASL_PASSWORD}}";'
        )
    }
    assert {k: applied.config[k] for k in file.config} == dict(file.config)
    # The reference, never the password, is what reaches Connect.
    assert "connector-secret" not in json.dumps(dict(applied.config))
