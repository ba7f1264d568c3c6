"""Settings validation: bad values fail with a sentence naming the variable; secrets stay masked."""

import pytest

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
    assert settings.kafka_sasl_password.get_secret_value() == "hunter2-secret"
    assert settings.postgres_conninfo() == "postgresql://u:pg-secret@db:5432/x"


def test_bad_value_error_does_not_echo_secret(monkeypatch):
    monkeypatch.setenv("YS_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("YS_KAFKA_SASL_MECHANISM", "MD5")
    monkeypatch.setenv("YS_KAFKA_SASL_PASSWORD", "hunter2-secret")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "YS_KAFKA_SASL_MECHANISM" in str(info.value)
    assert "hunter2-secret" not in str(info.value)
