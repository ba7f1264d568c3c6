"""Every ``YS_*`` environment variable, in one place.

The platform reads its configuration once, here, and fails closed: a bad value stops start-up with
a sentence that names the variable, never a bare pydantic traceback. Secrets are ``SecretStr`` and
have no defaults; nothing in this module prints them.
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

from ys_platform.catalog.topics import CONSUMER_GROUPS, ConsumerGroupSpec
from ys_platform.clients.kafka import LOOPBACK, KafkaConnection
from ys_platform.package_files import CONNECTORS_DIR

ENV_PREFIX = "YS_"


# 9092 + 9 = the seed's 9101; clear of the brokers (port..port+2) and controllers (port+100..).
JMX_EXPORTER_PORT_OFFSET = 9


class SettingsError(ValueError):
    """A configuration value is missing or wrong; the message names the variable."""


def variable_name(*location: str | int) -> str:
    """The environment variable of a setting: ``("kafka", "sasl_password")`` is
    ``YS_KAFKA_SASL_PASSWORD``."""
    return f"{ENV_PREFIX}{'_'.join(str(part) for part in location).upper()}"


class Settings(BaseSettings):
    """The platform's configuration, from ``YS_*`` environment variables."""

    # No env_file: reading files is I/O at import of the code location; `dagster dev` and the
    # Makefile load a project `.env` into the environment themselves.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="ignore",
        frozen=True,
        # YS_KAFKA_SASL_PASSWORD is `kafka.sasl_password`: split once after the nested model's
        # name, so the field names' own underscores stay.
        env_nested_delimiter="_",
        env_nested_max_split=1,
    )

    home: Path = Field(
        default=Path(".ys"),
        description="State folder of the local stack (Kafka logs, Postgres cluster, chDB, Qdrant, "
        "Dagster). Relative paths are taken from the current directory.",
    )

    # --- Kafka -----------------------------------------------------------------------------------
    kafka: KafkaConnection = Field(
        default_factory=KafkaConnection,
        description="The cluster the clients use: YS_KAFKA_BOOTSTRAP_SERVERS, YS_KAFKA_CLIENT_ID, "
        "YS_KAFKA_SECURITY_PROTOCOL, YS_KAFKA_SASL_* and YS_KAFKA_SSL_*.",
    )

    local_kafka_port: int = Field(
        default=9092,
        ge=1024,
        le=65000,
        description="Listener port of the local stack's first broker (the seed's 9092); broker i "
        "listens on port+i-1 and its KRaft controller on port+100+i-1. Clients connect there "
        "unless YS_KAFKA_BOOTSTRAP_SERVERS says otherwise.",
    )
    local_jmx_exporter_port: int | None = Field(
        default=None,
        ge=1024,
        le=65000,
        description="Port of the Prometheus JMX exporter of the local stack's first broker; broker "
        "i serves /metrics on port+i-1 and the Connect worker on port+9. Unset: "
        "YS_LOCAL_KAFKA_PORT+9 (the seed's 9101), so a stack moved to other Kafka ports moves its "
        "exporters too.",
    )
    # Whether kafka.bootstrap_servers was derived from local_kafka_port (not given).
    _bootstrap_follows_local_port: bool = PrivateAttr(default=False)

    # --- connectors ------------------------------------------------------------------------------
    connectors_dir: Path = Field(
        default=CONNECTORS_DIR,
        description="Folder of the Kafka Connect connector files and the sinks' mappings "
        "(clickhouse-sink.json, vector-sink.json). Unset: the files shipped in the package, "
        "which are the repository's connectors/ folder.",
    )

    # --- Kafka Connect ---------------------------------------------------------------------------
    connect_url: str = Field(default="http://127.0.0.1:8083", description="Kafka Connect REST URL.")

    # --- PostgreSQL ------------------------------------------------------------------------------
    postgres_dsn: SecretStr | None = Field(
        default=None,
        description="DSN of an existing PostgreSQL. Unset: the local stack runs its own cluster.",
    )
    postgres_port: int = Field(
        default=15432,
        ge=1,
        le=65535,
        # Not 5432: a developer machine often runs its own PostgreSQL there already.
        description="Port of the local stack's private PostgreSQL cluster.",
    )

    # --- ClickHouse ------------------------------------------------------------------------------
    clickhouse_url: str | None = Field(
        default=None,
        description="clickhouse-connect DSN (http(s)://user@host:port/db or chdb:///path). "
        "Unset: embedded chDB under the state folder.",
    )
    clickhouse_password: SecretStr | None = None

    # --- Qdrant ----------------------------------------------------------------------------------
    qdrant_url: str | None = Field(
        default=None, description="Qdrant server URL. Unset: qdrant-client local mode on disk."
    )
    qdrant_api_key: SecretStr | None = None

    # --- worker metrics --------------------------------------------------------------------------
    worker_metrics_host: str = Field(
        default=LOOPBACK,
        description="Address every processor and sink worker serves its Prometheus metrics on "
        "(0.0.0.0 in a container scraped from outside).",
    )
    worker_metrics_port: int = Field(
        default=9400,
        ge=1024,
        le=65000,
        description="First port of the workers' metrics endpoints: each worker takes the first "
        "free one from here (at most 100 on a host) and announces it in "
        "$YS_HOME/run/metrics/<group>-<replica>.json (Prometheus file_sd).",
    )

    worker_replicas: str | None = Field(
        default=None,
        description="Instances of a processor or sink the keep-alive sensors keep running, for "
        "the groups this deployment runs more (or fewer) of than the catalog says: "
        "`price-aggregation-processor=2,clickhouse-sink=2`. At most one per partition of the "
        "group's widest input.",
    )

    # --- lag monitor (`ys-platform monitor`) ----------------------------------------------------
    monitor_port: int = Field(
        default=9308,
        ge=1,
        le=65535,
        # kafka-lag-exporter's port in the seed's deployment: dashboards and scrape configs
        # written for it find this monitor unchanged.
        description="Port of the lag monitor's Prometheus endpoint on 127.0.0.1 (/metrics).",
    )
    monitor_interval_s: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="Seconds between two polls of the consumer groups' offsets.",
    )
    monitor_cluster_name: str = Field(
        default="ys-local",
        min_length=1,
        description="The `cluster_name` label of the lag metrics.",
    )
    monitor_groups_allow: str | None = Field(
        default=None,
        description="Regular expression a consumer group's id must match in full to be "
        "monitored (unset: every group). The catalog's groups are always monitored.",
    )
    monitor_groups_deny: str | None = Field(
        default=None,
        description="Regular expression of consumer group ids not monitored (matched in full); "
        "wins over the allow pattern, never over the catalog's groups.",
    )

    # --- validation ------------------------------------------------------------------------------
    @field_validator("connectors_dir")
    @classmethod
    def _check_connectors_dir(cls, value: Path) -> Path:
        if not value.is_dir():
            raise ValueError(f"{value} is not a folder")
        return value

    @field_validator("clickhouse_url")
    @classmethod
    def _check_clickhouse(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://", "chdb://")):
            raise ValueError("must start with http://, https:// or chdb://")
        return value

    @field_validator("connect_url", "qdrant_url")
    @classmethod
    def _check_http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value else value

    @field_validator("monitor_groups_allow", "monitor_groups_deny")
    @classmethod
    def _check_pattern(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"{value!r} is not a regular expression: {exc}") from None
        return value

    @field_validator("worker_replicas")
    @classmethod
    def _check_worker_replicas(cls, value: str | None) -> str | None:
        if value is not None:
            parse_worker_replicas(value)
        return value

    @model_validator(mode="after")
    def _kafka_follows_local_port(self) -> Settings:
        if "bootstrap_servers" not in self.kafka.model_fields_set:
            local = f"{LOOPBACK}:{self.local_kafka_port}"
            # Frozen: set once here, during validation, before anyone sees the object.
            object.__setattr__(
                self, "kafka", self.kafka.model_copy(update={"bootstrap_servers": local})
            )
            self._bootstrap_follows_local_port = True
        return self

    @model_validator(mode="after")
    def _check_sasl(self) -> Settings:
        kafka = self.kafka
        sasl = kafka.security_protocol.startswith("SASL_")
        if sasl and not kafka.sasl_mechanism:
            raise ValueError(
                f"{variable_name('kafka', 'sasl_mechanism')} must be set when "
                f"{variable_name('kafka', 'security_protocol')} is {kafka.security_protocol}"
            )
        if sasl and (not kafka.sasl_username or kafka.sasl_password is None):
            raise ValueError(
                f"{variable_name('kafka', 'sasl_username')} and "
                f"{variable_name('kafka', 'sasl_password')} must be set when "
                f"{variable_name('kafka', 'security_protocol')} is {kafka.security_protocol}"
            )
        return self

    # --- derived values --------------------------------------------------------------------------
    def as_principal(self, principal: str) -> Settings:
        """These settings with the Kafka connection of ``principal`` (see
        ``KafkaConnection.as_principal``: unchanged unless YS_KAFKA_CREDENTIALS_DIR is set)."""
        return self.model_copy(update={"kafka": self.kafka.as_principal(principal)})

    def replicas(self, group: ConsumerGroupSpec) -> int:
        """How many instances of ``group`` this deployment runs (``YS_WORKER_REPLICAS``, else the
        catalog's count)."""
        overrides = parse_worker_replicas(self.worker_replicas) if self.worker_replicas else {}
        return overrides.get(group.group_id, group.replicas)

    @property
    def kafka_bootstrap_servers(self) -> str:
        return self.kafka.bootstrap_servers

    @property
    def kafka_bootstrap_given(self) -> bool:
        """Whether YS_KAFKA_BOOTSTRAP_SERVERS was set (else the clients follow the local port)."""
        return not self._bootstrap_follows_local_port

    @property
    def local_kafka_port_given(self) -> bool:
        return "local_kafka_port" in self.model_fields_set

    @property
    def jmx_exporter_port(self) -> int:
        """The first broker's JMX exporter port (see local_jmx_exporter_port)."""
        if self.local_jmx_exporter_port is not None:
            return self.local_jmx_exporter_port
        return self.local_kafka_port + JMX_EXPORTER_PORT_OFFSET

    @cached_property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def worker_metrics_dir(self) -> Path:
        """The workers' file_sd files, one per running worker."""
        return self.home_dir / "run" / "metrics"

    @property
    def clickhouse_dsn(self) -> str:
        return self.clickhouse_url or f"chdb://{self.home_dir / 'clickhouse'}"

    @property
    def qdrant_path(self) -> Path:
        return self.home_dir / "qdrant"

    @property
    def dagster_home(self) -> Path:
        return self.home_dir / "dagster"

    @property
    def uses_local_postgres(self) -> bool:
        return self.postgres_dsn is None

    def postgres_conninfo(self) -> str:
        """The DSN to connect with: the configured one, or the local stack's cluster."""
        if self.postgres_dsn is not None:
            return self.postgres_dsn.get_secret_value()
        return f"host=127.0.0.1 port={self.postgres_port} dbname=yieldsensei user=yieldsensei"


def parse_worker_replicas(value: str) -> dict[str, int]:
    """``group=N,group=N`` as ``{group: N}``; a ValueError names the first bad entry."""
    groups = {g.group_id: g for g in CONSUMER_GROUPS}
    counts: dict[str, int] = {}
    for entry in filter(None, (part.strip() for part in value.split(","))):
        name, sep, count = (part.strip() for part in entry.partition("="))
        if not sep or not count.isdigit():
            raise ValueError(f"{entry!r} is not `group=count` (a whole number)")
        if name not in groups:
            raise ValueError(f"{name!r} is no consumer group of the catalog ({', '.join(groups)})")
        if name in counts:
            raise ValueError(f"{name!r} is given twice")
        n, most = int(count), groups[name].max_replicas
        if not 1 <= n <= most:
            raise ValueError(
                f"{name}={n}: between 1 and {most} (its widest input's partitions), "
                "stop its keep-alive sensor to run none"
            )
        counts[name] = n
    return counts


def load_settings(**overrides: Any) -> Settings:
    """Read the settings, turning validation errors into one readable sentence per variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from None
    except SourceError as exc:
        # A value pydantic-settings cannot even parse (YS_KAFKA set to something not JSON).
        raise SettingsError(f"Invalid configuration:\n  {exc}") from None


def describe_validation_error(exc: ValidationError) -> str:
    lines = ["Invalid configuration:"]
    for error in exc.errors(include_input=False, include_url=False):
        variable = variable_name(*error["loc"]) if error["loc"] else "configuration"
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"  {variable}: {message}")
    return "\n".join(lines)
