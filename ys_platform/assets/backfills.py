"""Backfill jobs: recompute a past window of a processor's output through the same logic."""

from datetime import datetime

import dagster as dg
from pydantic import Field

from ys_platform.assets.keys import topic_asset_key
from ys_platform.assets.topics import topic_processors
from ys_platform.assets.versions import topic_data_version, worker_output_event
from ys_platform.catalog.topics import topic
from ys_platform.processors.backfill import backfill_price_analytics
from ys_platform.resources.kafka import KafkaResource

OUTPUT = "market.analytics"


class PriceAnalyticsBackfillConfig(dg.Config):
    start: str = Field(description="First window end to recompute, ISO-8601 with an offset.")
    end: str = Field(description="Last window end to recompute, ISO-8601 with an offset.")
    namespace: str = ""
    dry_run: bool = False
    """Compute and report, produce nothing."""


def _parse(name: str, value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise dg.Failure(f"{name}: {value!r} is not an ISO-8601 timestamp") from None
    if parsed.tzinfo is None:
        raise dg.Failure(f"{name}: {value!r} needs a UTC offset, e.g. 2026-01-05T12:00:00Z")
    return parsed


@dg.op(
    description="Replay market.prices for a time range through the price-aggregation logic and "
    "write the market.analytics records of its window ends (one transaction).",
)
def backfill_market_analytics(
    context: dg.OpExecutionContext, config: PriceAnalyticsBackfillConfig, kafka: KafkaResource
) -> None:
    start, end = _parse("start", config.start), _parse("end", config.end)
    if end < start:
        raise dg.Failure(f"end {config.end} is before start {config.start}")
    result = backfill_price_analytics(
        kafka.connection, start, end, namespace=config.namespace, output=not config.dry_run
    )
    metadata = {
        "window_ends": dg.MetadataValue.text(f"{start.isoformat()} .. {end.isoformat()}"),
        "records": dg.MetadataValue.int(len(result.records)),
        "produced": dg.MetadataValue.int(result.produced),
        "ticks_read": dg.MetadataValue.int(result.read),
        "invalid": dg.MetadataValue.int(result.invalid),
        "too_late": dg.MetadataValue.int(result.too_late),
        "incomplete_partitions": dg.MetadataValue.json(result.incomplete_partitions),
        "symbols": dg.MetadataValue.int(len({r.symbol for r in result.records})),
    }
    if result.incomplete_partitions:
        context.log.warning(
            f"partitions {result.incomplete_partitions} have not reached {end.isoformat()} "
            "yet: their latest window ends were left out"
        )
    if not config.dry_run:
        context.log_event(
            worker_output_event(
                context.instance,
                topic_asset_key(OUTPUT),
                topic_processors(OUTPUT),
                topic_data_version(topic(OUTPUT)),
                description=f"backfill of {OUTPUT}",
                metadata=metadata,
            )
        )
    else:
        context.log.info(f"dry run: {len(result.records)} records computed, none produced")


@dg.job(
    description="Backfill market.analytics for a time range from market.prices (same logic as "
    "the live processor; readers key analytics by symbol and window end).",
    tags={"ys/kind": "backfill"},
)
def market_analytics_backfill() -> None:
    backfill_market_analytics()
