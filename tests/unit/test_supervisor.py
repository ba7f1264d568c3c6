"""The standalone commands' restart loop: which stops it restarts, with what delays and lines."""

import logging
import threading

import pytest
from confluent_kafka import KafkaError, KafkaException

from ys_platform.streaming import supervisor
from ys_platform.streaming.member import WorkerStopped
from ys_platform.streaming.supervisor import backoff_s, restartable, supervise


def _failing(*errors: BaseException, result: str = "done"):
    """A run that raises each of ``errors`` in turn, then returns ``result``; counts its calls."""
    calls = []

    def run_once() -> str:
        calls.append(len(calls))
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return result

    return run_once, calls


def test_the_backoff_doubles_from_15_s_to_10_minutes() -> None:
    assert [backoff_s(n) for n in range(7)] == [0.0, 15.0, 30.0, 60.0, 120.0, 240.0, 480.0]
    assert backoff_s(8) == backoff_s(50) == 600.0


def test_a_stopped_worker_is_restarted_after_the_backoff_saying_so(caplog) -> None:
    run_once, calls = _failing(WorkerStopped("g: consumer failed: boom"), WorkerStopped("again"))
    delays: list[int] = []
    with caplog.at_level(logging.INFO, logger=supervisor.__name__):
        result = supervise(
            run_once, "g", threading.Event(), backoff=lambda n: delays.append(n) or 0
        )
    assert result == "done" and len(calls) == 3
    assert delays == [1, 2]
    assert [r.getMessage() for r in caplog.records] == [
        "g stopped (g: consumer failed: boom); restarting it in 0 s (failure 1 in a row)",
        "g: restarting",
        "g stopped (again); restarting it in 0 s (failure 2 in a row)",
        "g: restarting",
    ]


def test_a_kafka_error_escaping_the_worker_is_restarted_with_its_message(caplog) -> None:
    error = KafkaException(KafkaError(KafkaError.FENCED_LEADER_EPOCH, "epoch is older"))
    run_once, calls = _failing(error)
    with caplog.at_level(logging.ERROR, logger=supervisor.__name__):
        supervise(run_once, "g", threading.Event(), backoff=lambda n: 0)
    assert len(calls) == 2
    assert caplog.records[0].getMessage().startswith("g stopped (epoch is older); restarting")


def test_a_bug_is_not_restarted() -> None:
    error = ValueError("a bug is not a fault")
    assert not restartable(error)
    run_once, calls = _failing(error)
    with pytest.raises(ValueError):
        supervise(run_once, "g", threading.Event(), backoff=lambda n: 0)
    assert len(calls) == 1


@pytest.mark.parametrize(
    "error",
    [
        WorkerStopped("g: transaction failed and cannot be retried: old epoch", fenced=True),
        KafkaException(KafkaError(KafkaError._FENCED, "fenced", fatal=True)),
        KafkaException(KafkaError(KafkaError.FENCED_INSTANCE_ID, "static member fenced")),
    ],
)
def test_a_fenced_worker_is_restarted_saying_why_it_may_be(error: BaseException, caplog) -> None:
    """Under broker faults a worker fences itself (a transaction the cluster aborted, its static
    member rejoining after a session timeout): only a new client mends that."""
    assert restartable(error)
    run_once, calls = _failing(error)
    with caplog.at_level(logging.ERROR, logger=supervisor.__name__):
        supervise(run_once, "g", threading.Event(), backoff=lambda n: 0)
    assert len(calls) == 2
    assert "fenced: another instance with its id runs, or the cluster aborted" in caplog.text


def test_a_fatal_error_other_than_fencing_is_restarted_with_new_clients() -> None:
    fatal = KafkaException(KafkaError(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, "seq", fatal=True))
    assert restartable(fatal)


def test_restart_off_or_a_stop_during_the_wait_raises_the_error() -> None:
    run_once, calls = _failing(WorkerStopped("down"))
    with pytest.raises(WorkerStopped, match="down"):
        supervise(run_once, "g", threading.Event(), restart=False)
    assert len(calls) == 1

    stop = threading.Event()
    run_once, calls = _failing(WorkerStopped("down"))
    threading.Timer(0.05, stop.set).start()
    with pytest.raises(WorkerStopped, match="down"):
        supervise(run_once, "g", stop, backoff=lambda n: 30.0)  # the stop ends the 30 s wait
    assert len(calls) == 1


def test_a_long_healthy_run_starts_the_backoff_again(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(
        [0.0, 1.0, 2.0, 3.0 + supervisor.HEALTHY_AFTER_S, 4.0 + supervisor.HEALTHY_AFTER_S]
    )
    monkeypatch.setattr(supervisor.time, "monotonic", lambda: next(clock))
    run_once, _ = _failing(WorkerStopped("a"), WorkerStopped("b"))
    delays: list[int] = []
    supervise(run_once, "g", threading.Event(), backoff=lambda n: delays.append(n) or 0)
    # The first failed at once (failure 1); the second after a healthy run: failure 1 again.
    assert delays == [1, 1]
