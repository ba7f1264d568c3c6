"""The topics of the platform: the seed's 16 streams plus one dead-letter topic per consumer group.

This is the single source of truth for names, partitions, replication and configs; nothing else
in the code base spells a topic name. Figures are the seed's (``kafka-streaming-architecture.md``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

DAY_MS = 24 * 60 * 60 * 1000

# Replication the seed asks for: a 3-broker cluster, so a topic survives one broker loss while
# still accepting acks=all writes (min.insync.replicas=2).
SEED_REPLICATION_FACTOR = 3


@dataclass(frozen=True)
class TopicSpec:
    """What a topic should look like on the cluster."""

    name: str
    partitions: int
    description: str
    key: str | None
    """The message field whose value keys (and so orders) the topic; None for unkeyed topics."""
    configs: Mapping[str, str] = field(default_factory=dict)
    replication_factor: int = SEED_REPLICATION_FACTOR
    dead_letter_for: str | None = None
    """For a dead-letter topic: the consumer group whose rejects it holds."""
    change_stream: bool = False
    """Fed by CDC from a table of record (``ys_platform.postgres.CAPTURED``): its records carry
    the change's operation in the ``ys.cdc.op`` header, and a delete arrives as the deleted row
    marked ``d`` (:func:`ys_platform.catalog.codec.is_delete`), except on compacted topics,
    where it is a tombstone. Consumers of these topics, and only these, look at the header."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "configs", MappingProxyType(dict(self.configs)))

    @property
    def domain(self) -> str:
        """The first name segment (``defi``, ``market``, ...): the Dagster group of the asset."""
        return self.name.split(".", 1)[0]

    @property
    def is_dead_letter(self) -> bool:
        return self.dead_letter_for is not None


def _topic(
    name: str,
    partitions: int,
    description: str,
    key: str | None,
    *,
    change_stream: bool = False,
    **configs: str,
) -> TopicSpec:
    return TopicSpec(
        name=name,
        partitions=partitions,
        description=description,
        key=key,
        configs={k.replace("_", "."): v for k, v in configs.items()},
        change_stream=change_stream,
    )


# The 16 topics, exactly as the seed lists them (partitions, RF=3) with the configs it gives for
# defi.transactions (high volume) and defi.protocols (compacted latest state).
TOPICS: tuple[TopicSpec, ...] = (
    _topic(
        "defi.protocols",
        12,
        "Protocol metadata and updates (latest state per protocol).",
        "id",
        change_stream=True,
        cleanup_policy="compact",
        compression_type="snappy",
    ),
    _topic("defi.tokens", 12, "Token information and prices.", "address", change_stream=True),
    _topic(
        "defi.transactions",
        24,
        "User transactions (high volume).",
        "user_id",
        change_stream=True,
        compression_type="snappy",
        segment_ms=str(DAY_MS),
        retention_ms=str(30 * DAY_MS),
    ),
    _topic("defi.liquidity-pools", 12, "Liquidity pool data.", "pool_id", change_stream=True),
    _topic("defi.yields", 6, "Yield farming data.", "strategy_id", change_stream=True),
    _topic("market.prices", 12, "Real-time price feeds.", "symbol"),
    _topic("market.analytics", 6, "Aggregated market metrics (TWAP, volatility).", "symbol"),
    _topic("market.sentiment", 6, "Social sentiment data.", "source_id"),
    _topic("users.events", 6, "User activity events.", "user_id"),
    _topic("users.portfolios", 6, "Portfolio updates.", "user_id", change_stream=True),
    _topic("system.alerts", 3, "System notifications.", "alert_id"),
    _topic("system.metrics", 3, "Application metrics.", "name"),
    _topic("risk.assessments", 6, "Risk calculation results.", "user_id"),
    _topic("risk.alerts", 6, "Risk-based alerts.", "user_id"),
    _topic("crosschain.events", 12, "Cross-chain transactions, bridge quotes and gas.", "chain"),
    _topic("crosschain.arbitrage", 6, "Arbitrage opportunities.", "symbol"),
)


