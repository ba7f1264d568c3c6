"""The consumer-lag check's verdict, metadata and status over its own history (pure; the
reading of a real group is tests/integration/test_dagster_lag_checks.py)."""

import dagster as dg

from ys_platform.assets.keys import processor_asset_key
from ys_platform.assets.lag_checks import (
    CHECK_NAME,
    PartitionLag,
    PartitionReading,
    Position,
    build_lag_checks,
    evaluate_group_lag,
    with_status,
)
from ys_platform.monitoring.status import Status

GROUP = "price-aggregation-processor"
T = 1_800_000_000.0


def _lag(
    partition: int, offsets: int, seconds: float | None, status: Status = Status.OK
) -> PartitionLag:
    return PartitionLag("market.prices", partition, 100, offsets, seconds, status, T)


def _read(committed: int, lag: int, *, owned: bool = False) -> PartitionReading:
    return PartitionReading("market.prices", 0, committed, lag, 1.0, owned)


def test_caught_up_group_passes_and_plots_its_lag() -> None:
    result = evaluate_group_lag(GROUP, [_lag(1, 7, 2.5), _lag(0, 0, 0.0)], 60, T)
    assert result.passed and result.description is None
    metadata = result.metadata
    assert metadata["status"].value == "OK"
    assert metadata["max_lag_seconds"].value == 2.5
    assert metadata["total_offset_lag"].value == 7
    assert metadata["max_offset_lag"].value == 7
    assert metadata["lag_bound_s"].value == 60.0
    assert metadata["checked_at"].value == T
    rows = [r.data for r in metadata["partitions"].value.records]
    assert rows == [
        {
            "topic": "market.prices",
            "partition": p,
            "committed": 100,
            "offset_lag": lag,
            "lag_seconds": seconds,
            "status": "OK",
            "committed_since": T,
        }
        for p, lag, seconds in [(0, 0, 0.0), (1, 7, 2.5)]
    ]


def test_lag_over_the_bound_fails() -> None:
    result = evaluate_group_lag(GROUP, [_lag(0, 900, 61.0)], 60, T)
    assert not result.passed
    assert result.description == "lag 61.0 s exceeds 60 s"
    assert result.severity == dg.AssetCheckSeverity.WARN


def test_worst_partition_status_is_the_groups() -> None:
    partitions = [_lag(0, 5, 1.0, Status.WARN), _lag(1, 9, 2.0, Status.STOP), _lag(2, 0, 0.0)]
    result = evaluate_group_lag(GROUP, partitions, 60, T)
    assert not result.passed
    assert result.metadata["status"].value == "STOP"
    assert result.severity == dg.AssetCheckSeverity.ERROR
    assert result.description == "status STOP: market.prices[0] WARN, market.prices[1] STOP"


def test_unknown_lag_seconds_is_absent_not_zero() -> None:
    result = evaluate_group_lag(GROUP, [_lag(0, 3, None)], 60, T)
    assert result.passed
    assert "max_lag_seconds" not in result.metadata
    assert result.metadata["partitions_without_lag_seconds"].value == 1


def test_group_without_commits_fails() -> None:
    result = evaluate_group_lag(GROUP, [], 60, T)
    assert not result.passed
    assert result.metadata["status"].value == "NOTFOUND"
    assert result.severity == dg.AssetCheckSeverity.ERROR
    assert result.description == f"{GROUP} has no committed offsets on the cluster"


def test_first_evaluation_has_no_window_and_says_ok() -> None:
    (judged,) = with_status([_read(10, 5)], {}, T)
    assert (judged.status, judged.committed_since) == (Status.OK, T)


def test_status_over_the_previous_evaluation() -> None:
    key = ("market.prices", 0)

    def status(reading: PartitionReading, before: Position) -> tuple[Status, float]:
        (judged,) = with_status([reading], {key: before}, T + 60)
        return judged.status, judged.committed_since

    # Unmoved for one interval only, nobody owns it: not yet STOP (Burrow: longer than the span).
    assert status(_read(10, 5), Position(10, 5, T, T)) == (Status.OK, T)
    # Unmoved since before the previous evaluation: STOP; owned: STALL.
    assert status(_read(10, 5), Position(10, 5, T, T - 60)) == (Status.STOP, T - 60)
    assert status(_read(10, 5, owned=True), Position(10, 5, T, T)) == (Status.STALL, T)
    assert status(_read(4, 11), Position(10, 5, T, T)) == (Status.REWIND, T + 60)
    # Moving but falling behind: WARN; catching up: OK; caught up is OK whatever came before.
    assert status(_read(20, 9), Position(10, 5, T, T)) == (Status.WARN, T + 60)
    assert status(_read(20, 3), Position(10, 5, T, T)) == (Status.OK, T + 60)
    assert status(_read(10, 0), Position(10, 5, T, T - 60)) == (Status.OK, T - 60)


def test_one_check_per_group_beside_its_asset() -> None:
    def no_source(kafka):  # the checks are only built here, never evaluated
        raise AssertionError("read while building the definitions")

    (check,) = build_lag_checks({GROUP: (processor_asset_key(GROUP), 30.0)}, no_source)
    (key,) = check.check_keys
    assert key == dg.AssetCheckKey(processor_asset_key(GROUP), CHECK_NAME)
