"""The secure stack as tests use it: the administrator's connection and throw-away SCRAM users."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)
from pydantic import SecretStr

from ys_platform.clients.env_file import load_env_file
from ys_platform.clients.kafka import KafkaConnection

# Kafka's default and minimum for SCRAM-SHA-512 is 4096 iterations; 8192 as the platform's users.
ITERATIONS = 8192
# A new SCRAM user reaches every broker through the metadata log: ~100 ms seen here.
USER_PROPAGATION_S = 15.0


@dataclass
class SecureCluster:
    admin: KafkaConnection
    """A super user's connection (the stack's administrator)."""
    environment: dict[str, str]
    """The administrator's ``YS_KAFKA_*`` variables (its env file), for the CLI."""
    _users: set[str] = field(default_factory=set)

    def user(self, name: str) -> KafkaConnection:
        """A SCRAM user ``name`` with a fresh password, once it can log in; its connection."""
        password = secrets.token_urlsafe(32)
        upsert = UserScramCredentialUpsertion(
            name, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, ITERATIONS), password.encode()
        )
        # The client must outlive its futures: one destroyed first fails them with _DESTROY.
        admin = self.admin.admin()
        for future in admin.alter_user_scram_credentials([upsert]).values():
            future.result(30)
        self._users.add(name)
        connection = self.admin.model_copy(
            update={"sasl_username": name, "sasl_password": SecretStr(password)}
        )
        deadline = time.monotonic() + USER_PROPAGATION_S
        while True:
            try:
                connection.admin().list_topics(timeout=5)
                return connection
            except KafkaException as exc:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"user {name} cannot log in {USER_PROPAGATION_S}s after its creation"
                    ) from exc
                time.sleep(0.2)

    def forget(self, names: Iterable[str]) -> None:
        """Delete the users ``names`` and every ACL of theirs (a test's leftovers)."""
        names = list(names)
        admin = self.admin.admin()
        filters = [
            AclBindingFilter(
                ResourceType.ANY,
                None,
                ResourcePatternType.ANY,
                f"User:{name}",
                None,
                AclOperation.ANY,
                AclPermissionType.ANY,
            )
            for name in names
        ]
        for future in admin.delete_acls(filters).values():
            future.result(30)
        gone = [
            UserScramCredentialDeletion(name, ScramMechanism.SCRAM_SHA_512)
            for name in names
            if name in self._users
        ]
        if gone:
            for future in admin.alter_user_scram_credentials(gone).values():
                future.result(30)
        self._users.difference_update(names)


def generated_passwords(secrets_folder: Path) -> dict[str, str]:
    """Every password the secure stack generated, by the file and variable that hold it."""
    found = {}
    for path in sorted(secrets_folder.glob("*.env")):
        for name, value in load_env_file(path).items():
            if name.endswith("PASSWORD") and value:
                found[f"{path.name}:{name}"] = value
    assert len(found) >= 10, found.keys()
    return found


def leaks(passwords: dict[str, str], where: str, text: str | bytes) -> list[str]:
    """``"<owner> in <where>"`` for each password found in ``text``."""
    if isinstance(text, bytes):
        return [
            f"{owner} in {where}" for owner, value in passwords.items() if value.encode() in text
        ]
    return [f"{owner} in {where}" for owner, value in passwords.items() if value in text]
