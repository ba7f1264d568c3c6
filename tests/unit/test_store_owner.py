"""The owner's door (clients/owner.py) over real Unix sockets: requests answered on the owner's
thread, no owner, a socket left by a dead owner, errors as sentences."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from ys_platform.clients.owner import (
    OwnerDoor,
    OwnerNotAnsweringError,
    ask_owner,
    owner_socket,
)


def _serve(door: OwnerDoor, answer, stop: threading.Event) -> threading.Thread:
    def loop() -> None:
        while not stop.is_set():
            door.serve_pending(answer)
            time.sleep(0.01)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def test_a_request_is_answered_on_the_owners_thread(tmp_path: Path) -> None:
    door = OwnerDoor(owner_socket(tmp_path))
    assert door.open()
    assert oct(owner_socket(tmp_path).stat().st_mode & 0o777) == "0o600"
    threads: list[str] = []

    def answer(request: dict) -> dict:
        threads.append(threading.current_thread().name)
        return {"echo": request["n"] * 2}

    stop = threading.Event()
    owner = _serve(door, answer, stop)
    owner.name = "the-owner"
    try:
        replies = [ask_owner(owner_socket(tmp_path), {"n": n}, timeout_s=5) for n in range(3)]
    finally:
        stop.set()
        owner.join(5)
        door.close()
    assert replies == [{"echo": 0}, {"echo": 2}, {"echo": 4}]
    assert threads == ["the-owner"] * 3 and door.served == 3
    assert not owner_socket(tmp_path).exists()


def test_no_owner_and_a_dead_owners_socket_read_as_none(tmp_path: Path) -> None:
    path = owner_socket(tmp_path)
    assert ask_owner(path, {"op": "search"}, timeout_s=1) is None
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(path))  # bound, never listening: what a killed owner leaves behind
    left.close()
    assert path.exists()
    assert ask_owner(path, {"op": "search"}, timeout_s=1) is None
    door = OwnerDoor(path)
    assert door.open()  # a new owner replaces the stale file
    door.close()


def test_errors_come_back_as_sentences(tmp_path: Path) -> None:
    door = OwnerDoor(owner_socket(tmp_path))
    assert door.open()

    def answer(request: dict) -> dict:
        raise ValueError("no such thing")

    stop = threading.Event()
    owner = _serve(door, answer, stop)
    try:
        with pytest.raises(RuntimeError, match="ValueError: no such thing") as info:
            ask_owner(owner_socket(tmp_path), {"op": "x"}, timeout_s=5)
        assert str(tmp_path.resolve()) in str(info.value)
    finally:
        stop.set()
        owner.join(5)
        door.close()


def test_an_owner_that_does_not_come_round_times_out(tmp_path: Path) -> None:
    door = OwnerDoor(owner_socket(tmp_path))
    assert door.open()
    try:
        started = time.monotonic()
        with pytest.raises(OwnerNotAnsweringError, match=r"did not answer within 0\.5 s"):
            ask_owner(owner_socket(tmp_path), {"op": "x"}, timeout_s=0.5)
        assert time.monotonic() - started < 3
    finally:
        door.close()


def test_a_path_too_long_for_a_socket_is_not_served(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    door = OwnerDoor(owner_socket(deep))
    assert not door.open()
    assert ask_owner(owner_socket(deep), {"op": "x"}, timeout_s=1) is None
