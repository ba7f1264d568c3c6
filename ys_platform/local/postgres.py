"""PostgreSQL: a private cluster in the state folder, or a check of YS_POSTGRES_DSN's server."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import time
from pathlib import Path

from ys_platform.local import procs
from ys_platform.local.config import LOOPBACK, pg_hba_conf, postgresql_conf
from ys_platform.local.postgres_secrets import (
    PGPASS_FILE,
    PostgresSecrets,
    ensure_postgres_secrets,
    scram_sha_256_verifier,
)
from ys_platform.local.secrets import secrets_dir
from ys_platform.local.state import (
    INSTALL_HINT,
    Layout,
    LocalStackError,
    ServiceStatus,
    read_secure,
)
from ys_platform.settings import Settings

NAME = "postgres"
PG_ROOT = Path("/usr/lib/postgresql")
# The version Debian 12's `postgresql` package installs and the stack is tested with.
PREFERRED_VERSION = 15
# Debezium's pgoutput and the platform's SQL need 13+ (the oldest version still supported).
MIN_VERSION = 13
# The Debian package's system user; PostgreSQL refuses to run as root.
SERVICE_USER = "postgres"
APP_ROLE = "yieldsensei"
APP_DATABASE = "yieldsensei"
# The secure stack's role for the Debezium connector: LOGIN, REPLICATION and SELECT on the
# captured tables only (the plaintext stack's connector logs in as APP_ROLE).
DEBEZIUM_ROLE = "ys_debezium"
SECURE_ROLES = (SERVICE_USER, APP_ROLE, DEBEZIUM_ROLE)
# initdb reads the superuser's password from a file: here its SCRAM verifier, not the password.
INITDB_PWFILE = ".initdb-superuser.verifier"
INCLUDE_FILE = "ys_platform.conf"

# pg_ctl -w waits this long; a fresh cluster starts in about a second, crash recovery of a dev
# database in a few more.
START_TIMEOUT_S = 60
# A health check on loopback either answers at once or the server is not there.
CONNECT_TIMEOUT_S = 2


def _bindir(data: Path) -> Path:
    versions = sorted(
        int(path.name)
        for path in PG_ROOT.glob("*")
        if path.name.isdigit() and (path / "bin" / "initdb").exists()
    )
    version_file = data / "PG_VERSION"
    if version_file.exists():
        # A data directory only runs under the major version that created it.
        needed = int(version_file.read_text().strip())
        if needed not in versions:
            raise LocalStackError(
                f"The cluster in {data} was created by PostgreSQL {needed}, whose server binaries "
                f"are not in {PG_ROOT}/{needed}/bin: `apt-get install -y postgresql-{needed}`, "
                f"or remove {data} to start afresh."
            )
        return PG_ROOT / str(needed) / "bin"
    usable = [v for v in versions if v >= MIN_VERSION]
    if not usable:
        raise LocalStackError(
            f"PostgreSQL server binaries (initdb, pg_ctl) were not found in {PG_ROOT}/*/bin; "
            f"they come with the Debian package `postgresql`. {INSTALL_HINT}"
        )
    chosen = PREFERRED_VERSION if PREFERRED_VERSION in usable else usable[-1]
    return PG_ROOT / str(chosen) / "bin"


def _as_service_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", SERVICE_USER, "--", *command]


def _service_account() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        raise LocalStackError(
            f"Running as root, the cluster must run as the `{SERVICE_USER}` user, which does not "
            f"exist; the Debian package `postgresql` creates it. {INSTALL_HINT}"
        ) from None


def _make_reachable(target: Path) -> None:
    """Let the postgres user enter every folder above target (root runs only).

    PostgreSQL runs as `postgres` while the state folder belongs to root, and CI puts it under
    `mktemp -d` (mode 0700). We grant search permission (x: enter, not list) on the folders
    that block the way and that the current user owns, and say so; the alternative, a cluster
    outside the state folder behind a symlink, would outlive `rm -rf .ys` and surprise people.
    A blocking folder owned by someone else is not ours to change: that is an error.
    """
    account = _service_account()
    groups = set(os.getgrouplist(account.pw_name, account.pw_gid))
    for folder in reversed(target.parents):
        info = folder.stat()
        if info.st_uid == account.pw_uid:
            bit = stat.S_IXUSR
        elif info.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if info.st_mode & bit:
            continue
        if info.st_uid != os.geteuid():
            raise LocalStackError(
                f"The `{SERVICE_USER}` user cannot enter {folder}, which holds the state folder; "
                "set YS_HOME to a folder it can reach (e.g. /var/tmp/ys)."
            )
        folder.chmod(stat.S_IMODE(info.st_mode) | bit)
        procs.progress(
            f"postgres: note: allowed others to enter (not list) {folder}, so the "
            f"`{SERVICE_USER}` user can reach the cluster in it"
        )


def _run(command: list[str], what: str, log: Path | None = None) -> None:
    # cwd=/ because the service user may not be allowed into the caller's current folder.
    result = subprocess.run(
        _as_service_user(command), capture_output=True, text=True, cwd="/", check=False
    )
    if result.returncode != 0:
        where = f"; see {log}" if log else ""
        raise LocalStackError(
            f"postgres: {what} failed{where}:\n" + (result.stdout + result.stderr).strip()[-3000:]
        )


def _prepare(layout: Layout, bindir: Path, secrets: PostgresSecrets | None) -> None:
    data, log = layout.postgres_data, layout.log(NAME)
    layout.logs.mkdir(parents=True, exist_ok=True)
    log.touch()
    account = _service_account() if os.geteuid() == 0 else None
    if account:
        _make_reachable(data)
        os.chown(log, account.pw_uid, account.pw_gid)
    if (data / "PG_VERSION").exists():
        return
    data.mkdir(parents=True, exist_ok=True)
    if any(data.iterdir()):
        raise LocalStackError(f"{data} is not empty and holds no PostgreSQL cluster; remove it.")
    if account:
        os.chown(data, account.pw_uid, account.pw_gid)
    data.chmod(0o700)
    procs.progress(f"postgres: creating a cluster in {data}")
    auth = ["--auth=trust"]
    pwfile = layout.home / INITDB_PWFILE
    if secrets:
        # The service user must read it (initdb runs as postgres when we are root), so it is
        # not in the root-only secrets folder; it holds a verifier, useless for logging in.
        verifier = scram_sha_256_verifier(secrets.password(SERVICE_USER).get_secret_value())
        pwfile.write_text(verifier + "\n")
        pwfile.chmod(0o600)
        if account:
            os.chown(pwfile, account.pw_uid, account.pw_gid)
        auth = ["--auth=scram-sha-256", f"--pwfile={pwfile}"]
    try:
        _run(
            # C collation with UTF8 encoding: available on every machine (no locale package
            # needed) and sorts by code point, the same on a laptop and in CI.
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                SERVICE_USER,
                "-E",
                "UTF8",
                "--locale=C",
                *auth,
            ],
            "initdb",
        )
    finally:
        pwfile.unlink(missing_ok=True)
    _write_owned(data / "pg_hba.conf", pg_hba_conf(secure=secrets is not None))
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(
            f"\n# Settings of the ys-platform local stack (port, WAL):\ninclude = "
            f"'{INCLUDE_FILE}'\n"
        )


def _write_owned(path: Path, text: str) -> None:
    """Write a file in the data directory, owned like the directory (postgres when we are root)."""
    path.write_text(text)
    owner = path.parent.stat()
    os.chown(path, owner.st_uid, owner.st_gid)


def running_pid(layout: Layout) -> int | None:
    try:
        pid = int((layout.postgres_data / "postmaster.pid").read_text().split("\n", 1)[0])
    except (FileNotFoundError, ValueError, PermissionError):
        return None
    return pid if procs.owns(pid, str(layout.postgres_data)) else None


def up(settings: Settings, layout: Layout) -> ServiceStatus:
    if not settings.uses_local_postgres:
        found = status(settings, layout)
        if not found.healthy:
            raise LocalStackError(f"YS_POSTGRES_DSN does not answer: {found.detail}")
        return found
    secrets = (
        ensure_postgres_secrets(layout.home, settings.postgres_port, SECURE_ROLES)
        if read_secure(layout)
        else None
    )
    if running_pid(layout) is None:
        _start(settings, layout, secrets)
    _ensure_app_database(settings, secrets)
    if secrets:
        grant_capture(settings, secrets)
    return status(settings, layout)


def postgres_secrets(settings: Settings, layout: Layout) -> PostgresSecrets | None:
    """The passwords of a secure state folder's cluster (None on a plaintext one)."""
    if not settings.uses_local_postgres or not read_secure(layout):
        return None
    return ensure_postgres_secrets(layout.home, settings.postgres_port, SECURE_ROLES)


