"""Processes and ports on this machine, read through /proc (the stack runs on Linux only)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ys_platform.local.state import LocalStackError, read_pid, write_pid

# A service that has not exited this long after SIGTERM is hung; Kafka's controlled shutdown and
# PostgreSQL's fast stop take a few seconds here, so this is generous but keeps `down` bounded.
STOP_GRACE_S = 30.0

# Readiness is polled; each poll is cheap (a connect or a metadata request), and 0.25 s keeps the
# reported start time within a quarter second of the truth.
POLL_INTERVAL_S = 0.25


def progress(message: str, end: str = "\n") -> None:
    """Progress goes to stderr so stdout stays parseable (`status` output, piped commands)."""
    print(message, end=end, file=sys.stderr, flush=True)


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _reap(pid: int) -> None:
    """Collect the exit status of a child of this process, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def is_alive(pid: int) -> bool:
    _reap(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state is the field after the parenthesised command name; Z is a zombie (already dead).
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def owns(pid: int | None, marker: str) -> bool:
    """True when pid is alive and its command line mentions marker (a path only we pass).

    A PID file can outlive its process and the number can be reused by anything; checking the
    command line keeps `down` from signalling a process the stack did not start.
    """
    if pid is None or not is_alive(pid):
        return False
    return any(marker in arg for arg in cmdline(pid))


def owned_pid(pid_file: Path, marker: str) -> int | None:
    """The PID in ``pid_file`` if that process runs and mentions ``marker`` (see :func:`owns`);
    a stale PID file is removed."""
    pid = read_pid(pid_file)
    if owns(pid, marker):
        return pid
    pid_file.unlink(missing_ok=True)
    return None


def spawn(
    command: list[str], console: Path, pid_file: Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a service's process in the background, its output appended to ``console`` and its
    PID written to ``pid_file``."""
    with console.open("ab") as out:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            # Its own session: Ctrl-C in the terminal that ran `up` must not stop the service.
            start_new_session=True,
            cwd=cwd,
            env=env,
        )
    write_pid(pid_file, process.pid)
    return process


def check_port_free(
    port: int, label: str, *, main_class: str, config_suffix: str, others: str, remedy: str
) -> None:
    """Refuse to start a service on a port something else listens on, naming the processes of
    the same kind (``main_class`` on their command line) by their config file: ``others`` names
    them ("Kafka brokers"), ``remedy`` is the setting that moves the port."""
    if not port_open(port):
        return
    found = [
        next((arg for arg in args if arg.endswith(config_suffix)), "?")
        for _, args in find_processes(main_class)
    ]
    hint = f" Other {others} on this machine: {', '.join(found)}." if found else ""
    raise LocalStackError(
        f"{label}: 127.0.0.1:{port} is already in use by another process.{hint} Stop it (for a "
        f"stack in another folder: `ys-platform local down` there), or set {remedy}."
    )


def find_processes(marker: str) -> list[tuple[int, list[str]]]:
    """All processes whose command line mentions marker (to name who holds a port)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            args = cmdline(int(entry.name))
            if any(marker in arg for arg in args):
                found.append((int(entry.name), args))
    return found


def stop(pids: list[int], grace_s: float = STOP_GRACE_S) -> list[int]:
    """SIGTERM all at once, SIGKILL whatever is left after grace_s; returns the PIDs killed.

    All at once matters for a 3-node KRaft quorum: stopped one by one, the last node loses its
    majority and waits out its controlled-shutdown timeout.
    """
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(is_alive(pid) for pid in pids):
        time.sleep(POLL_INTERVAL_S)
    killed = [pid for pid in pids if is_alive(pid)]
    for pid in killed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in killed:
        while is_alive(pid):
            time.sleep(POLL_INTERVAL_S)
    return killed


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _memory_kib(pid: int) -> int:
    # Pss splits shared pages (PostgreSQL's shared buffers) between the processes mapping them,
    # so a sum over a process tree counts them once; VmRSS is the fallback when smaps is closed.
    for path, key in ((f"/proc/{pid}/smaps_rollup", "Pss:"), (f"/proc/{pid}/status", "VmRSS:")):
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(key):
                    return int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return 0


def memory_bytes(pid: int) -> int:
    """Resident memory of pid and its direct children (the PostgreSQL backends)."""
    return 1024 * sum(_memory_kib(p) for p in [pid, *_children(pid)])


def port_open(port: int, host: str = "127.0.0.1", timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def wait_ready(
    label: str,
    target: str,
    ready: Callable[[], bool],
    alive: Callable[[], bool],
    timeout_s: float,
    log: Path,
) -> float:
    """Poll ready() until it holds, printing one progress line; returns the seconds it took.

    Fails early when alive() turns false (the process died), and after timeout_s otherwise,
    either way naming the log file to read.
    """
    progress(f"{label}: waiting for {target} ...", end=" ")
    start = time.monotonic()
    while True:
        if ready():
            took = time.monotonic() - start
            progress(f"ready in {took:.1f} s")
            return took
        if not alive():
            progress("exited")
            raise LocalStackError(f"{label} exited while starting; see {log}{_tail(log)}")
        if time.monotonic() - start > timeout_s:
            progress("timed out")
            raise LocalStackError(
                f"{label} did not answer on {target} within {timeout_s:.0f} s; see {log}"
                f"{_tail(log)}"
            )
        time.sleep(POLL_INTERVAL_S)


def tail_lines(path: Path, count: int) -> list[str]:
    try:
        with path.open("rb") as handle:
            # Only the end is read, so a huge log costs nothing; a Kafka log line is well under
            # 1 KiB, and 64 KiB covers the short tails that error messages quote.
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - max(65536, count * 1024)))
            text = handle.read().decode(errors="replace")
    except FileNotFoundError:
        return []
    return text.splitlines()[-count:] if count > 0 else []


def _tail(log: Path, count: int = 10) -> str:
    lines = tail_lines(log, count)
    return ("\nLast lines of the log:\n  " + "\n  ".join(lines)) if lines else ""
