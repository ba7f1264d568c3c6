"""The clusters the end-to-end tests run on: the plaintext stack and the secure one.

A test that takes the ``kafka_target`` fixture runs once on each. Its ``settings`` set up the
test (topics, input, reading back): on the secure stack they are the administrator's, with
``YS_KAFKA_CREDENTIALS_DIR`` pointing at the stack's secrets, so every processor and sink the
test starts from them connects as its own principal (``KafkaConnection.as_principal``),
allowed only what the catalog grants it (:meth:`KafkaTarget.grant`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from secure_stack import SecureStack

from ys_platform.connectors import connector_files
from ys_platform.local.principals import ensure_principals
from ys_platform.security.acls import reconcile
from ys_platform.security.principals import Principal, principals
from ys_platform.settings import Settings


@dataclass(frozen=True)
class KafkaTarget:
    name: str
    """``plaintext`` or ``secure``."""
    settings: Settings
    _grant: Callable[[Sequence[Principal]], None]

    def namespace(self) -> str:
        """A fresh namespace for one test, its principals granted on the secure stack."""
        namespace = f"t{uuid.uuid4().hex[:8]}."
        self.grant(principals(connector_files(self.settings.connectors_dir), namespace))
        return namespace

    def grant(self, found: Sequence[Principal]) -> None:
        """What an operator does for new principals on the secure stack (nothing on the
        plaintext one): a credential and a SCRAM user for each, and their catalog ACLs."""
        self._grant(found)


def plaintext_target(settings: Settings) -> KafkaTarget:
    return KafkaTarget("plaintext", settings, lambda found: None)


def secure_target(stack: SecureStack) -> KafkaTarget:
    connection = stack.connection(credentials_dir=stack.home / "secrets")
    settings = stack.settings.model_copy(update={"kafka": connection})
    return KafkaTarget("secure", settings, lambda found: _grant(stack, found))


def _grant(stack: SecureStack, found: Sequence[Principal]) -> None:
    admin = stack.connection().admin()
    ensure_principals(stack.home, admin, stack.bootstrap_servers, found)
    reconcile(admin, found)
