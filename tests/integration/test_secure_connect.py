"""The secure stack's Kafka Connect worker: on SASL_SSL as its own principal, with no secret in
its command line or its properties file.

The worker is the session's ``secure_connect``: the secure stack's, shared with the secure CDC
test, stopped with the stack.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka.admin import AclBindingFilter, AdminClient
from kafka_helpers import read_topic
from secure_stack import SecureStack

from ys_platform.clients.env_file import load_env_file
from ys_platform.clients.kafka_connect import KafkaConnectClient
from ys_platform.local import connect as local_connect
from ys_platform.local.config import (
    CONNECT_CONFIG_TOPIC,
    CONNECT_OFFSET_TOPIC,
    CONNECT_STATUS_TOPIC,
)
from ys_platform.local.procs import cmdline
from ys_platform.local.state import Layout

# Measured on 2 busy cores: the worker answers ~10-20 s after its JVM starts (connect.py).
pytestmark = pytest.mark.timeout(180)

CLIENT_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def worker(secure_connect: SecureStack) -> SecureStack:
    return secure_connect


def _connect_password(stack: SecureStack) -> str:
    return load_env_file(stack.home / "secrets" / "ys-connect.env")["YS_KAFKA_SASL_PASSWORD"]


def test_the_worker_joined_its_group_as_ys_connect(worker: SecureStack) -> None:
    with KafkaConnectClient(worker.settings.connect_url) as client:
        assert client.is_ready()
    admin = worker.settings.kafka.admin()
    # As its group's leader it wrote the session key (KIP-507) to its config topic: the
    # worker's group membership and writes work under its own principal's ACLs. (Connectors
    # the CDC tests applied and deleted left their configs and tombstones beside it.)
    records = read_topic(worker.settings.kafka, CONNECT_CONFIG_TOPIC, idle_s=1.0)
    assert b"session-key" in [r.key() for r in records]
    # Its internal topics exist, created by the worker itself under its ACLs.
    topics = admin.list_topics(timeout=CLIENT_TIMEOUT_S).topics
    assert {CONNECT_CONFIG_TOPIC, CONNECT_OFFSET_TOPIC, CONNECT_STATUS_TOPIC} <= set(topics)


def test_ys_connect_is_a_scram_user_with_only_the_workers_acls(worker: SecureStack) -> None:
    admin: AdminClient = worker.settings.kafka.admin()
    described = admin.describe_user_scram_credentials(["ys-connect"])["ys-connect"].result(
        CLIENT_TIMEOUT_S
    )
    assert [(str(i.mechanism), i.iterations) for i in described.scram_credential_infos] == [
        ("ScramMechanism.SCRAM_SHA_512", 4096)
    ]
    bindings = admin.describe_acls(
        AclBindingFilter("ANY", None, "ANY", "User:ys-connect", None, "ANY", "ANY")
    ).result(CLIENT_TIMEOUT_S)
    assert sorted((b.restype.name, b.name, b.operation.name) for b in bindings) == sorted(
        (b.restype.name, b.name, b.operation.name) for b in local_connect.worker_acls()
    )


def test_no_password_in_the_workers_command_line_or_properties(worker: SecureStack) -> None:
    pid = local_connect.running_pid(Layout(worker.home))
    assert pid is not None
    command = "\0".join(cmdline(pid))
    properties = Layout(worker.home).connect_properties.read_text()
    assert "sasl.jaas.config=" in properties
    for password in (_connect_password(worker), worker.admin.password.get_secret_value()):
        assert password not in command
        assert password not in properties
    environ = Path(f"/proc/{pid}/environ").read_bytes().decode()
    variables = dict(entry.split("=", 1) for entry in environ.split("\0") if "=" in entry)
    # The worker's password reaches it through its environment, the administrator's does not.
    assert variables["YS_CONNECT_KAFKA_PASSWORD"] == _connect_password(worker)
    assert "YS_KAFKA_SASL_PASSWORD" not in variables
    assert variables["YS_CONNECT_PG_USER"] == "ys_debezium"
