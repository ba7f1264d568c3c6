"""What every command shares: exit codes, loading the settings, and turning errors into them.

A command is a function ``(args, settings) -> ExitCode``. It returns the code of an outcome it
decided itself (drift found, a connector unhealthy, a service stopped) and raises for anything
else; :func:`run` maps the exception to its code in one place (:func:`exit_code_of`) and prints
it as one sentence on stderr. Only an error that no table entry expects — a bug — is printed with
its traceback, below a sentence saying so.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from enum import IntEnum
from functools import cache
from typing import Any

from ys_platform.settings import Settings, SettingsError, load_settings

PROG = "ys-platform"


class ExitCode(IntEnum):
    """The process exit codes of every ``ys-platform`` command."""

    OK = 0
    FAILED = 1
    """The command ran and what it did failed (a service, a connector, a worker)."""
    CONFIG = 2
    """Bad configuration or usage (argparse exits 2 on a usage error; a bad setting shares it)."""
    NOT_RUNNING = 3
    """A service is stopped: the LSB code of ``status``, so scripts tell it from broken (1)."""
    INTERRUPTED = 130
    """Ctrl-C: the shell's 128 + SIGINT."""


class CommandError(Exception):
    """A command's own failure: ``message`` is the sentence to print, ``code`` the exit code."""

    def __init__(self, message: str, code: ExitCode = ExitCode.FAILED) -> None:
        super().__init__(message)
        self.code = code


Command = Callable[[argparse.Namespace, Settings], ExitCode]


@cache
def _error_codes() -> tuple[tuple[type[BaseException], ExitCode], ...]:
    """Every error a command may raise, with its exit code; the first match wins.

    Imported on first use (an error), not at start-up: ``ys-platform --help`` loads none of it.
    """
    from ys_platform.clients.clickhouse import ChdbPathConflictError, ClickHouseUnavailableError
    from ys_platform.clients.kafka import CredentialsError, DeliveryError, KafkaUnreachableError
    from ys_platform.clients.kafka_connect import ConnectError
    from ys_platform.clients.locks import StoreLockedError
    from ys_platform.clients.postgres import PostgresUnavailableError
    from ys_platform.connectors import ConnectorFileError
    from ys_platform.local.state import LocalStackError
    from ys_platform.operations import OperationError
    from ys_platform.postgres.migrate import MigrationError
    from ys_platform.sinks.clickhouse import SinkConfigError, SinkRangeError, SinkTableError
    from ys_platform.streaming.member import WorkerStopped
    from ys_platform.streaming.topics import TopicAdminError

    return (
        (SettingsError, ExitCode.CONFIG),
        (SinkConfigError, ExitCode.CONFIG),
        (ConnectorFileError, ExitCode.CONFIG),
        # A component's credentials file missing from YS_KAFKA_CREDENTIALS_DIR.
        (CredentialsError, ExitCode.CONFIG),
        (LocalStackError, ExitCode.FAILED),
        (TopicAdminError, ExitCode.FAILED),
        (ConnectError, ExitCode.FAILED),
        (PostgresUnavailableError, ExitCode.FAILED),
        (MigrationError, ExitCode.FAILED),
        (ClickHouseUnavailableError, ExitCode.FAILED),
        (ChdbPathConflictError, ExitCode.FAILED),
        (StoreLockedError, ExitCode.FAILED),
        (DeliveryError, ExitCode.FAILED),
        (WorkerStopped, ExitCode.FAILED),
        (KafkaUnreachableError, ExitCode.FAILED),
        (SinkRangeError, ExitCode.FAILED),
        (SinkTableError, ExitCode.FAILED),
        (OperationError, ExitCode.FAILED),
    )


def exit_code_of(error: BaseException) -> ExitCode | None:
    """The exit code of an expected error, or None for one no command expects (a bug)."""
    if isinstance(error, CommandError):
        return error.code
    if isinstance(error, SettingsError):  # before the table: it needs no imports
        return ExitCode.CONFIG
    for kind, code in _error_codes():
        if isinstance(error, kind):
            return code
    return None


def fail(message: str) -> None:
    """Print one sentence on stderr (the form of every error of the command line)."""
    print(f"{PROG}: {message}", file=sys.stderr)


def run(command: Command, args: argparse.Namespace, settings: Settings | None = None) -> int:
    """Run ``command`` (with ``settings``, else those of the environment) and turn its outcome
    into an exit code."""
    try:
        return int(command(args, load_settings() if settings is None else settings))
    except KeyboardInterrupt:
        fail("interrupted")
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`ys-platform topics tail T | head`): not an error of ours.
        # Python's recipe: point stdout at devnull so the exit's flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.OK
    except Exception as error:
        code = exit_code_of(error)
        if code is None:
            fail(f"unexpected {type(error).__name__} (a bug; the traceback follows): {error}")
            traceback.print_exception(error)
            return ExitCode.FAILED
        fail(str(error))
        return code


def with_settings(command: Command) -> Callable[[argparse.Namespace], int]:
    """The ``func`` default of a subcommand's parser: ``main`` calls it with the parsed args."""

    def handler(args: argparse.Namespace) -> int:
        return run(command, args)

    return handler


def log_to_stderr() -> None:
    """Progress logging of the long-running commands (processors, sinks)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # httpx logs every request at INFO: the monitor's three Connect calls per poll would bury
    # its own lines (alerts, errors) in `make dev`'s terminal.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """Rows (the first one the header) in columns aligned by their widest cell."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def print_summary(summary: dict[str, Any], *, progress: bool = False) -> None:
    """A worker's figures as one JSON line: progress on stderr, the final summary on stdout."""
    print(json.dumps(summary, default=str), file=sys.stderr if progress else sys.stdout)
