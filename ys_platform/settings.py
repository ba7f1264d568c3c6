"""Every ``YS_*`` environment variable, in one place.

The platform reads its configuration once, here, and fails closed: a bad value stops start-up with
a sentence that names the variable, never a bare pydantic traceback. Secrets are ``SecretStr`` and
have no defaults; nothing in this module prints them.
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "YS_"

_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.\-]+):(\d{1,5})$")

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class SettingsError(ValueError):
    """A configuration value is missing or wrong; the message names the variable."""


class Settings(BaseSettings):
    """The platform's configuration, from ``YS_*`` environment variables."""

    # No env_file: reading files is I/O at import of the code location; `dagster dev` and the
    # Makefile load a project `.env` into the environment themselves.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="ignore",
        frozen=True,
    )

    home: Path = Field(
        default=Path(".ys"),
        description="State folder of the local stack (Kafka logs, Postgres cluster, chDB, Qdrant, "
        "Dagster). Relative paths are taken from the current directory.",
    )

    # --- Kafka -----------------------------------------------------------------------------------
    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        description="Comma-separated host:port list of Kafka brokers.",
    )
    kafka_client_id: str = Field(default="ys-platform", min_length=1)
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_location: Path | None = None
    kafka_ssl_certificate_location: Path | None = None
    kafka_ssl_key_location: Path | None = None
    kafka_ssl_key_password: SecretStr | None = None

    local_kafka_port: int = Field(
        default=9092,
        ge=1024,
        le=65000,
        description="Listener port of the local stack's first broker (the seed's 9092); broker i "
        "listens on port+i-1 and its KRaft controller on port+100+i-1.",
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

    # --- validation ------------------------------------------------------------------------------
    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",") if s.strip()]
        if not servers:
            raise ValueError("needs at least one host:port")
        for server in servers:
            match = _HOST_PORT.match(server)
            if not match or not 0 < int(match.group(2)) < 65536:
                raise ValueError(f"{server!r} is not host:port")
        return ",".join(servers)

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

    @model_validator(mode="after")
    def _check_sasl(self) -> Settings:
        sasl = self.kafka_security_protocol.startswith("SASL_")
        if sasl and not self.kafka_sasl_mechanism:
            raise ValueError(
                f"{ENV_PREFIX}KAFKA_SASL_MECHANISM must be set when "
                f"{ENV_PREFIX}KAFKA_SECURITY_PROTOCOL is {self.kafka_security_protocol}"
            )
        if sasl and (not self.kafka_sasl_username or self.kafka_sasl_password is None):
            raise ValueError(
                f"{ENV_PREFIX}KAFKA_SASL_USERNAME and {ENV_PREFIX}KAFKA_SASL_PASSWORD must be set "
                f"when {ENV_PREFIX}KAFKA_SECURITY_PROTOCOL is {self.kafka_security_protocol}"
            )
        return self

    # --- derived locations -----------------------------------------------------------------------
    @cached_property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

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


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning validation errors into one readable sentence per variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    lines = ["Invalid configuration:"]
    for error in exc.errors(include_input=False, include_url=False):
        field = ".".join(str(part) for part in error["loc"])
        variable = f"{ENV_PREFIX}{field.upper()}" if field else "configuration"
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"  {variable}: {message}")
    return "\n".join(lines)
