"""Kafka client configuration: the seed's defaults, overrides, SASL/TLS, secret masking."""

from pydantic import SecretStr

from ys_platform.clients.kafka import KafkaConnection, redacted
from ys_platform.resources.kafka import KafkaResource


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
    assert conf["linger.ms"] == 100
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


def test_resource_builds_the_same_connection():
    resource = KafkaResource(
        bootstrap_servers="b1:9092",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username="u",
        sasl_password="p-secret",
    )
    connection = resource.connection()
    assert connection.sasl_password.get_secret_value() == "p-secret"
    assert "p-secret" not in repr(connection)
    assert connection.config()["sasl.mechanism"] == "PLAIN"