def _start(settings: Settings, layout: Layout, secrets: PostgresSecrets | None) -> None:
    bindir = _bindir(layout.postgres_data)
    port, log = settings.postgres_port, layout.log(NAME)
    if procs.port_open(port):
        raise LocalStackError(
            f"postgres: {LOOPBACK}:{port} is already in use by another process; stop it, or set "
            "YS_POSTGRES_PORT to a free port."
        )
    _prepare(layout, bindir, secrets)
    # Rewritten on every start so a changed YS_POSTGRES_PORT takes effect.
    _write_owned(layout.postgres_data / INCLUDE_FILE, postgresql_conf(port))
    procs.progress(f"postgres: waiting for {LOOPBACK}:{port} ...", end=" ")
    start = time.monotonic()
    try:
        _run(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(layout.postgres_data),
                "-l",
                str(log),
                "-w",
                "-t",
                str(START_TIMEOUT_S),
                "start",
            ],
            "pg_ctl start",
            log,
        )
    except LocalStackError as exc:
        procs.progress("failed")
        raise LocalStackError(
            f"{exc}\nLast lines of the log:\n  " + "\n  ".join(procs.tail_lines(log, 10))
        ) from None
    procs.progress(f"ready in {time.monotonic() - start:.1f} s")


def _superuser_conninfo(
    settings: Settings, secrets: PostgresSecrets | None, dbname: str = "postgres"
) -> str:
    conninfo = (
        f"host={LOOPBACK} port={settings.postgres_port} dbname={dbname} "
        f"user={SERVICE_USER} connect_timeout={CONNECT_TIMEOUT_S}"
    )
    # libpq reads the password from the file itself: none in this string.
    return f"{conninfo} passfile={secrets.passfile}" if secrets else conninfo


