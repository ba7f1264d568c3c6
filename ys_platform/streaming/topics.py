"""Reconcile the cluster's topics to the catalog.

Split in two: :func:`plan_topic` is pure (spec + what the cluster has → what to do), and
:func:`apply_plans` carries a plan out with the admin client. Reconcile creates missing topics,
sets configs back to the catalog, adds partitions, and never deletes a topic or removes partitions:
what it may not fix (fewer partitions wanted, a different replication factor on a live topic) is
reported as drift for an operator.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

from ys_platform.catalog.topics import TopicSpec

# Producers use acks=all; requiring 2 in-sync replicas means an acknowledged write survives the
# loss of one broker. Capped by RF so a 1-broker dev cluster still accepts writes.
MAX_MIN_INSYNC_REPLICAS = 2

ADMIN_TIMEOUT_S = 30.0


class TopicAdminError(RuntimeError):
    """The cluster refused or did not answer an admin request; the message says which."""


@dataclass(frozen=True)
class LiveTopic:
    """What the cluster has for one topic: partitions, replication and its topic-level overrides."""

    name: str
    partitions: int
    replication_factor: int
    configs: Mapping[str, str]
    """Only the topic-level overrides (config source DYNAMIC_TOPIC_CONFIG), not broker defaults."""


@dataclass(frozen=True)
class TopicPlan:
    """What reconcile will do (or, in a dry run, would do) to one topic."""

    spec: TopicSpec
    replication_factor: int
    desired_configs: Mapping[str, str]
    create: bool = False
    add_partitions: tuple[int, int] | None = None
    """(live, wanted) partition counts when partitions must be added."""
    set_configs: Mapping[str, tuple[str | None, str]] = field(default_factory=dict)
    """config → (live value or None, catalog value)."""
    remove_configs: Mapping[str, str] = field(default_factory=dict)
    """Cluster overrides the catalog does not have: removed, back to the broker default."""
    drift: tuple[str, ...] = ()
    """Differences reconcile must not fix; an operator has to decide."""
    warnings: tuple[str, ...] = ()

    @property
    def changes(self) -> tuple[str, ...]:
        """One sentence per change, in the order they are applied."""
        out: list[str] = []
        if self.create:
            out.append(
                f"create with {self.spec.partitions} partitions, RF {self.replication_factor}"
            )
        if self.add_partitions:
            out.append(f"add partitions {self.add_partitions[0]} → {self.add_partitions[1]}")
        for key, (live, wanted) in sorted(self.set_configs.items()):
            out.append(f"set {key}={wanted} (was {live if live is not None else 'default'})")
        for key, live in sorted(self.remove_configs.items()):
            out.append(f"remove override {key}={live}")
        return tuple(out)

    @property
    def in_sync(self) -> bool:
        """True when the live topic matches the catalog (warnings aside)."""
        return not self.changes and not self.drift


def effective_replication_factor(spec: TopicSpec, broker_count: int) -> tuple[int, str | None]:
    """The catalog RF capped to the cluster size, and the warning to show when it was capped."""
    if broker_count < 1:
        raise TopicAdminError("the cluster reported no brokers")
    if spec.replication_factor <= broker_count:
        return spec.replication_factor, None
    return broker_count, (
        f"replication factor capped from {spec.replication_factor} to {broker_count}: "
        f"the cluster has only {broker_count} broker(s)"
    )


def desired_configs(spec: TopicSpec, replication_factor: int) -> dict[str, str]:
    configs = dict(spec.configs)
    configs["min.insync.replicas"] = str(min(MAX_MIN_INSYNC_REPLICAS, replication_factor))
    return configs


def plan_topic(spec: TopicSpec, live: LiveTopic | None, broker_count: int) -> TopicPlan:
    """Compare a catalog topic with the live one and decide what reconcile does."""
    rf, cap_warning = effective_replication_factor(spec, broker_count)
    wanted = desired_configs(spec, rf)
    warnings = (cap_warning,) if cap_warning else ()
    if live is None:
        return TopicPlan(spec, rf, wanted, create=True, warnings=warnings)

    drift: list[str] = []
    add_partitions = None
    if live.partitions < spec.partitions:
        add_partitions = (live.partitions, spec.partitions)
    elif live.partitions > spec.partitions:
        drift.append(
            f"has {live.partitions} partitions, the catalog wants {spec.partitions}: Kafka cannot "
            "remove partitions; recreate the topic or change the catalog"
        )
    if live.replication_factor != rf:
        drift.append(
            f"replication factor is {live.replication_factor}, the catalog wants {rf}: change it "
            "with a partition reassignment (kafka-reassign-partitions)"
        )
    set_configs = {
        key: (live.configs.get(key), value)
        for key, value in wanted.items()
        if live.configs.get(key) != value
    }
    remove_configs = {k: v for k, v in live.configs.items() if k not in wanted}
    return TopicPlan(
        spec,
        rf,
        wanted,
        add_partitions=add_partitions,
        set_configs=set_configs,
        remove_configs=remove_configs,
        drift=tuple(drift),
        warnings=warnings,
    )


def broker_count(admin: AdminClient, timeout_s: float = ADMIN_TIMEOUT_S) -> int:
    try:
        return len(admin.list_topics(timeout=timeout_s).brokers)
    except KafkaException as exc:
        raise TopicAdminError(f"could not read cluster metadata: {_reason(exc)}") from None


def describe_topics(
    admin: AdminClient, names: Iterable[str], timeout_s: float = ADMIN_TIMEOUT_S
) -> dict[str, LiveTopic]:
    """The live state of those of ``names`` that exist on the cluster."""
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise TopicAdminError(f"could not read cluster metadata: {_reason(exc)}") from None
    present = [n for n in names if n in metadata.topics and metadata.topics[n].error is None]
    if not present:
        return {}
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in present]
    futures = admin.describe_configs(resources, request_timeout=timeout_s)
    live: dict[str, LiveTopic] = {}
    for resource, future in futures.items():
        name = resource.name
        try:
            entries = future.result(timeout=timeout_s)
        except KafkaException as exc:
            if _code(exc) == KafkaError.UNKNOWN_TOPIC_OR_PART:
                # Just created: listed in the metadata, not yet known to the broker asked for
                # its configs (multi-broker clusters). Treated as not there yet.
                continue
            raise TopicAdminError(f"{name}: could not describe configs: {_reason(exc)}") from None
        partitions = metadata.topics[name].partitions
        live[name] = LiveTopic(
            name=name,
            partitions=len(partitions),
            replication_factor=min(len(p.replicas) for p in partitions.values()),
            configs={
                entry.name: entry.value
                for entry in entries.values()
                if entry.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
                or entry.source == ConfigSource.DYNAMIC_TOPIC_CONFIG
            },
        )
    return live


def plan_topics(
    admin: AdminClient, specs: Sequence[TopicSpec], timeout_s: float = ADMIN_TIMEOUT_S
) -> list[TopicPlan]:
    brokers = broker_count(admin, timeout_s)
    live = describe_topics(admin, [s.name for s in specs], timeout_s)
    return [plan_topic(spec, live.get(spec.name), brokers) for spec in specs]


def apply_plans(
    admin: AdminClient, plans: Sequence[TopicPlan], timeout_s: float = ADMIN_TIMEOUT_S
) -> None:
    """Carry the plans out: create, then add partitions, then alter configs.

    Raises :class:`TopicAdminError` listing every topic that failed; the others are applied.
    """
    errors: list[str] = []
    creates = [
        NewTopic(
            p.spec.name,
            num_partitions=p.spec.partitions,
            replication_factor=p.replication_factor,
            config=dict(p.desired_configs),
        )
        for p in plans
        if p.create
    ]
    if creates:
        _collect(
            admin.create_topics(creates, request_timeout=timeout_s), timeout_s, errors, "create"
        )
    grows = [NewPartitions(p.spec.name, p.add_partitions[1]) for p in plans if p.add_partitions]
    if grows:
        _collect(
            admin.create_partitions(grows, request_timeout=timeout_s),
            timeout_s,
            errors,
            "add partitions",
        )
    alters = [
        ConfigResource(
            ResourceType.TOPIC,
            p.spec.name,
            incremental_configs=[
                ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                for k, (_, v) in sorted(p.set_configs.items())
            ]
            + [
                ConfigEntry(k, None, incremental_operation=AlterConfigOpType.DELETE)
                for k in sorted(p.remove_configs)
            ],
        )
        for p in plans
        if not p.create and (p.set_configs or p.remove_configs)
    ]
    if alters:
        futures = admin.incremental_alter_configs(alters, request_timeout=timeout_s)
        _collect({r.name: f for r, f in futures.items()}, timeout_s, errors, "alter configs")
    if errors:
        raise TopicAdminError("reconcile failed for: " + "; ".join(errors))


def _collect(futures: Mapping, timeout_s: float, errors: list[str], action: str) -> None:
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            if action == "create" and _code(exc) == KafkaError.TOPIC_ALREADY_EXISTS:
                # Another reconcile (or a topic still propagating when we looked) got there
                # first: creating is idempotent; its configs are checked on the next plan.
                continue
            errors.append(f"{name} ({action}): {_reason(exc)}")


def _code(exc: KafkaException) -> int | None:
    err = exc.args[0] if exc.args else None
    return err.code() if hasattr(err, "code") else None


def _reason(exc: KafkaException) -> str:
    err = exc.args[0] if exc.args else None
    return err.str() if hasattr(err, "str") else str(exc)
