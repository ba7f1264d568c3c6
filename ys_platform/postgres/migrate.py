"""Versioned SQL migrations: ``migrations/NNNN_name.sql``, applied in order, each exactly once.

``migrate(conninfo)`` applies the pending ones, each in its own transaction together with its
row in ``schema_migrations``, so a failing migration leaves nothing behind and the next run
retries it. A session advisory lock serialises concurrent runs (two Dagster runs, the CLI and a
run). A migration already applied whose file has changed since is an error, not a silent skip:
the database would otherwise differ from what the files say.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from ys_platform.clients.postgres import open_postgres

__all__ = ["Migration", "MigrationError", "applied_migrations", "load_migrations", "migrate"]

_FILENAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
# Any constant works; it only has to be the same for every process running migrations.
# (ASCII "ysmigrat" read as a signed 64-bit integer.)
_LOCK_ID = 0x79736D6967726174

_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(RuntimeError):
    """The migration files are inconsistent, or one of them failed to apply."""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def filename(self) -> str:
        return f"{self.version}_{self.name}.sql"


def load_migrations() -> list[Migration]:
    """The packaged migrations in version order; MigrationError on a bad name or a gap."""
    folder = resources.files("ys_platform.postgres") / "migrations"
    found: list[Migration] = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILENAME.match(entry.name)
        if match is None:
            raise MigrationError(
                f"Migration file {entry.name!r} is not named NNNN_lowercase_name.sql."
            )
        found.append(Migration(match["version"], match["name"], entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    # Versions are 0001, 0002, ... with no gap or duplicate: a gap is usually a file that was
    # renamed or not added to the package, and applying past it would skip its changes.
    expected = [f"{n:04d}" for n in range(1, len(found) + 1)]
    versions = [m.version for m in found]
    if versions != expected:
        raise MigrationError(f"Migration versions must run 0001.. without gaps; found {versions}.")
    return found


def applied_migrations(conn: psycopg.Connection) -> dict[str, str]:
    """``{version: checksum}`` of what the database has applied (empty before the first run)."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return {}
    rows = conn.execute("SELECT version, checksum FROM schema_migrations").fetchall()
    return {str(version): str(checksum) for version, checksum in rows}


def migrate(conninfo: str, *, connect_timeout_s: int = 5) -> list[str]:
    """Apply the pending migrations; return the file names applied (``[]`` when up to date)."""
    migrations = load_migrations()
    applied_now: list[str] = []
    with open_postgres(conninfo, connect_timeout_s=connect_timeout_s, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            conn.execute(_LEDGER)
            done = applied_migrations(conn)
            for migration in migrations:
                known = done.get(migration.version)
                if known is not None:
                    if known != migration.checksum:
                        raise MigrationError(
                            f"Migration {migration.filename} was changed after it was applied; "
                            "add a new migration instead of editing an applied one."
                        )
                    continue
                _apply(conn, migration)
                applied_now.append(migration.filename)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    return applied_now


def _apply(conn: psycopg.Connection, migration: Migration) -> None:
    try:
        with conn.transaction():
            # No parameters: psycopg sends the file as one simple query, many statements.
            conn.execute(migration.sql.encode())
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
    except psycopg.Error as exc:
        # The SQL error names the statement's problem; the file name says where to look.
        raise MigrationError(f"Migration {migration.filename} failed: {exc}") from None
