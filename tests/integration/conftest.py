"""Fixtures of the integration tests: real services from the local stack, started on demand."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_helpers import restore_brokers, start_three_brokers, three_broker_settings
from secure_stack import SecureStack, start_secure_stack
from targets import KafkaTarget, plaintext_target, secure_target

from ys_platform.local import LocalStackError, down, up
from ys_platform.settings import Settings, SettingsError, load_settings

HERE = Path(__file__).parent

START_HINT = "Start it with `make test` (installs and starts everything) or `ys-platform local up`."


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/integration talks to real services: mark it so `-m` can pick."""
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def local_stack() -> Iterator[Settings]:
    """The default local stack (settings from the environment), started if it is not running.

    `up` is idempotent, so a stack left running by `make dev` or an earlier test run is reused
    as it is, and left running afterwards for the next run.
    """
    try:
        settings = load_settings()
    except SettingsError as exc:
        pytest.fail(f"{exc}\n{START_HINT}", pytrace=False)
    try:
        services = up(settings)
    except LocalStackError as exc:
        pytest.fail(f"The local stack did not start: {exc}\n{START_HINT}", pytrace=False)
    failing = [f"{s.name} ({s.endpoint}): {s.detail or s.state}" for s in services if not s.healthy]
    if failing:
        pytest.fail(
            f"The local stack is up but unhealthy: {'; '.join(failing)}\n{START_HINT}",
            pytrace=False,
        )
    # Unless YS_KAFKA_BOOTSTRAP_SERVERS says otherwise, the clients follow YS_LOCAL_KAFKA_PORT to
    # the stack (and `up` refuses the two naming different brokers).
    yield settings


@pytest.fixture(scope="session")
def secure_stack() -> Iterator[SecureStack]:
    """A secure 1-broker stack (`local up --secure`: SASL_SSL, SCRAM-SHA-512, StandardAuthorizer)
    with its PostgreSQL (scram-sha-256), in a fresh state folder on ports of its own (Kafka from
    19092, PostgreSQL from 15433, Connect's URL from 18083: the worker only starts on request),
    taken down at the end of the session. Its ``settings`` are the administrator's (a super
    user); ``home / "secrets"`` holds the credentials."""
    # Not under pytest's basetemp: a second pytest session on the machine prunes old numbered
    # folders, which once deleted a running stack's PID files and orphaned its processes.
    home = Path(tempfile.mkdtemp(prefix="ys-secure-stack-"))
    try:
        with start_secure_stack(home / ".ys", postgres=True) as stack:
            yield stack
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def secure_connect(secure_stack: SecureStack) -> SecureStack:
    """The secure stack with its Kafka Connect worker (SASL_SSL as ys-connect; each connector's
    clients as the connector's own principal), started on first use, stopped with the stack."""
    try:
        services = up(secure_stack.settings, postgres=True, connect=True, secure=True)
    except LocalStackError as exc:
        pytest.fail(f"Kafka Connect did not start on the secure stack: {exc}", pytrace=False)
    failing = [f"{s.name}: {s.detail or s.state}" for s in services if not s.healthy]
    if failing:
        pytest.fail(f"The secure stack with Connect is unhealthy: {'; '.join(failing)}")
    return secure_stack


@pytest.fixture(scope="session")
def three_brokers() -> Iterator[Settings]:
    """The session's 3-broker stack (plaintext, with its Kafka Connect worker, no PostgreSQL)
    in a fresh state folder on ports of its own (cluster_helpers.three_broker_settings),
    started on first use (~45 s) and taken down at the end of the session. Every test that
    needs 3 brokers shares it: names its topics uniquely, and kills brokers only through
    ``restored_brokers``."""
    # Not under pytest's basetemp, which a second pytest session on the machine prunes.
    home = Path(tempfile.mkdtemp(prefix="ys-three-brokers-"))
    settings = three_broker_settings(home / ".ys")
    try:
        try:
            start_three_brokers(settings)
        except AssertionError as exc:
            pytest.fail(str(exc), pytrace=False)
        yield settings
    finally:
        down(settings)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def restored_brokers(three_brokers: Settings) -> Iterator[Settings]:
    """``three_brokers`` for a test that kills or stops brokers: whole when the test starts, and
    afterwards the missing brokers are restarted and the cluster is whole again (all 3 in the
    metadata, nothing under-replicated) before the next test runs, or this fixture fails saying
    what is missing."""
    restore_brokers(three_brokers)  # a no-op (~0.5 s) unless an earlier restore failed
    yield three_brokers
    restore_brokers(three_brokers)


@pytest.fixture(params=["plaintext", "secure"])
def kafka_target(request: pytest.FixtureRequest) -> KafkaTarget:
    """The end-to-end tests' cluster: each such test runs on the plaintext stack and again on
    the secure one, its workers as their own principals (see targets.py)."""
    if request.param == "plaintext":
        return plaintext_target(request.getfixturevalue("local_stack"))
    return secure_target(request.getfixturevalue("secure_stack"))
