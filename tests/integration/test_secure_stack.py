"""The secure local stack against real brokers: who is refused, and the administrator who is not.

Mirrors the authentication half of Kafka's EndToEndAuthorizationTest: a PLAINTEXT client, an SSL
client without SASL, a wrong password and a client that does not trust the local CA are all
refused; the administrator of secrets/ys-admin.env creates a topic, produces and consumes.
The stack (fixture ``secure_stack``) runs in a state folder and on ports of its own.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic
from secure_stack import SecureStack

from ys_platform.clients.env_file import load_env_file
from ys_platform.local import LocalStackError, status, tls, up
from ys_platform.local import kafka as local_kafka
from ys_platform.local.procs import cmdline

# Measured on 2 busy cores: format ~3 s, one secure broker ready ~6 s, down ~3 s. 180 s bounds
# the module with a first Maven resolution on a slow CI machine.
pytestmark = pytest.mark.timeout(180)

# A refused client sees its failure within a second here (TLS alert, SASL failure, closed
# socket); 8 s only bounds the wait and still keeps librdkafka's retries to a few.
REFUSED_TIMEOUT_S = 8.0
CLIENT_TIMEOUT_S = 30.0


@dataclass
class Refusal:
    """What a client that asked for metadata heard: the exception, error_cb's errors, the log."""

    raised: KafkaError | None = None
    errors: list[KafkaError] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    @property
    def codes(self) -> set[int]:
        return {e.code() for e in self.errors}


