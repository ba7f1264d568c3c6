"""The clusters the end-to-end tests run on: the plaintext stack and the secure one.

A test that takes the ``kafka_target`` fixture runs once on each. Its ``settings`` set up the
test (topics, input, reading back): on the secure stack they are the administrator's, with
``YS_KAFKA_CREDENTIALS_DIR`` pointing at the stack's secrets, so every processor and sink the
test starts from them connects as its own principal (``KafkaConnection.as_principal``),
allowed only what the catalog grants it (:func:`grant_namespace`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from secure_stack import SecureStack

from ys_platform.connectors import connector_files
from ys_platform.local.secrets import ensure_credential
from ys_platform.security.acls import reconcile
from ys_platform.security.principals import principals
from ys_platform.security.users import ensure_scram_users
from ys_platform.settings import Settings


@dataclass(frozen=True)
class KafkaTarget:
    name: str
    """``plaintext`` or ``secure``."""
    settings: Settings
    _grant: Callable[[str], None]

    def namespace(self) -> str:
        """A fresh namespace for one test, its principals granted on the secure stack."""
        namespace = f"t{uuid.uuid4().hex[:8]}."
        self._grant(namespace)
        return namespace


def plaintext_target(settings: Settings) -> KafkaTarget:
    return KafkaTarget("plaintext", settings, lambda namespace: None)


def secure_target(stack: SecureStack) -> KafkaTarget:
    connection = stack.connection(credentials_dir=stack.home / "secrets")
    settings = stack.settings.model_copy(update={"kafka": connection})
    return KafkaTarget("secure", settings, lambda namespace: grant_namespace(stack, namespace))


def grant_namespace(stack: SecureStack, namespace: str) -> None:
    """What an operator does for a namespaced copy of the platform: a credential and a SCRAM
    user for each of its principals, and the catalog's ACLs for them (nothing more)."""
    found = principals(connector_files(stack.settings.connectors_dir), namespace)
    credentials = [
        ensure_credential(stack.home, p.name, bootstrap_servers=stack.bootstrap_servers)
        for p in found
    ]
    admin = stack.connection().admin()
    ensure_scram_users(admin, credentials)
    reconcile(admin, found)
