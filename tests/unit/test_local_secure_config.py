"""The secure stack's pure parts: server.properties text, the secrets files, the mode refusal."""

from __future__ import annotations

import base64
import re
import stat
from pathlib import Path

import pytest

from ys_platform.clients.env_file import format_env_file, load_env_file
from ys_platform.local import connect as local_connect
from ys_platform.local import kafka_security
from ys_platform.local.config import (
    CONNECT_ENV_ALLOWLIST,
    BrokerSecurity,
    ConnectSecurity,
    connect_worker_properties,
    kafka_nodes,
    pg_hba_conf,
    server_properties,
)
from ys_platform.local.postgres_secrets import ensure_postgres_secrets, scram_sha_256_verifier
from ys_platform.local.secrets import ensure_credential, read_credential
from ys_platform.local.state import Layout, LocalStackError, check_secure, read_secure
from ys_platform.settings import load_settings

SECRETS = Path("/state/secrets")
SECURITY = BrokerSecurity(
    keystore=SECRETS / "broker-keystore.pem",
    truststore=SECRETS / "ca.pem",
    credential_file=SECRETS / "ys-broker.jaas.properties",
    super_users=("ys-admin", "ys-broker"),
)


def _properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return dict(pairs)


def test_secure_server_properties_of_the_second_of_three_brokers() -> None:
    nodes = kafka_nodes(19092, 3)
    plain = _properties(server_properties(nodes[1], nodes, Path("/s/broker-2/data")))
    secure = _properties(server_properties(nodes[1], nodes, Path("/s/broker-2/data"), SECURITY))

    changed = {k: v for k, v in secure.items() if plain.get(k) != v}
    assert changed == {
        "listeners": "BROKER://127.0.0.1:19093,CONTROLLER://127.0.0.1:19193",
        "advertised.listeners": "BROKER://127.0.0.1:19093",
        "listener.security.protocol.map": "BROKER:SASL_SSL,CONTROLLER:SSL",
        "inter.broker.listener.name": "BROKER",
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
        "config.providers": "secrets",
        "config.providers.secrets.class": (
            "org.apache.kafka.common.config.provider.FileConfigProvider"
        ),
        "config.providers.secrets.param.allowed.paths": "/state/secrets",
        "listener.name.broker.scram-sha-512.sasl.jaas.config": (
            "${secrets:/state/secrets/ys-broker.jaas.properties:sasl.jaas.config}"
        ),
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": "/state/secrets/broker-keystore.pem",
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": "/state/secrets/ca.pem",
        "ssl.endpoint.identification.algorithm": "https",
        "listener.name.controller.ssl.client.auth": "required",
        "ssl.principal.mapping.rules": "RULE:^CN=([a-z0-9._-]+)$/$1/,DEFAULT",
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": "User:ys-admin;User:ys-broker",
    }
    # Everything else (quorum, replication, log dir) is the plaintext node's, and nothing of
    # the plaintext listeners is left over.
    assert {k: v for k, v in secure.items() if k in plain and k not in changed} == {
        k: v for k, v in plain.items() if k not in changed
    }
    assert "PLAINTEXT" not in server_properties(nodes[1], nodes, Path("/d"), SECURITY)


