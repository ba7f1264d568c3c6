"""Kafka client configuration: the seed's defaults, overrides, SASL/TLS, secret masking."""

import json

import dagster as dg
import pytest
from pydantic import SecretStr, ValidationError

from ys_platform.clients.kafka import KafkaConnection, redacted
from ys_platform.resources.kafka import SECRET_FIELDS, KafkaConnectionConfig, KafkaResource


def _sasl() -> KafkaConnection:
    return KafkaConnection(
        bootstrap_servers="b1:9092,b2:9092",
        client_id="svc",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="yieldsensei-service",
        sasl_password=SecretStr("service-secret"),
        ssl_ca_location="/etc/ssl/ca.pem",
    )


def test_producer_has_the_seed_reliability_defaults():
    conf = KafkaConnection(bootstrap_servers="127.0.0.1:9092").producer_config()
    assert conf["enable.idempotence"] is True
    assert conf["acks"] == "all"
    assert conf["compression.type"] == "snappy"
    assert conf["batch.size"] == 65536
    assert conf["linger.ms"] == 20
    assert conf["bootstrap.servers"] == "127.0.0.1:9092"


def test_overrides_win_and_accept_underscores():
    conf = KafkaConnection(bootstrap_servers="h:1").producer_config(linger_ms=5, **{"acks": "1"})
    assert conf["linger.ms"] == 5
    assert conf["acks"] == "1"


def test_consumer_commits_manually_and_reads_committed():
    conf = KafkaConnection(bootstrap_servers="h:1").consumer_config("g1")
    assert conf["group.id"] == "g1"
    assert conf["enable.auto.commit"] is False
    assert conf["isolation.level"] == "read_committed"
    assert conf["session.timeout.ms"] == 30000


def test_sasl_ssl_config_and_masking():
    connection = _sasl()
    conf = connection.config()
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl.username"] == "yieldsensei-service"
    assert conf["sasl.password"] == "service-secret"
    assert conf["ssl.ca.location"] == "/etc/ssl/ca.pem"
    assert "service-secret" not in repr(connection)
    assert "service-secret" not in str(redacted(conf))
    assert redacted(conf)["sasl.password"] == "**********"


def test_resource_holds_the_connection_with_secrets_as_variables(monkeypatch):
    monkeypatch.setenv("T_KAFKA_SASL_PASSWORD", "p-secret")
    connection = KafkaConnection(
        bootstrap_servers="b1:9092",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username="u",
        sasl_password=SecretStr("p-secret"),
        ssl_ca_location="/etc/ca.pem",
    )
    resource = KafkaResource.of(connection, secret_variable=lambda f: f"T_KAFKA_{f.upper()}")
    # What Dagster stores and shows for the resource: the variable's name, never the value.
    shown = resource.get_resource_definition().config_schema.default_value_as_json_str
    assert "p-secret" not in shown
    assert json.loads(shown) == {
        "cluster": {
            "bootstrap_servers": "b1:9092",
            "client_id": "ys-platform",
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "PLAIN",
            "sasl_username": "u",
            "sasl_password": {"env": "T_KAFKA_SASL_PASSWORD"},
            "ssl_ca_location": "/etc/ca.pem",
            "ssl_certificate_location": None,
            "ssl_key_location": None,
            "ssl_key_password": None,
            "credentials_dir": None,
            "expected_brokers": None,
        }
    }
    with dg.build_resources({"kafka": resource}) as resources:
        held = resources.kafka.connection
    assert held == connection
    assert held.sasl_password.get_secret_value() == "p-secret"
    assert "p-secret" not in repr(held)
    assert held.config()["sasl.mechanism"] == "PLAIN"


def test_resource_refuses_a_secret_without_its_variable():
    connection = KafkaConnection(bootstrap_servers="b1:9092", ssl_key_password=SecretStr("k"))
    with pytest.raises(ValueError, match="has a ssl_key_password: name the environment variable"):
        KafkaResource.of(connection)


def test_resource_config_is_checked_by_the_connection_model():
    resource = KafkaResource(cluster=KafkaConnectionConfig(bootstrap_servers="no-port"))
    with pytest.raises(ValidationError, match="'no-port' is not host:port"):
        _ = resource.connection


