"""Env files: ``NAME=value`` lines with shell-quoted values, one principal's credentials each.

A process gets such a file's variables through its environment (``set -a; . file; set +a``) or,
for a component with a principal of its own, through ``KafkaConnection.as_principal``. Errors
name the file and the line number, never the line: it may hold a password.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


def format_env_file(variables: dict[str, str], header: str) -> str:
    """``NAME=value`` lines, values shell-quoted, so the file can be sourced by a shell too."""
    lines = [f"# {line}" for line in header.splitlines()]
    for name, value in variables.items():
        if not _ENV_NAME.match(name):
            raise ValueError(f"{name!r} is not an environment variable name")
        lines.append(f"{name}={shlex.quote(value)}")
    return "\n".join(lines) + "\n"


def load_env_file(path: Path) -> dict[str, str]:
    """The variables of an env file as :func:`format_env_file` writes it.

    Errors name the file and the line number, never the line: it may hold a password.
    """
    variables: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        name = name.removeprefix("export ").strip()
        try:
            words = shlex.split(value)
        except ValueError:
            words = []
        if not sep or not _ENV_NAME.match(name) or len(words) > 1:
            raise ValueError(f"{path}, line {number}: not a NAME=value line")
        variables[name] = words[0] if words else ""
    return variables
