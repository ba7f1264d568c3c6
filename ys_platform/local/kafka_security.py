"""What a secure local Kafka needs before its first JVM starts: certificates, the brokers' and the
administrator's SCRAM credentials, and the storage-format arguments that bootstrap them.

Everything lands in ``$YS_HOME/secrets/`` (see :mod:`ys_platform.local.secrets`); the brokers'
server.properties only names those files.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from ys_platform.clients.jaas import jaas_config
from ys_platform.local import tls
from ys_platform.local.config import (
    JAAS_KEY,
    SCRAM_MECHANISM,
    BrokerSecurity,
)
from ys_platform.local.secrets import (
    ADMIN_PRINCIPAL,
    Credential,
    credential_file,
    ensure_credential,
    ensure_secrets_dir,
    read_credential,
    secrets_dir,
    write_secret,
)
from ys_platform.local.state import Layout, LocalStackError

# The brokers' own principal: SCRAM between brokers, the certificate's CN on the controller
# listener. Not the administrator's: a broker's config then holds no credential a human uses.
BROKER_PRINCIPAL = tls.BROKER_NAME
SUPER_USERS = (ADMIN_PRINCIPAL, BROKER_PRINCIPAL)

# The properties file the brokers' FileConfigProvider reads their JAAS line from.
BROKER_JAAS_FILE = f"{BROKER_PRINCIPAL}.jaas.properties"
# kafka-storage reads arguments from a file named "@path", one argument a line (argparse4j's
# fromFilePrefix, which StorageTool enables): the SCRAM passwords stay off the command line.
FORMAT_ARGS_FILE = ".format-scram.args"


@dataclass(frozen=True)
class SecureKafka:
    """The secure stack's files and credentials, ready for server.properties and the format."""

    security: BrokerSecurity
    admin: Credential
    broker: Credential
    made: tuple[str, ...]
    """What this call generated (for the progress line): "CA", "ys-admin credential", ..."""


def prepare(layout: Layout, bootstrap_servers: str, formatted: bool) -> SecureKafka:
    """Make or reuse the secrets of a secure cluster whose brokers are ``bootstrap_servers``.

    ``formatted``: whether some node's storage already holds the SCRAM users, whose passwords
    are then fixed — a lost credential file cannot be made again, and that is an error.
    """
    home = layout.home
    folder = ensure_secrets_dir(home)
    made: list[str] = []
    for principal in SUPER_USERS:
        if not credential_file(home, principal).exists():
            if formatted:
                raise LocalStackError(
                    f"{credential_file(home, principal)} is missing, but the Kafka storage in "
                    f"{layout.kafka} was formatted with that principal's password, which cannot "
                    f"be recovered. Remove {layout.kafka} (its topics are lost) so the next "
                    "`ys-platform local up --secure` formats it with new credentials, or restore "
                    "the file."
                )
            made.append(f"{principal} credential")
    admin = ensure_credential(home, ADMIN_PRINCIPAL, bootstrap_servers=bootstrap_servers)
    broker = ensure_credential(home, BROKER_PRINCIPAL, bootstrap_servers=bootstrap_servers)
    files, certificates = tls.ensure_tls(folder)
    made += certificates
    jaas_file = folder / BROKER_JAAS_FILE
    jaas = f"{JAAS_KEY}={_jaas(broker)}\n"
    if not jaas_file.exists() or jaas_file.read_text() != jaas:
        write_secret(jaas_file, jaas)
    security = BrokerSecurity(
        keystore=files.broker_keystore,
        truststore=files.ca,
        credential_file=jaas_file,
        super_users=SUPER_USERS,
    )
    return SecureKafka(security=security, admin=admin, broker=broker, made=tuple(made))


def _jaas(credential: Credential) -> str:
    return jaas_config(
        SCRAM_MECHANISM, credential.principal, credential.password.get_secret_value()
    )


@contextlib.contextmanager
def format_arguments(layout: Layout, secure: SecureKafka) -> Iterator[list[str]]:
    """The extra kafka-storage format arguments that add the SCRAM users, as ``["@file"]``.

    The file (0600, in the secrets folder) exists only while the format runs.
    """
    path = secrets_dir(layout.home) / FORMAT_ARGS_FILE
    lines = []
    for credential in (secure.admin, secure.broker):
        password = credential.password.get_secret_value()
        scram = f"{SCRAM_MECHANISM}=[name={credential.principal},password={password}]"
        lines += ["--add-scram", scram]
    write_secret(path, "\n".join(lines) + "\n")
    try:
        yield [f"@{path}"]
    finally:
        path.unlink(missing_ok=True)


def admin_credential(layout: Layout) -> Credential:
    """The administrator's credential of a secure state folder, for the stack's own checks."""
    try:
        return read_credential(layout.home, ADMIN_PRINCIPAL)
    except FileNotFoundError:
        raise LocalStackError(
            f"{credential_file(layout.home, ADMIN_PRINCIPAL)} is missing: the secure stack in "
            f"{layout.home} cannot be reached without it. Restore it, or remove {layout.kafka} "
            "and run `ys-platform local up --secure` to format the cluster afresh."
        ) from None
    except ValueError as exc:
        raise LocalStackError(str(exc)) from None


def admin_client_config(layout: Layout, bootstrap_servers: str) -> dict[str, str]:
    """librdkafka settings of the administrator toward ``bootstrap_servers`` (one broker, or
    all): secrets included, to hand to a client and never to print."""
    credential = admin_credential(layout)
    config = credential.connection(bootstrap_servers=bootstrap_servers).config()
    config.pop("client.id", None)
    return {key: str(value) for key, value in config.items()}


def env_hint(credential: Credential) -> str:
    """How to give a shell the administrator's settings (printed by `up`; no secret in it)."""
    return f"set -a; . {credential.env_file}; set +a"
