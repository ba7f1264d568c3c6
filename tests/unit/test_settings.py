"""Settings validation: bad values fail with a sentence naming the variable; secrets stay masked."""

import pytest

from ys_platform.package_files import CONNECTORS_DIR
from ys_platform.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("YS_"):
            monkeypatch.delenv(name)


def test_defaults_are_the_local_stack(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert not settings.kafka_bootstrap_given
    assert settings.connectors_dir == CONNECTORS_DIR
    assert settings.home_dir == tmp_path / ".ys"
    assert settings.clickhouse_dsn == f"chdb://{tmp_path}/.ys/clickhouse"
    assert settings.qdrant_path == tmp_path / ".ys" / "qdrant"
    assert settings.uses_local_postgres
    assert settings.postgres_conninfo() == (
        "host=127.0.0.1 port=15432 dbname=yieldsensei user=yieldsensei"
    )


def test_environment_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("YS_KAFKA_BOOTSTRAP_SERVERS", " a:1 , b:2 ")
    monkeypatch.setenv("YS_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("YS_CLICKHOUSE_URL", "http://ch:8123")
    settings = load_settings()
    assert settings.kafka_bootstrap_servers == "a:1,b:2"
    assert settings.kafka_bootstrap_given
    assert settings.home_dir == tmp_path / "state"
    assert settings.clickhouse_dsn == "http://ch:8123"


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("YS_KAFKA_BOOTSTRAP_SERVERS", "localhost", "'localhost' is not host:port"),
        ("YS_KAFKA_BOOTSTRAP_SERVERS", "", "needs at least one host:port"),
        ("YS_KAFKA_SECURITY_PROTOCOL", "TLS", "Input should be"),
        ("YS_POSTGRES_PORT", "99999", "less than or equal to 65535"),
        ("YS_CLICKHOUSE_URL", "tcp://x:9000", "must start with http://, https:// or chdb://"),
        ("YS_CONNECT_URL", "127.0.0.1:8083", "must start with http:// or https://"),
        ("YS_KAFKA_CLIENT_ID", "", "at least 1 character"),
        ("YS_KAFKA_SASL_MECHNISM", "PLAIN", "Extra inputs are not permitted"),
        ("YS_LOCAL_KAFKA_PORT", "80", "greater than or equal to 1024"),
        ("YS_CONNECTORS_DIR", "/nonexistent/connectors", "is not a folder"),
    ],
)
def test_bad_value_names_the_variable(monkeypatch, variable, value, says):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith("Invalid configuration:")
    assert f"{variable}: " in message
    assert says in message


def test_sasl_requires_credentials(monkeypatch):
    monkeypatch.setenv("YS_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("YS_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    with pytest.raises(SettingsError, match="YS_KAFKA_SASL_USERNAME and YS_KAFKA_SASL_PASSWORD"):
        load_settings()


def test_secrets_never_print(monkeypatch):
    monkeypatch.setenv("YS_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("YS_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("YS_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("YS_KAFKA_SASL_PASSWORD", "hunter2-secret")
    monkeypatch.setenv("YS_POSTGRES_DSN", "postgresql://u:pg-secret@db:5432/x")
    settings = load_settings()
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert "hunter2-secret" not in text
        assert "pg-secret" not in text
    assert settings.kafka.sasl_password.get_secret_value() == "hunter2-secret"
    assert settings.postgres_conninfo() == "postgresql://u:pg-secret@db:5432/x"


def test_bad_value_error_does_not_echo_secret(monkeypatch):
    monkeypatch.setenv("YS_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("YS_KAFKA_SASL_MECHANISM", "MD5")
    monkeypatch.setenv("YS_KAFKA_SASL_PASSWORD", "hunter2-secret")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "YS_KAFKA_SASL_MECHANISM" in str(info.value)
    assert "hunter2-secret" not in str(info.value)


def test_clients_follow_the_local_kafka_port(monkeypatch):
    monkeypatch.setenv("YS_LOCAL_KAFKA_PORT", "29092")
    settings = load_settings()
    assert settings.kafka_bootstrap_servers == "127.0.0.1:29092"
    assert settings.kafka.bootstrap_servers == "127.0.0.1:29092"
    assert settings.local_kafka_port_given
    assert not settings.kafka_bootstrap_given


def test_a_given_bootstrap_wins_over_the_local_port(monkeypatch):
    monkeypatch.setenv("YS_LOCAL_KAFKA_PORT", "29092")
    monkeypatch.setenv("YS_KAFKA_BOOTSTRAP_SERVERS", "broker.example:9093")
    settings = load_settings()
    assert settings.kafka_bootstrap_servers == "broker.example:9093"
    assert settings.kafka_bootstrap_given


def test_the_local_port_follows_overrides_too():
    settings = load_settings(local_kafka_port=21092)
    assert settings.kafka_bootstrap_servers == "127.0.0.1:21092"


def test_every_kafka_variable_reaches_the_one_connection(monkeypatch, tmp_path):
    for name, value in {
        "YS_KAFKA_BOOTSTRAP_SERVERS": "b1:9093",
        "YS_KAFKA_CLIENT_ID": "svc",
        "YS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "YS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "YS_KAFKA_SASL_USERNAME": "user",
        "YS_KAFKA_SASL_PASSWORD": "sasl-secret",
        "YS_KAFKA_SSL_CA_LOCATION": "/etc/ca.pem",
        "YS_KAFKA_SSL_CERTIFICATE_LOCATION": "/etc/cert.pem",
        "YS_KAFKA_SSL_KEY_LOCATION": "/etc/key.pem",
        "YS_KAFKA_SSL_KEY_PASSWORD": "key-secret",
    }.items():
        monkeypatch.setenv(name, value)
    assert load_settings().kafka.config() == {
        "bootstrap.servers": "b1:9093",
        "client.id": "svc",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "user",
        "sasl.password": "sasl-secret",
        "ssl.ca.location": "/etc/ca.pem",
        "ssl.certificate.location": "/etc/cert.pem",
        "ssl.key.location": "/etc/key.pem",
        "ssl.key.password": "key-secret",
    }


def test_connectors_dir_points_elsewhere(monkeypatch, tmp_path):
    monkeypatch.setenv("YS_CONNECTORS_DIR", str(tmp_path))
    assert load_settings().connectors_dir == tmp_path


def test_an_unparsable_nested_value_names_it(monkeypatch):
    monkeypatch.setenv("YS_KAFKA", "not json")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value).startswith("Invalid configuration:")
    assert '"kafka"' in str(info.value)