def test_resource_config_has_the_connection_fields_and_descriptions():
    assert list(KafkaConnectionConfig.model_fields) == list(KafkaConnection.model_fields)
    assert KafkaConnectionConfig.model_fields["sasl_password"].description == (
        KafkaConnection.model_fields["sasl_password"].description
    )
    assert SECRET_FIELDS == ("sasl_password", "ssl_key_password")


def test_bindings_give_the_settings_connection_with_secrets_from_their_variables(monkeypatch):
    from ys_platform.resources.bindings import bind_resources
    from ys_platform.settings import load_settings

    for name, value in {
        "YS_KAFKA_BOOTSTRAP_SERVERS": "b1:9093",
        "YS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "YS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "YS_KAFKA_SASL_USERNAME": "svc",
        "YS_KAFKA_SASL_PASSWORD": "sasl-secret",
        "YS_KAFKA_SSL_KEY_PASSWORD": "key-secret",
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    kafka = bind_resources(settings)["kafka"]
    shown = json.loads(kafka.get_resource_definition().config_schema.default_value_as_json_str)
    assert shown["cluster"]["sasl_password"] == {"env": "YS_KAFKA_SASL_PASSWORD"}
    assert shown["cluster"]["ssl_key_password"] == {"env": "YS_KAFKA_SSL_KEY_PASSWORD"}
    assert "secret" not in json.dumps(shown)
    with dg.build_resources({"kafka": kafka}) as resources:
        assert resources.kafka.connection == settings.kafka


# --- one principal per component (YS_KAFKA_CREDENTIALS_DIR) -------------------------------------


def _credential_file(folder, principal: str, password: str) -> None:
    from ys_platform.clients.env_file import format_env_file

    (folder / f"{principal}.env").write_text(
        format_env_file(
            {"YS_KAFKA_SASL_USERNAME": principal, "YS_KAFKA_SASL_PASSWORD": password}, "test"
        )
    )


def test_without_a_credentials_folder_every_component_uses_the_connection_as_it_is():
    connection = KafkaConnection(bootstrap_servers="h:1")
    assert connection.as_principal("risk-assessment-processor") is connection


def test_a_component_connects_as_its_own_principal_from_the_credentials_folder(tmp_path):
    _credential_file(tmp_path, "risk-assessment-processor", "p4ss w'rd")
    connection = KafkaConnection(
        bootstrap_servers="h:1",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="ys-dagster",
        sasl_password="dagster-secret",
        credentials_dir=tmp_path,
    )
    risk = connection.as_principal("risk-assessment-processor")
    conf = risk.config()
    assert conf["sasl.username"] == "risk-assessment-processor"
    assert conf["sasl.password"] == "p4ss w'rd"
    assert conf["security.protocol"] == "SASL_SSL" and conf["bootstrap.servers"] == "h:1"
    assert "p4ss" not in repr(risk) and "p4ss" not in str(risk)
    assert connection.config()["sasl.username"] == "ys-dagster"  # the original is unchanged


def test_a_component_without_a_credential_file_fails_naming_the_file(tmp_path):
    from ys_platform.clients.kafka import CredentialsError

    connection = KafkaConnection(bootstrap_servers="h:1", credentials_dir=tmp_path)
    with pytest.raises(CredentialsError) as caught:
        connection.as_principal("ys-monitor")
    message = str(caught.value)
    assert str(tmp_path / "ys-monitor.env") in message
    assert "YS_KAFKA_CREDENTIALS_DIR" in message


def test_a_worker_connects_as_the_principal_of_its_group(tmp_path, monkeypatch):
    from ys_platform.processors.registry import build_processor
    from ys_platform.streaming.worker import TransactionalWorker, WorkerConfig

    monkeypatch.setenv("YS_KAFKA_CREDENTIALS_DIR", str(tmp_path))
    monkeypatch.setenv("YS_HOME", str(tmp_path / "home"))
    from ys_platform.settings import load_settings

    settings = load_settings()
    assert settings.kafka.credentials_dir == tmp_path
    _credential_file(tmp_path, "t1.risk-assessment-processor", "risk-pw")
    app = build_processor("risk-assessment-processor")
    worker = TransactionalWorker(
        settings.kafka, app, WorkerConfig(namespace="t1.", metrics=None, instance_id="0")
    )
    assert worker.connection.sasl_username == "t1.risk-assessment-processor"
    assert worker.connection.sasl_password.get_secret_value() == "risk-pw"
