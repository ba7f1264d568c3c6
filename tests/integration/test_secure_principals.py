"""Every catalog principal on the secure stack: a credential file of its own and a SCRAM user
the brokers authenticate, reached through ``YS_KAFKA_CREDENTIALS_DIR`` alone."""

from __future__ import annotations

import stat

from ys_platform.connectors import connector_files
from ys_platform.security.principals import principals


def test_every_catalog_principal_has_a_credential_the_brokers_accept(secure_stack):
    folder = secure_stack.home / "secrets"
    found = principals(connector_files(secure_stack.settings.connectors_dir))
    assert len(found) >= 10  # processors, sinks, connectors, Connect, producers, monitor, Dagster
    # The administrator's connection plus the folder: each component becomes its own principal.
    shared = secure_stack.connection(credentials_dir=folder)
    passwords = set()
    for principal in found:
        path = folder / f"{principal.name}.env"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        connection = shared.as_principal(principal.name)
        assert connection.sasl_username == principal.name
        passwords.add(connection.sasl_password.get_secret_value())
        # Authenticated (a wrong password or an unknown user fails the SASL handshake); with
        # no ACL of its own it sees no topic of the admin's.
        admin = connection.admin()
        metadata = admin.list_topics(timeout=20)
        assert len(metadata.brokers) == 1, principal.name
    assert len(passwords) == len(found)  # one password each