def test_no_secret_in_server_properties(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    secured = kafka_security.prepare(layout, "127.0.0.1:19092", formatted=False)
    nodes = kafka_nodes(19092, 1)
    text = server_properties(nodes[0], nodes, tmp_path / "data", secured.security)
    for credential in (secured.admin, secured.broker):
        assert credential.password.get_secret_value() not in text
    # The broker's JAAS line is in the secrets folder, naming its own principal.
    jaas = load_env_file_like_properties(secured.security.credential_file)
    assert jaas.startswith(
        'org.apache.kafka.common.security.scram.ScramLoginModule required username="ys-broker" '
        'password="'
    )
    assert jaas.endswith(f'{secured.broker.password.get_secret_value()}";')


def load_env_file_like_properties(path: Path) -> str:
    key, _, value = path.read_text().rstrip("\n").partition("=")
    assert key == "sasl.jaas.config"
    return value


def test_secrets_are_owner_only_and_kept(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    first = kafka_security.prepare(layout, "127.0.0.1:19092", formatted=False)
    assert first.made == (
        "ys-admin credential",
        "ys-broker credential",
        "CA",
        "ys-broker certificate",
    )
    folder = tmp_path / "secrets"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    names = sorted(p.name for p in folder.iterdir())
    assert names == [
        "broker-keystore.pem",
        "ca-key.pem",
        "ca.pem",
        "ys-admin.env",
        "ys-broker.env",
        "ys-broker.jaas.properties",
    ]
    assert {stat.S_IMODE((folder / n).stat().st_mode) for n in names} == {0o600}

    again = kafka_security.prepare(layout, "127.0.0.1:19092", formatted=True)
    assert again.made == ()
    assert again.admin.password.get_secret_value() == first.admin.password.get_secret_value()
    assert again.broker.password.get_secret_value() == first.broker.password.get_secret_value()


def test_admin_env_file_holds_what_settings_need(tmp_path: Path) -> None:
    credential = ensure_credential(tmp_path, "ys-admin", bootstrap_servers="127.0.0.1:19092")
    variables = load_env_file(credential.env_file)
    assert variables == {
        "YS_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:19092",
        "YS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "YS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "YS_KAFKA_SASL_USERNAME": "ys-admin",
        "YS_KAFKA_SASL_PASSWORD": credential.password.get_secret_value(),
        "YS_KAFKA_SSL_CA_LOCATION": str(tmp_path / "secrets" / "ca.pem"),
    }
    # 32 random bytes, URL-safe base64: 43 characters no parser needs to escape.
    assert len(credential.password.get_secret_value()) == 43
    # The platform's Settings read the file's variables as they are.
    kafka = load_settings(**_settings_kwargs(variables)).kafka
    assert kafka.config() == {
        "bootstrap.servers": "127.0.0.1:19092",
        "client.id": "ys-platform",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "ys-admin",
        "sasl.password": credential.password.get_secret_value(),
        "ssl.ca.location": str(tmp_path / "secrets" / "ca.pem"),
    }
    assert credential.password.get_secret_value() not in repr(kafka)


def _settings_kwargs(variables: dict[str, str]) -> dict[str, object]:
    kafka = {
        name.removeprefix("YS_KAFKA_").lower(): value
        for name, value in variables.items()
        if name.startswith("YS_KAFKA_")
    }
    return {"kafka": kafka}


def test_credential_moves_with_the_bootstrap_list_and_keeps_its_password(tmp_path: Path) -> None:
    first = ensure_credential(tmp_path, "ys-connect", bootstrap_servers="127.0.0.1:19092")
    moved = ensure_credential(tmp_path, "ys-connect", bootstrap_servers="127.0.0.1:29092")
    assert moved.password.get_secret_value() == first.password.get_secret_value()
    assert read_credential(tmp_path, "ys-connect").bootstrap_servers == "127.0.0.1:29092"
    other = ensure_credential(tmp_path, "ys-risk", bootstrap_servers="127.0.0.1:29092")
    assert other.password.get_secret_value() != first.password.get_secret_value()


@pytest.mark.parametrize("principal", ["Admin", "a,b", "a=b", "", "1abc", 'x"y'])
def test_principal_names_needing_escapes_are_refused(tmp_path: Path, principal: str) -> None:
    with pytest.raises(ValueError, match="must be lower-case letters"):
        ensure_credential(tmp_path, principal, bootstrap_servers="127.0.0.1:19092")


def test_env_file_round_trip_quotes_paths(tmp_path: Path) -> None:
    variables = {"YS_A": "/with space/ca.pem", "YS_B": "plain", "YS_C": ""}
    path = tmp_path / "x.env"
    path.write_text(format_env_file(variables, "header\nsecond"))
    assert path.read_text().startswith("# header\n# second\nYS_A='/with space/ca.pem'\n")
    assert load_env_file(path) == variables


def test_a_bad_env_line_is_named_by_number_not_content(tmp_path: Path) -> None:
    path = tmp_path / "x.env"
    path.write_text("YS_A=1\nsecret-password-line\n")
    with pytest.raises(ValueError) as info:
        load_env_file(path)
    assert str(info.value) == f"{path}, line 2: not a NAME=value line"


def test_lost_credential_of_a_formatted_cluster_is_an_error(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    kafka_security.prepare(layout, "127.0.0.1:19092", formatted=False)
    (tmp_path / "secrets" / "ys-admin.env").unlink()
    with pytest.raises(LocalStackError, match=r"ys-admin.env is missing, but the Kafka storage"):
        kafka_security.prepare(layout, "127.0.0.1:19092", formatted=True)


def test_format_arguments_file_exists_only_during_the_format(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    secured = kafka_security.prepare(layout, "127.0.0.1:19092", formatted=False)
    with kafka_security.format_arguments(layout, secured) as arguments:
        assert len(arguments) == 1 and arguments[0].startswith("@")
        path = Path(arguments[0][1:])
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        admin = secured.admin.password.get_secret_value()
        broker = secured.broker.password.get_secret_value()
        assert path.read_text().splitlines() == [
            "--add-scram",
            f"SCRAM-SHA-512=[name=ys-admin,password={admin}]",
            "--add-scram",
            f"SCRAM-SHA-512=[name=ys-broker,password={broker}]",
        ]
    assert not path.exists()


def test_the_mode_of_a_state_folder_is_fixed_by_its_first_up(tmp_path: Path) -> None:
    secure, plain = Layout(tmp_path / "secure"), Layout(tmp_path / "plain")
    assert read_secure(secure) is None
    check_secure(secure, True)
    check_secure(secure, True)
    assert read_secure(secure) is True
    with pytest.raises(LocalStackError, match=r"holds a secure stack .* never comes up PLAINTEXT"):
        check_secure(secure, False)

    check_secure(plain, False)
    with pytest.raises(LocalStackError, match=r"holds a PLAINTEXT stack, .* cannot turn secure"):
        check_secure(plain, True)


def test_a_folder_from_before_the_mode_was_recorded_is_plaintext(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.kafka.mkdir(parents=True)
    layout.kafka_cluster_file.write_text('{"cluster_id": "x", "brokers": 1}')
    assert read_secure(layout) is False
    with pytest.raises(LocalStackError, match="cannot turn secure"):
        check_secure(layout, True)


def test_secure_connect_worker_properties_add_sasl_ssl_for_every_client() -> None:
    args = {"bootstrap": "127.0.0.1:19092", "port": 18083, "brokers": 1, "plugin_path": Path("/p")}
    plain = _properties(connect_worker_properties(**args))
    secure = _properties(
        connect_worker_properties(
            **args,
            security=ConnectSecurity(
                username="ys-connect", truststore=SECRETS / "ca.pem", credentials_dir=SECRETS
            ),
        )
    )
    jaas = (
        'org.apache.kafka.common.security.scram.ScramLoginModule required username="ys-connect" '
        'password="${env:YS_CONNECT_KAFKA_PASSWORD}";'
    )
    client = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.jaas.config": jaas,
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": "/state/secrets/ca.pem",
        "ssl.endpoint.identification.algorithm": "https",
    }
    assert {k: v for k, v in secure.items() if k not in plain} == {
        **{
            prefix + key: value
            for prefix in ("", "producer.", "consumer.", "admin.")
            for key, value in client.items()
        },
        "connector.client.config.override.policy": "Principal",
        # Connectors' own principals: their passwords read from the credentials folder only.
        "config.providers.file.class": "org.apache.kafka.common.config.provider.FileConfigProvider",
        "config.providers.file.param.allowed.paths": "/state/secrets",
    }
    assert {k: secure[k] for k in plain if k != "config.providers"} == {
        k: v for k, v in plain.items() if k != "config.providers"
    }
    assert (plain["config.providers"], secure["config.providers"]) == ("env", "env,file")
    # The password variable is one the worker's env provider may read.
    assert re.fullmatch(CONNECT_ENV_ALLOWLIST, "YS_CONNECT_KAFKA_PASSWORD")


def test_worker_acls_cover_its_internal_topics_and_group_only() -> None:
    bindings = {
        (str(b.restype), b.name, str(b.resource_pattern_type), b.principal, str(b.operation))
        for b in local_connect.worker_acls()
    }
    topics = ("ys-connect-configs", "ys-connect-offsets", "ys-connect-status")
    operations = ("CREATE", "DESCRIBE", "DESCRIBE_CONFIGS", "READ", "WRITE")
    assert bindings == {
        *(
            (
                "ResourceType.TOPIC",
                t,
                "ResourcePatternType.LITERAL",
                "User:ys-connect",
                f"AclOperation.{o}",
            )
            for t in topics
            for o in operations
        ),
        (
            "ResourceType.GROUP",
            "ys-connect",
            "ResourcePatternType.LITERAL",
            "User:ys-connect",
            "AclOperation.READ",
        ),
        # Its producer to the config and status topics is idempotent.
        (
            "ResourceType.BROKER",
            "kafka-cluster",
            "ResourcePatternType.LITERAL",
            "User:ys-connect",
            "AclOperation.IDEMPOTENT_WRITE",
        ),
    }


def test_secure_pg_hba_asks_every_role_for_a_scram_password() -> None:
    rules = [line.split() for line in pg_hba_conf(secure=True).splitlines() if line[0] != "#"]
    assert rules == [
        ["host", "all", "all", "127.0.0.1/32", "scram-sha-256"],
        ["host", "replication", "all", "127.0.0.1/32", "scram-sha-256"],
    ]


def test_scram_verifier_format_and_salt() -> None:
    salt = bytes(range(16))
    verifier = scram_sha_256_verifier("pencil", salt=salt)
    method, rest = verifier.split("$", 1)
    params, keys = rest.split("$")
    iterations, salt_b64 = params.split(":")
    stored, server = keys.split(":")
    assert (method, iterations, base64.b64decode(salt_b64)) == ("SCRAM-SHA-256", "4096", salt)
    assert len(base64.b64decode(stored)) == len(base64.b64decode(server)) == 32
    assert scram_sha_256_verifier("pencil", salt=salt) == verifier
    assert scram_sha_256_verifier("pencil") != scram_sha_256_verifier("pencil")
    assert "pencil" not in verifier


def test_postgres_passwords_live_in_a_libpq_password_file(tmp_path: Path) -> None:
    roles = ("postgres", "yieldsensei", "ys_debezium")
    first = ensure_postgres_secrets(tmp_path, 15433, roles)
    lines = first.passfile.read_text().splitlines()
    assert lines[1:] == [
        f"127.0.0.1:15433:*:{role}:{first.password(role).get_secret_value()}" for role in roles
    ]
    assert stat.S_IMODE(first.passfile.stat().st_mode) == 0o600
    assert load_env_file(first.env_file) == {"PGPASSFILE": str(first.passfile)}
    moved = ensure_postgres_secrets(tmp_path, 15434, roles)
    assert {r: p.get_secret_value() for r, p in moved.passwords.items()} == {
        r: p.get_secret_value() for r, p in first.passwords.items()
    }
    assert moved.passfile.read_text().splitlines()[1].startswith("127.0.0.1:15434:*:postgres:")
