"""PostgreSQL connections through psycopg 3, with failures that name the server but not secrets.

A conninfo may be a URI (``postgresql://user:pw@host:port/db``) or key=value pairs and may carry
a password, so every message built here goes through `describe_target` or `redact_conninfo`,
and psycopg's own exceptions are not chained onto ours (their text is not ours to vet).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

__all__ = ["PostgresUnavailableError", "describe_target", "open_postgres", "redact_conninfo"]

_HINT = (
    "Start the local stack with `ys-platform local up`, or set YS_POSTGRES_DSN to a PostgreSQL "
    "you can log in to."
)
_MALFORMED = (
    "The PostgreSQL connection string is malformed (libpq could not parse it); it is not shown "
    "because it may contain a password. Check YS_POSTGRES_DSN."
)
# libpq's default port; shown when the conninfo names none.
_DEFAULT_PORT = "5432"


class PostgresUnavailableError(ConnectionError):
    """PostgreSQL could not be reached or refused us; the message names the target, not secrets."""


def _parse(conninfo: str) -> dict[str, str]:
    try:
        return {key: str(value) for key, value in conninfo_to_dict(conninfo).items()}
    except psycopg.ProgrammingError:
        # libpq's parse error quotes the text around the fault, which may be the password.
        raise ValueError(_MALFORMED) from None


def redact_conninfo(conninfo: str) -> str:
    """The conninfo as key=value pairs with the password replaced by ``***``, safe to log."""
    params = _parse(conninfo)
    if "password" in params:
        params["password"] = "***"
    return make_conninfo(**params)


def describe_target(conninfo: str) -> str:
    """``user@host:port/dbname`` for messages; unset parts show libpq's defaults."""
    params = _parse(conninfo)
    host = params.get("host") or "localhost (default socket)"
    port = params.get("port") or _DEFAULT_PORT
    user = params.get("user")
    dbname = params.get("dbname") or user or "(default)"
    return f"{user + '@' if user else ''}{host}:{port}/{dbname}"


def _scrub(text: str, conninfo: str) -> str:
    password = _parse(conninfo).get("password")
    return text.replace(password, "***") if password else text


@contextmanager
def open_postgres(
    conninfo: str, *, connect_timeout_s: int = 5, autocommit: bool = False
) -> Iterator[psycopg.Connection]:
    """A psycopg connection for one unit of work.

    On a clean exit of the block the transaction commits, on an exception it rolls back, and the
    connection closes either way (psycopg's ``with connection`` rules). A server that cannot be
    reached within ``connect_timeout_s`` seconds, or that refuses the login, raises
    `PostgresUnavailableError`; a malformed conninfo raises ValueError. Neither message contains
    the password.
    """
    target = describe_target(conninfo)  # also validates the conninfo before any network I/O
    try:
        connection = psycopg.connect(
            conninfo, connect_timeout=connect_timeout_s, autocommit=autocommit
        )
    except psycopg.OperationalError as exc:
        # libpq's text spans lines with tab indents; one line reads better in logs and the UI.
        reason = _scrub(" ".join(str(exc).split()), conninfo)
        raise PostgresUnavailableError(
            f"Cannot connect to PostgreSQL at {target} ({reason}). {_HINT}"
        ) from None
    with connection:
        yield connection
