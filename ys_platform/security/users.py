"""SCRAM users on the cluster, created (or their password reset) through the admin API.

The administrator of the secure local stack is bootstrapped into the metadata log when the
storage is formatted; every other principal is created here, as that administrator, from the
credential :func:`ys_platform.local.secrets.ensure_credential` generated for it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from pydantic import SecretStr

MECHANISM = ScramMechanism.SCRAM_SHA_512
# Kafka's own default for SCRAM credentials (kafka-storage, kafka-configs): 4096 is the
# minimum SCRAM-SHA-512 accepts, and every client login repeats the PBKDF2 work.
ITERATIONS = 4096

# An alteration is one controller write; 30 s covers a quorum electing a leader after a start.
REQUEST_TIMEOUT_S = 30.0
# The new credential is visible to describe once the controller has committed it; the brokers
# apply it from the metadata log milliseconds later.
VISIBLE_TIMEOUT_S = 30.0


class ScramUser(Protocol):
    """What a SCRAM user needs: a name and a password (ys_platform.local.secrets.Credential)."""

    @property
    def principal(self) -> str: ...

    @property
    def password(self) -> SecretStr: ...


class ScramUserError(RuntimeError):
    """A SCRAM user could not be created; the message names it (never its password)."""


def ensure_scram_users(
    admin: AdminClient,
    users: Sequence[ScramUser],
    timeout_s: float = REQUEST_TIMEOUT_S,
) -> list[str]:
    """Create each user's SCRAM-SHA-512 credential, or set it to the given password.

    An upsert every time rather than "create if missing": the password in the user's
    credential file is the truth, and a salt changes nothing for clients holding the password.
    Returns the names of the users that had no SCRAM-SHA-512 credential before. Raises
    ScramUserError naming the users that failed.
    """
    if not users:
        return []
    names = [user.principal for user in users]
    existing = _with_credential(admin, names, timeout_s)
    info = ScramCredentialInfo(MECHANISM, ITERATIONS)
    alterations = [
        UserScramCredentialUpsertion(
            user.principal, info, user.password.get_secret_value().encode()
        )
        for user in users
    ]
    failures = []
    for name, future in admin.alter_user_scram_credentials(
        alterations, request_timeout=timeout_s
    ).items():
        try:
            future.result()
        except KafkaException as exc:
            failures.append(f"{name}: {exc.args[0].str()}")
    if failures:
        raise ScramUserError("Creating SCRAM users failed: " + "; ".join(failures))
    _wait_visible(admin, names, timeout_s)
    return [name for name in names if name not in existing]


def _with_credential(admin: AdminClient, names: list[str], timeout_s: float) -> set[str]:
    """The users among ``names`` that hold a SCRAM-SHA-512 credential now."""
    found = set()
    for name, future in admin.describe_user_scram_credentials(
        names, request_timeout=timeout_s
    ).items():
        try:
            description = future.result()
        except KafkaException:
            # RESOURCE_NOT_FOUND: the user has no credential at all.
            continue
        if any(info.mechanism == MECHANISM for info in description.scram_credential_infos):
            found.add(name)
    return found


def _wait_visible(admin: AdminClient, names: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + min(timeout_s, VISIBLE_TIMEOUT_S)
    while True:
        missing = set(names) - _with_credential(admin, names, timeout_s)
        if not missing:
            return
        if time.monotonic() > deadline:
            raise ScramUserError(
                f"SCRAM users {', '.join(sorted(missing))} were accepted but are not visible "
                f"after {VISIBLE_TIMEOUT_S:.0f} s; is the controller quorum healthy "
                "(`ys-platform local status`)?"
            )
        time.sleep(0.1)
