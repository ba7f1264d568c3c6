"""The local stack: Kafka (KRaft) and PostgreSQL as processes on this machine, no Docker.

`ys-platform local up|down|status|logs` is the command-line face of these functions. Nothing here
imports Dagster, so the CLI and the test fixtures start services without loading the platform.
"""

from ys_platform.local.stack import down, is_secure, kafka_bootstrap, log_path, status, up
from ys_platform.local.state import LocalStackError, ServiceStatus

__all__ = [
    "LocalStackError",
    "ServiceStatus",
    "down",
    "is_secure",
    "kafka_bootstrap",
    "log_path",
    "status",
    "up",
]
