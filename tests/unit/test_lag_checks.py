"""The consumer-lag check's verdict and metadata from per-partition lag (pure; the monitor that
measures the lag is tested with it)."""

import dagster as dg

from ys_platform.assets.keys import processor_asset_key
from ys_platform.assets.lag_checks import (
    CHECK_NAME,
    PartitionLag,
    build_lag_checks,
    evaluate_group_lag,
)

GROUP = "price-aggregation-processor"


def _lag(partition: int, offsets: int, seconds: float | None, status: str = "OK") -> PartitionLag:
    return PartitionLag("market.prices", partition, offsets, seconds, status)


def test_caught_up_group_passes_and_plots_its_lag() -> None:
    result = evaluate_group_lag(GROUP, [_lag(1, 7, 2.5), _lag(0, 0, 0.0)], max_lag_s=60)
    assert result.passed and result.description is None
    metadata = result.metadata
    assert metadata["status"].value == "OK"
    assert metadata["max_lag_seconds"].value == 2.5
    assert metadata["sum_offset_lag"].value == 7
    assert metadata["max_offset_lag"].value == 7
    rows = [r.data for r in metadata["partitions"].value.records]
    assert rows == [
        {
            "topic": "market.prices",
            "partition": 0,
            "offset_lag": 0,
            "lag_seconds": 0.0,
            "status": "OK",
        },
        {
            "topic": "market.prices",
            "partition": 1,
            "offset_lag": 7,
            "lag_seconds": 2.5,
            "status": "OK",
        },
    ]


def test_lag_over_the_bound_fails() -> None:
    result = evaluate_group_lag(GROUP, [_lag(0, 900, 61.0)], max_lag_s=60)
    assert not result.passed
    assert result.description == "lag 61.0 s exceeds 60 s"
    assert result.severity == dg.AssetCheckSeverity.WARN


def test_worst_partition_status_is_the_groups() -> None:
    result = evaluate_group_lag(
        GROUP, [_lag(0, 5, 1.0, "WARN"), _lag(1, 9, 2.0, "STOP"), _lag(2, 0, 0.0)]
    )
    assert not result.passed
    assert result.metadata["status"].value == "STOP"
    assert result.severity == dg.AssetCheckSeverity.ERROR
    assert result.description == ("status STOP: market.prices[0] WARN, market.prices[1] STOP")


def test_unknown_lag_seconds_is_absent_not_zero() -> None:
    result = evaluate_group_lag(GROUP, [_lag(0, 3, None)])
    assert result.passed
    assert "max_lag_seconds" not in result.metadata
    assert result.metadata["partitions_without_lag_seconds"].value == 1


def test_group_the_monitor_does_not_see_fails() -> None:
    result = evaluate_group_lag(GROUP, [])
    assert not result.passed
    assert result.metadata["status"].value == "UNKNOWN"
    assert result.description == f"the lag monitor reports no partitions for {GROUP}"


def test_one_check_per_group_beside_its_asset() -> None:
    class NoMonitor:  # the checks are only built here, never evaluated
        def lag_for_group(self, group: str) -> list[PartitionLag]:
            raise AssertionError("read while building the definitions")

    (check,) = build_lag_checks({GROUP: processor_asset_key(GROUP)}, NoMonitor())
    (key,) = check.check_keys
    assert key == dg.AssetCheckKey(processor_asset_key(GROUP), CHECK_NAME)