class _Lines(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__()
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _ask_metadata(config: dict[str, object]) -> Refusal:
    """Ask for metadata with ``config``, keeping librdkafka's errors and log lines."""
    heard = Refusal()
    logger = logging.getLogger(f"test.secure.{uuid.uuid4().hex[:8]}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)  # librdkafka's FAIL lines (why a broker hung up) are INFO
    logger.addHandler(_Lines(heard.log))
    admin = AdminClient({**config, "error_cb": heard.errors.append, "logger": logger})
    try:
        admin.list_topics(timeout=REFUSED_TIMEOUT_S)
    except KafkaException as exc:
        heard.raised = exc.args[0]
    admin.poll(0.5)  # serves error_cb
    return heard


def _refused(config: dict[str, object]) -> Refusal:
    heard = _ask_metadata(config)
    assert heard.raised is not None, "the client got metadata; it should have been refused"
    return heard


def test_a_plaintext_client_is_refused(secure_stack: SecureStack) -> None:
    heard = _refused({"bootstrap.servers": secure_stack.bootstrap_servers})
    assert heard.raised is not None and heard.raised.code() == KafkaError._TRANSPORT
    # The broker closes the socket on the client's first (non-TLS) bytes.
    assert any(
        "connection closed by peer" in line and "APIVERSION_QUERY" in line for line in heard.log
    ), heard.log


def test_an_ssl_client_without_sasl_is_refused(secure_stack: SecureStack) -> None:
    heard = _refused(
        {
            "bootstrap.servers": secure_stack.bootstrap_servers,
            "security.protocol": "SSL",
            "ssl.ca.location": str(secure_stack.admin.ca_file),
        }
    )
    assert heard.raised is not None and heard.raised.code() == KafkaError._TRANSPORT
    # TLS succeeds; the broker closes the connection at the first request that is not SASL.
    assert any("SSL connection closed by peer" in line for line in heard.log), heard.log
    assert KafkaError._SSL not in heard.codes


def test_a_wrong_password_is_refused(secure_stack: SecureStack) -> None:
    heard = _refused(secure_stack.connection(sasl_password="not-the-password").config())
    authentication = [e.str() for e in heard.errors if e.code() == KafkaError._AUTHENTICATION]
    assert authentication, [e.str() for e in heard.errors]
    assert all("invalid credentials with SASL mechanism SCRAM-SHA-512" in e for e in authentication)


def test_an_unknown_user_is_refused(secure_stack: SecureStack) -> None:
    heard = _refused(secure_stack.connection(sasl_username="nobody").config())
    assert KafkaError._AUTHENTICATION in heard.codes, [e.str() for e in heard.errors]


def test_a_client_that_does_not_trust_the_local_ca_is_refused(
    secure_stack: SecureStack, tmp_path: Path
) -> None:
    # Another CA, made the same way: the broker's certificate does not chain to it.
    foreign = tmp_path / "foreign"
    files, _ = tls.ensure_tls(foreign)
    config = secure_stack.connection(ssl_ca_location=files.ca).config()
    config["ssl.endpoint.identification.algorithm"] = "https"
    heard = _refused(config)
    ssl = [e.str() for e in heard.errors if e.code() == KafkaError._SSL]
    assert ssl and all("certificate verify failed" in e for e in ssl), heard.errors
    # And the system's CA store (no ssl.ca.location) does not know the local CA either.
    system = secure_stack.connection().config()
    del system["ssl.ca.location"]
    assert KafkaError._SSL in _refused(system).codes


def test_localhost_is_a_name_of_the_brokers_certificate(secure_stack: SecureStack) -> None:
    bootstrap = secure_stack.bootstrap_servers.replace("127.0.0.1", "localhost")
    config = secure_stack.connection(bootstrap_servers=bootstrap).config()
    config["ssl.endpoint.identification.algorithm"] = "https"
    heard = _ask_metadata(config)
    assert (heard.raised, heard.errors) == (None, [])


def test_the_administrator_creates_produces_and_consumes(secure_stack: SecureStack) -> None:
    connection = secure_stack.settings.kafka
    # Hostname verification is on (librdkafka's default, and stated): 127.0.0.1 is in the SAN.
    admin = connection.admin(**{"ssl.endpoint.identification.algorithm": "https"})
    topic = f"secure-test-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(CLIENT_TIMEOUT_S)

    producer = connection.producer(**{"ssl.endpoint.identification.algorithm": "https"})
    producer.produce(topic, key=b"k-1", value=b'{"n": 1}')
    assert producer.flush(CLIENT_TIMEOUT_S) == 0

    consumer = connection.consumer(f"secure-test-{uuid.uuid4().hex[:8]}")
    try:
        consumer.subscribe([topic])
        records = []
        while not records:
            # One record is expected: consume() returns with it (asking for more waits out the
            # whole timeout: this test took 30 s).
            batch = consumer.consume(1, timeout=CLIENT_TIMEOUT_S)
            assert batch, "no record within the timeout"
            records += [r for r in batch if r.error() is None]
        assert [(r.partition(), r.offset(), r.key(), r.value()) for r in records] == [
            (0, 0, b"k-1", b'{"n": 1}')
        ]
    finally:
        consumer.close()


def test_the_admin_env_file_is_what_a_shell_sources(secure_stack: SecureStack) -> None:
    variables = load_env_file(secure_stack.admin.env_file)
    env = {**os.environ, **variables, "YS_HOME": str(secure_stack.home)}
    # A child that sources nothing but its environment reaches the cluster as the admin.
    script = (
        "from ys_platform.settings import load_settings\n"
        "from ys_platform.clients.kafka import check_reachable\n"
        "print(check_reachable(load_settings().kafka))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout.strip()) == (0, "1"), result.stderr


def test_status_talks_to_the_secure_brokers_and_prints_no_password(
    secure_stack: SecureStack,
) -> None:
    services = {s.name: s for s in status(secure_stack.settings)}
    assert services["kafka-1"].state == "running"
    assert services["kafka-1"].healthy, services["kafka-1"].detail
    env = {
        **os.environ,
        "YS_HOME": str(secure_stack.home),
        "YS_LOCAL_KAFKA_PORT": str(secure_stack.settings.local_kafka_port),
        "YS_POSTGRES_PORT": str(secure_stack.settings.postgres_port),
        "YS_CONNECT_URL": secure_stack.settings.connect_url,
    }
    result = subprocess.run(
        [str(Path(sys.executable).with_name("ys-platform")), "local", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    kafka_line = next(line for line in result.stdout.splitlines() if line.startswith("kafka-1"))
    assert "running" in kafka_line and "ok: 1 broker(s)" in kafka_line, output
    for principal in ("ys-admin", "ys-broker"):
        password = load_env_file(secure_stack.home / "secrets" / f"{principal}.env")[
            "YS_KAFKA_SASL_PASSWORD"
        ]
        assert password not in output


def test_no_password_on_a_broker_command_line(secure_stack: SecureStack) -> None:
    from ys_platform.local.state import Layout

    pid = local_kafka.running_pid(Layout(secure_stack.home), 1)
    assert pid is not None
    command = "\0".join(cmdline(pid))
    assert "kafka.Kafka" in command
    for name in ("ys-admin", "ys-broker"):
        password = load_env_file(secure_stack.home / "secrets" / f"{name}.env")[
            "YS_KAFKA_SASL_PASSWORD"
        ]
        assert password not in command
    # Nor in the broker's generated configuration, which only names the secrets' files.
    properties = (secure_stack.home / "kafka" / "broker-1" / "server.properties").read_text()
    assert secure_stack.admin.password.get_secret_value() not in properties
    # The format's argument file with the passwords is gone.
    assert not (secure_stack.home / "secrets" / ".format-scram.args").exists()


def test_a_secure_state_folder_refuses_to_come_up_plaintext(secure_stack: SecureStack) -> None:
    with pytest.raises(LocalStackError, match=r"holds a secure stack .* never comes up PLAINTEXT"):
        up(secure_stack.settings, postgres=False)
    # Nothing was touched: the broker still answers as before.
    assert {s.name: s.healthy for s in status(secure_stack.settings)}["kafka-1"]


def test_a_second_secure_up_is_idempotent(secure_stack: SecureStack) -> None:
    before = secure_stack.admin.password.get_secret_value()
    services = up(secure_stack.settings, postgres=False, secure=True)
    assert [(s.name, s.state, s.healthy) for s in services] == [("kafka-1", "running", True)]
    assert load_env_file(secure_stack.admin.env_file)["YS_KAFKA_SASL_PASSWORD"] == before


def test_a_plaintext_state_folder_refuses_to_turn_secure(tmp_path: Path) -> None:
    from ys_platform.settings import load_settings

    home = tmp_path / ".ys"
    (home / "kafka").mkdir(parents=True)
    (home / "kafka" / "cluster.json").write_text('{"cluster_id": "x", "brokers": 1}')
    settings = load_settings(home=home, local_kafka_port=19992)
    with pytest.raises(LocalStackError, match=r"holds a PLAINTEXT stack, .* cannot turn secure"):
        up(settings, postgres=False, secure=True)
    assert not (home / "secrets").exists()


# --- PostgreSQL ----------------------------------------------------------------------------------
def _pg(stack: SecureStack, user: str, *, passfile: Path | None = None, password: str = "") -> str:
    conninfo = (
        f"host=127.0.0.1 port={stack.settings.postgres_port} dbname=yieldsensei user={user} "
        f"connect_timeout=5 passfile={passfile or '/nonexistent'}"
    )
    return f"{conninfo} password={password}" if password else conninfo


def _passfile(stack: SecureStack) -> Path:
    return stack.home / "secrets" / "pgpass"


@pytest.mark.parametrize("user", ["postgres", "yieldsensei", "ys_debezium"])
def test_postgres_refuses_a_role_without_its_password(secure_stack: SecureStack, user: str) -> None:
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        psycopg.connect(_pg(secure_stack, user))
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(_pg(secure_stack, user, password="wrong"))
    with psycopg.connect(_pg(secure_stack, user, passfile=_passfile(secure_stack))) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (user,)


def test_postgres_roles_have_the_least_they_need(secure_stack: SecureStack) -> None:
    from ys_platform.local import postgres as local_postgres
    from ys_platform.local.state import Layout
    from ys_platform.postgres import CAPTURED, TABLES, migrate

    settings = secure_stack.settings
    app = _pg(secure_stack, "yieldsensei", passfile=_passfile(secure_stack))
    migrate(app)
    secrets = local_postgres.postgres_secrets(settings, Layout(secure_stack.home))
    assert secrets is not None
    granted = local_postgres.grant_capture(settings, secrets)
    captured = sorted(c.table for c in CAPTURED)
    assert granted == captured
    with psycopg.connect(app) as conn:
        roles = conn.execute(
            "SELECT rolname, rolreplication, rolsuper, rolcanlogin FROM pg_roles "
            "WHERE rolname IN ('yieldsensei', 'ys_debezium') ORDER BY rolname"
        ).fetchall()
        assert roles == [("yieldsensei", False, False, True), ("ys_debezium", True, False, True)]
        rows = conn.execute(
            "SELECT t, has_table_privilege('ys_debezium', 'public.' || t, 'SELECT'), "
            "has_table_privilege('ys_debezium', 'public.' || t, 'INSERT,UPDATE,DELETE') "
            "FROM unnest(%s::text[]) AS t ORDER BY t",
            [list(TABLES)],
        ).fetchall()
    assert rows == [(t, t in captured, False) for t in sorted(TABLES)]


def test_no_password_in_the_postgres_log(secure_stack: SecureStack) -> None:
    log = (secure_stack.home / "logs" / "postgres.log").read_text()
    passwords = [
        line.rsplit(":", 1)[1]
        for line in _passfile(secure_stack).read_text().splitlines()
        if not line.startswith("#")
    ]
    assert len(passwords) == 3
    assert not [p for p in passwords if p in log]


# --- principals created through the admin API ----------------------------------------------------
def test_a_new_principal_logs_in_and_is_allowed_nothing(secure_stack: SecureStack) -> None:
    from ys_platform.local.secrets import ensure_credential
    from ys_platform.security.users import ensure_scram_users

    principal = f"ys-test-{uuid.uuid4().hex[:6]}"
    credential = ensure_credential(
        secure_stack.home, principal, bootstrap_servers=secure_stack.bootstrap_servers
    )
    admin = secure_stack.settings.kafka.admin()
    assert ensure_scram_users(admin, [credential]) == [principal]
    # A second call finds it and sets the same password again.
    assert ensure_scram_users(admin, [credential]) == []

    topic = f"secure-deny-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(CLIENT_TIMEOUT_S)
    user = credential.connection()
    # Authenticated (metadata answers), but no ACL names it: it sees no topic ...
    metadata = user.admin().list_topics(timeout=CLIENT_TIMEOUT_S)
    assert topic not in metadata.topics
    # ... and may not write one (StandardAuthorizer, allow.everyone.if.no.acl.found=false).
    errors: list[KafkaError] = []
    # Not idempotent: its InitProducerId would fail first, on the cluster rather than the topic.
    producer = user.producer(**{"enable.idempotence": False, "message.timeout.ms": 10000})
    producer.produce(topic, value=b"x", on_delivery=lambda err, _msg: errors.append(err))
    producer.flush(CLIENT_TIMEOUT_S)
    assert [e.code() for e in errors] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