@dataclass(frozen=True)
class ConsumerGroupSpec:
    """A long-running consumer of the platform: a processor or a sink."""

    group_id: str
    kind: str  # "processor" or "sink"
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    description: str
    lag_bound_s: float = 30.0
    """Time lag (seconds) the group may run behind its inputs before the lag monitor calls it
    out of bounds. Processors: 30 s, far above a 20,000-record batch (~0.12 s at the 164k msg/s
    price aggregation measured, bench/README.md) and room for a restart's restore. Sinks: 60 s,
    since a ClickHouse sink sharing the chDB path waits up to 30 s for it (``sink run
    --share-every``) before it flushes."""
    broadcast_inputs: tuple[str, ...] = ()
    """Inputs every instance reads whole as reference data, outside the group: never committed,
    so they have no lag (the lag monitor and the load test leave them out)."""
    replicas: int = 1
    """Instances the keep-alive sensors keep running (each its own static member and, for a
    processor, its own transactional id), unless ``YS_WORKER_REPLICAS`` says otherwise for this
    deployment. One by default: a 2-core development machine gains nothing from more, and a
    production deployment sets its own count."""

    @property
    def member_inputs(self) -> tuple[str, ...]:
        """The inputs consumed as a group member: committed, and so with a lag."""
        return tuple(name for name in self.inputs if name not in self.broadcast_inputs)

    @property
    def max_replicas(self) -> int:
        """More members than the widest input has partitions would leave some without work."""
        return max(topic(name).partitions for name in self.inputs)

    @property
    def dead_letter_topic(self) -> str:
        return f"dlq.{self.group_id}"

    @property
    def change_stream_inputs(self) -> frozenset[str]:
        """The inputs fed by CDC, whose records may be marked deletes (``TopicSpec``)."""
        return frozenset(name for name in self.inputs if topic(name).change_stream)


# Consumer groups are the seed's names; each gets its own dead-letter topic so a reject can be
# traced to the worker that refused it and replayed into that worker alone.
CONSUMER_GROUPS: tuple[ConsumerGroupSpec, ...] = (
    ConsumerGroupSpec(
        "price-aggregation-processor",
        "processor",
        inputs=("market.prices",),
        outputs=("market.analytics",),
        description="1-minute sliding-window TWAP, VWAP, volatility and source consolidation.",
    ),
    ConsumerGroupSpec(
        "risk-assessment-processor",
        "processor",
        inputs=("defi.transactions", "users.portfolios", "market.analytics"),
        outputs=("risk.assessments", "risk.alerts"),
        description="Health factor, LTV, diversification and VaR per user; liquidation alerts.",
        broadcast_inputs=("market.analytics",),
    ),
    ConsumerGroupSpec(
        "crosschain-arbitrage-processor",
        "processor",
        inputs=("market.prices", "crosschain.events"),
        outputs=("crosschain.arbitrage",),
        description="Cross-chain price dislocations net of bridge fees, gas and price impact.",
        broadcast_inputs=("crosschain.events",),
    ),
    ConsumerGroupSpec(
        "clickhouse-sink",
        "sink",
        inputs=(
            "defi.transactions",
            "market.prices",
            "market.analytics",
            "defi.yields",
            "risk.assessments",
            "crosschain.arbitrage",
        ),
        outputs=(),
        description="Exactly-once batches from topics into ClickHouse tables.",
        lag_bound_s=60.0,
    ),
    ConsumerGroupSpec(
        "vector-sink",
        "sink",
        inputs=("defi.protocols", "defi.tokens", "users.portfolios", "market.sentiment"),
        outputs=(),
        description="Embeds documents and upserts them into Qdrant collections.",
        lag_bound_s=60.0,
    ),
)

BROKER_MAX_MESSAGE_BYTES = 1_048_588
"""Kafka's default ``message.max.bytes``: the largest record batch an input topic takes."""

DEAD_LETTER_MAX_BYTES = BROKER_MAX_MESSAGE_BYTES + 64 * 1024
"""The largest dead letter: the largest record an input takes, plus its dead-letter headers
(the reason is cut at 1,000 bytes). The dead-letter topics take this much (``max.message.bytes``)
and the workers' producers send it (their ``message.max.bytes``; librdkafka's default, 1,000,000,
is below the broker's): a reject at the size limit that could not be dead-lettered stopped its
worker ("Message size too large") instead of setting it aside."""

# Dead letters are kept two weeks: long enough to notice, fix and replay; never compacted, since
# every reject matters, not the latest per key.
DEAD_LETTER_TOPICS: tuple[TopicSpec, ...] = tuple(
    TopicSpec(
        name=group.dead_letter_topic,
        partitions=3,
        description=f"Messages {group.group_id} could not process, with the reason in headers.",
        key=None,
        configs={
            "retention.ms": str(14 * DAY_MS),
            "max.message.bytes": str(DEAD_LETTER_MAX_BYTES),
        },
        dead_letter_for=group.group_id,
    )
    for group in CONSUMER_GROUPS
)

ALL_TOPICS: tuple[TopicSpec, ...] = TOPICS + DEAD_LETTER_TOPICS
_BY_NAME: Mapping[str, TopicSpec] = MappingProxyType({t.name: t for t in ALL_TOPICS})
_GROUPS: Mapping[str, ConsumerGroupSpec] = MappingProxyType(
    {g.group_id: g for g in CONSUMER_GROUPS}
)


def topic(name: str) -> TopicSpec:
    """The spec of a catalog topic; a KeyError names the unknown topic."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"{name!r} is not a catalog topic") from None


def consumer_group(group_id: str) -> ConsumerGroupSpec:
    try:
        return _GROUPS[group_id]
    except KeyError:
        raise KeyError(f"{group_id!r} is not a catalog consumer group") from None