def _ensure_app_database(settings: Settings, secrets: PostgresSecrets | None) -> None:
    """The application's role and database. Plaintext: one role, LOGIN for the platform and
    REPLICATION for Debezium. Secure: the platform's role LOGIN only, Debezium's its own, each
    with its password (sent as a SCRAM verifier), set again on every `up` from the secrets."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(_superuser_conninfo(settings, secrets), autocommit=True) as conn:
        roles = {APP_ROLE: "LOGIN REPLICATION"}
        if secrets:
            roles = {SERVICE_USER: "", APP_ROLE: "LOGIN", DEBEZIUM_ROLE: "LOGIN REPLICATION"}
        for role, attributes in roles.items():
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE ROLE {} " + attributes).format(sql.Identifier(role)))
            if secrets:
                verifier = scram_sha_256_verifier(secrets.password(role).get_secret_value())
                conn.execute(
                    sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                        sql.Identifier(role), sql.Literal(verifier)
                    )
                )
        if not conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [APP_DATABASE]
        ).fetchone():
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(APP_DATABASE), sql.Identifier(APP_ROLE)
                )
            )


def grant_capture(
    settings: Settings, secrets: PostgresSecrets, dbname: str = APP_DATABASE
) -> list[str]:
    """SELECT on the captured tables of ``dbname`` (those the migrations have made so far) for
    Debezium's role; returns the tables granted. Run by `up` and after the migrations on a
    secure stack."""
    import psycopg
    from psycopg import sql

    from ys_platform.postgres import CAPTURED

    names = [c.table for c in CAPTURED]
    conninfo = _superuser_conninfo(settings, secrets, dbname=dbname)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        existing = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename = ANY(%s) ORDER BY tablename",
                [names],
            ).fetchall()
        ]
        for table in existing:
            conn.execute(
                sql.SQL("GRANT SELECT ON TABLE {} TO {}").format(
                    sql.Identifier("public", table), sql.Identifier(DEBEZIUM_ROLE)
                )
            )
    return existing


def _endpoint(settings: Settings) -> str:
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(settings.postgres_conninfo())
    # Host, port and database only: the DSN may carry a password.
    host, port = params.get("host", "localhost"), params.get("port", 5432)
    return f"{host}:{port}/{params.get('dbname', '')}"


def status(settings: Settings, layout: Layout) -> ServiceStatus:
    import psycopg

    endpoint = _endpoint(settings)
    pid = running_pid(layout) if settings.uses_local_postgres else None
    if settings.uses_local_postgres and pid is None:
        return ServiceStatus(NAME, endpoint, "stopped", healthy=False)
    conninfo = settings.postgres_conninfo()
    passfile = secrets_dir(layout.home) / PGPASS_FILE
    if settings.uses_local_postgres and read_secure(layout) and passfile.exists():
        conninfo = f"{conninfo} passfile={passfile}"
    try:
        with psycopg.connect(conninfo, connect_timeout=CONNECT_TIMEOUT_S) as c:
            row = c.execute(
                "SELECT current_setting('server_version'), current_setting('wal_level')"
            ).fetchone()
        healthy = True
        detail = f"PostgreSQL {row[0].split()[0]}, wal_level={row[1]}" if row else ""
    except psycopg.Error as exc:
        healthy, detail = False, str(exc).strip().splitlines()[0]
    state = "running" if settings.uses_local_postgres else "external"
    memory = procs.memory_bytes(pid) if pid is not None else None
    return ServiceStatus(NAME, endpoint, state, healthy, pid, memory, detail)


def down(settings: Settings, layout: Layout) -> bool:
    """Stop the local cluster if it runs; True when it did."""
    if not settings.uses_local_postgres or running_pid(layout) is None:
        return False
    procs.progress("postgres: stopping ...")
    pg_ctl = str(_bindir(layout.postgres_data) / "pg_ctl")
    try:
        # fast: roll back open transactions and disconnect clients, then a clean checkpoint.
        _run(
            [
                pg_ctl,
                "-D",
                str(layout.postgres_data),
                "-m",
                "fast",
                "-w",
                "-t",
                str(int(procs.STOP_GRACE_S)),
                "stop",
            ],
            "pg_ctl stop",
            layout.log(NAME),
        )
    except LocalStackError:
        # immediate: no checkpoint, crash recovery on the next start; better than a hang.
        _run(
            [pg_ctl, "-D", str(layout.postgres_data), "-m", "immediate", "-w", "stop"],
            "pg_ctl stop -m immediate",
            layout.log(NAME),
        )
    return True
