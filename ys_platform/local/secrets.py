"""The secure stack's secrets folder, ``$YS_HOME/secrets/``: generated once, owner-only.

Every file here is 0600 in a 0700 folder, written atomically (a reader never sees half a key).
A principal's Kafka credential is one ``<principal>.env`` file of ``YS_KAFKA_*`` variables, so
a process gets it through its environment (``set -a; . secrets/ys-admin.env; set +a``), never on
a command line; :func:`load_env_file` reads the same file for code that starts processes.
"""

from __future__ import annotations

import os
import re
import secrets as random_tokens
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from ys_platform.clients.env_file import format_env_file, load_env_file
from ys_platform.clients.kafka import KafkaConnection

SECRETS_DIR = "secrets"
CA_FILE = "ca.pem"

SECURITY_PROTOCOL = "SASL_SSL"
SASL_MECHANISM = "SCRAM-SHA-512"

# The stack's administrator: a Kafka super user, bootstrapped into the metadata log when the
# storage is formatted (every other principal is created through the admin API as this user).
ADMIN_PRINCIPAL = "ys-admin"

# 32 bytes from the OS's CSPRNG, URL-safe base64 (43 characters of [A-Za-z0-9_-]): nothing a
# shell, a .properties file, a JAAS string or Kafka's SCRAM argument parser needs to escape.
PASSWORD_BYTES = 32

# SCRAM user names travel inside SCRAM messages and JAAS strings, where ',' '=' and quotes need
# escaping; principal names of the platform never need them, so they are refused outright.
_PRINCIPAL = re.compile(r"^[a-z][a-z0-9._-]{0,99}$")


def secrets_dir(home: Path) -> Path:
    return home / SECRETS_DIR


def ca_path(home: Path) -> Path:
    return secrets_dir(home) / CA_FILE


def ensure_secrets_dir(home: Path) -> Path:
    folder = secrets_dir(home)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkdir's mode is masked by the umask and ignored for an existing folder: set it outright.
    folder.chmod(0o700)
    return folder


def write_secret(path: Path, data: bytes | str) -> None:
    """Write ``path`` with mode 0600 (from its creation on), replacing it atomically."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, payload)
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)


def new_password() -> SecretStr:
    return SecretStr(random_tokens.token_urlsafe(PASSWORD_BYTES))


def check_principal(principal: str) -> str:
    if not _PRINCIPAL.match(principal):
        raise ValueError(
            f"principal {principal!r} must be lower-case letters, digits, '.', '_' or '-' and "
            "start with a letter (at most 100 characters)"
        )
    return principal


@dataclass(frozen=True)
class Credential:
    """A principal's SCRAM credential and the env file that carries it to its processes."""

    principal: str
    password: SecretStr
    env_file: Path
    bootstrap_servers: str
    ca_file: Path

    def environment(self) -> dict[str, str]:
        """The ``YS_KAFKA_*`` variables of this principal's clients (the password included)."""
        return {
            "YS_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "YS_KAFKA_SECURITY_PROTOCOL": SECURITY_PROTOCOL,
            "YS_KAFKA_SASL_MECHANISM": SASL_MECHANISM,
            "YS_KAFKA_SASL_USERNAME": self.principal,
            "YS_KAFKA_SASL_PASSWORD": self.password.get_secret_value(),
            "YS_KAFKA_SSL_CA_LOCATION": str(self.ca_file),
        }

    def connection(self, **fields: object) -> KafkaConnection:
        """A KafkaConnection as this principal (``fields``: other KafkaConnection fields)."""
        values: dict[str, object] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": SECURITY_PROTOCOL,
            "sasl_mechanism": SASL_MECHANISM,
            "sasl_username": self.principal,
            "sasl_password": self.password,
            "ssl_ca_location": self.ca_file,
        }
        return KafkaConnection.model_validate({**values, **fields})


def credential_file(home: Path, principal: str) -> Path:
    return secrets_dir(home) / f"{check_principal(principal)}.env"


def ensure_credential(home: Path, principal: str, *, bootstrap_servers: str) -> Credential:
    """The credential of ``principal``: its password generated on first use and kept in
    ``$YS_HOME/secrets/<principal>.env`` (0600), the file rewritten when the bootstrap list
    moves. Creating the SCRAM user on the cluster is a separate step (``ensure_scram_users``,
    or the storage format for the admin)."""
    path = credential_file(home, principal)
    password: SecretStr | None = None
    if path.exists():
        existing = load_env_file(path).get("YS_KAFKA_SASL_PASSWORD")
        password = SecretStr(existing) if existing else None
    credential = Credential(
        principal=principal,
        password=password or new_password(),
        env_file=path,
        bootstrap_servers=bootstrap_servers,
        ca_file=ca_path(home),
    )
    text = format_env_file(
        credential.environment(),
        f"Kafka client settings of principal {principal} on the secure local stack.\n"
        f"Generated by `ys-platform local up --secure`; load with: set -a; . {path}; set +a",
    )
    if not path.exists() or path.read_text() != text:
        ensure_secrets_dir(home)
        write_secret(path, text)
    return credential


def read_credential(home: Path, principal: str) -> Credential:
    """The credential ``ensure_credential`` wrote; FileNotFoundError when there is none."""
    path = credential_file(home, principal)
    variables = load_env_file(path)
    try:
        return Credential(
            principal=principal,
            password=SecretStr(variables["YS_KAFKA_SASL_PASSWORD"]),
            env_file=path,
            bootstrap_servers=variables["YS_KAFKA_BOOTSTRAP_SERVERS"],
            ca_file=Path(variables["YS_KAFKA_SSL_CA_LOCATION"]),
        )
    except KeyError as exc:
        raise ValueError(f"{path} has no {exc.args[0]}; remove it to generate it again") from None
