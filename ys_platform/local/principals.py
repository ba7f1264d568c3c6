"""Every principal of the catalog on the secure local stack: a credential file and a SCRAM user.

``ys-platform local up --secure`` makes them after Kafka is up (as the administrator), so that a
component started with ``YS_KAFKA_CREDENTIALS_DIR=$YS_HOME/secrets`` finds its own
``<principal>.env`` (``KafkaConnection.as_principal``). What each principal may do is the ACL
reconcile's (``ys-platform acls apply``, the ``kafka_acls`` asset), not this module's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from confluent_kafka.admin import AdminClient

from ys_platform.connectors import connector_files
from ys_platform.local import kafka
from ys_platform.local.secrets import Credential, ensure_credential
from ys_platform.local.state import Layout, LocalStackError
from ys_platform.security.principals import Principal, principals
from ys_platform.security.users import ScramUserError, ensure_scram_users
from ys_platform.settings import Settings


def ensure_catalog_principals(
    settings: Settings, layout: Layout, bootstrap_servers: str
) -> list[Credential]:
    """The credential of every catalog principal (generated on first use, kept after), each
    with its SCRAM user upserted on the cluster. Raises LocalStackError naming what failed."""
    admin = AdminClient(kafka.client_config(layout, bootstrap_servers))
    found = principals(connector_files(settings.connectors_dir))
    return ensure_principals(layout.home, admin, bootstrap_servers, found)


def ensure_principals(
    home: Path, admin: AdminClient, bootstrap_servers: str, found: Sequence[Principal]
) -> list[Credential]:
    """A credential in ``home``'s secrets and a SCRAM user (upserted through ``admin``, an
    administrator's client) for each principal of ``found``: what an operator does for new
    principals before granting them their ACLs."""
    credentials = [
        ensure_credential(home, p.name, bootstrap_servers=bootstrap_servers) for p in found
    ]
    try:
        ensure_scram_users(admin, credentials)
    except ScramUserError as exc:
        raise LocalStackError(f"kafka: {exc}") from None
    return credentials
