"""A secure local stack (``local up --secure``) for the integration tests, on a state folder and
ports of its own, so it never disturbs the plaintext stack at 9092 that everyone else uses.

``start_secure_stack`` is a context manager (the conftest's session fixture ``secure_stack``
wraps it); it yields a :class:`SecureStack` whose ``settings`` are the administrator's.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from ports import free_port

from ys_platform.clients.kafka import KafkaConnection
from ys_platform.local import LocalStackError, down, up
from ys_platform.local.config import CONTROLLER_PORT_OFFSET
from ys_platform.local.secrets import ADMIN_PRINCIPAL, Credential, read_credential
from ys_platform.settings import JMX_EXPORTER_PORT_OFFSET, Settings, load_settings

# Far from the plaintext stack (9092, 8083, 15432) and the other tests' own stacks (23092, ...).
KAFKA_PORT = 19092
CONNECT_PORT = 18083
POSTGRES_PORT = 15433


@dataclass(frozen=True)
class SecureStack:
    home: Path
    settings: Settings
    """The stack's settings with the administrator's Kafka connection (YS_KAFKA_* of
    secrets/ys-admin.env)."""
    admin: Credential

    @property
    def bootstrap_servers(self) -> str:
        return self.admin.bootstrap_servers

    def connection(self, **fields: object) -> KafkaConnection:
        """The administrator's connection, with other KafkaConnection fields if given."""
        return self.admin.connection(**fields)


def _is_free(port: int) -> bool:
    try:
        return free_port(port, 1) == port
    except AssertionError:
        return False


def _kafka_base_port(brokers: int) -> int:
    """A first broker port whose brokers, controllers and JMX exporters are all free."""
    for first in range(KAFKA_PORT, KAFKA_PORT + 50, 5):
        offsets = (0, CONTROLLER_PORT_OFFSET, JMX_EXPORTER_PORT_OFFSET)
        if all(_is_free(first + offset + i) for offset in offsets for i in range(brokers)):
            return first
    raise AssertionError(f"no free port range for a secure Kafka from {KAFKA_PORT}")


@contextmanager
def start_secure_stack(
    home: Path, *, brokers: int = 1, connect: bool = False, postgres: bool = False
) -> Iterator[SecureStack]:
    """Bring a secure stack up in ``home`` and take it down afterwards (its data stays)."""
    base = _kafka_base_port(brokers)
    ports = {
        "local_kafka_port": base,
        "connect_url": f"http://127.0.0.1:{free_port(CONNECT_PORT)}",
        "postgres_port": free_port(POSTGRES_PORT),
    }
    settings = load_settings(home=home, **ports)
    started = time.monotonic()
    try:
        try:
            services = up(
                settings, brokers=brokers, postgres=postgres, connect=connect, secure=True
            )
        except LocalStackError as exc:
            pytest.fail(f"The secure stack did not start: {exc}", pytrace=False)
        print(f"secure stack up in {time.monotonic() - started:.1f} s", file=sys.stderr)
        failing = [f"{s.name}: {s.detail or s.state}" for s in services if not s.healthy]
        if failing:
            pytest.fail(
                f"The secure stack is up but unhealthy: {'; '.join(failing)}", pytrace=False
            )
        admin = read_credential(home, ADMIN_PRINCIPAL)
        admin_settings = load_settings(home=home, **ports, kafka=admin.connection())
        yield SecureStack(home=home, settings=admin_settings, admin=admin)
    finally:
        down(settings)
