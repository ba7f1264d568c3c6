"""The secure stack's PostgreSQL passwords: one per role, in a libpq password file.

``$YS_HOME/secrets/pgpass`` (0600) is the one place the passwords live. libpq reads it itself
(``PGPASSFILE``, or ``passfile=`` in a conninfo), so the platform's DSNs, Dagster's resource
config and every command line stay password-free; ``secrets/postgres.env`` only names the file.
The server is only ever sent SCRAM-SHA-256 verifiers (:func:`scram_sha_256_verifier`), never a
password, so no password reaches its logs or its catalog in clear.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from ys_platform.local.config import LOOPBACK
from ys_platform.local.secrets import (
    ensure_secrets_dir,
    format_env_file,
    new_password,
    secrets_dir,
    write_secret,
)

PGPASS_FILE = "pgpass"
ENV_FILE = "postgres.env"

# PostgreSQL's own default for password_encryption=scram-sha-256 (scram_iterations, PG 16).
SCRAM_ITERATIONS = 4096
SALT_BYTES = 16


@dataclass(frozen=True)
class PostgresSecrets:
    passwords: dict[str, SecretStr]
    """Role name -> password."""
    passfile: Path
    env_file: Path

    def password(self, role: str) -> SecretStr:
        return self.passwords[role]


def scram_sha_256_verifier(
    password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS
) -> str:
    """The verifier PostgreSQL stores for a SCRAM-SHA-256 password (RFC 5802/7677), in the
    ``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`` form that CREATE/ALTER ROLE
    ... PASSWORD and initdb --pwfile store as given.

    The passwords here are ASCII, which SASLprep leaves as they are.
    """
    salt = salt if salt is not None else os.urandom(SALT_BYTES)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _read_passfile(path: Path) -> dict[str, str]:
    """Role -> password of a password file written by :func:`ensure_postgres_secrets`."""
    found: dict[str, str] = {}
    try:
        text = path.read_text()
    except FileNotFoundError:
        return found
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        # host:port:database:user:password; our fields never contain ':' or '\\'.
        parts = line.split(":")
        if len(parts) == 5:
            found[parts[3]] = parts[4]
    return found


def ensure_postgres_secrets(home: Path, port: int, roles: tuple[str, ...]) -> PostgresSecrets:
    """A password per role (generated once, kept after), written as a libpq password file for
    127.0.0.1:``port``; rewritten when the port moves or a role is new."""
    folder = secrets_dir(home)
    passfile = folder / PGPASS_FILE
    env_file = folder / ENV_FILE
    existing = _read_passfile(passfile)
    passwords = {
        role: SecretStr(existing[role]) if role in existing else new_password() for role in roles
    }
    lines = ["# libpq password file of the secure local stack (ys-platform local up --secure)"]
    lines += [
        f"{LOOPBACK}:{port}:*:{role}:{password.get_secret_value()}"
        for role, password in passwords.items()
    ]
    text = "\n".join(lines) + "\n"
    ensure_secrets_dir(home)
    if not passfile.exists() or passfile.read_text() != text:
        write_secret(passfile, text)
    env = format_env_file(
        {"PGPASSFILE": str(passfile)},
        "PostgreSQL of the secure local stack: libpq (psycopg) reads the role's password from\n"
        f"PGPASSFILE. Load with: set -a; . {env_file}; set +a",
    )
    if not env_file.exists() or env_file.read_text() != env:
        write_secret(env_file, env)
    return PostgresSecrets(passwords=passwords, passfile=passfile, env_file=env_file)
