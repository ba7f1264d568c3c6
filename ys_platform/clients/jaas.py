"""The ``sasl.jaas.config`` line of a Java Kafka client: a broker toward the others, the Connect
worker and its connectors' clients, the Java benchmark peer.

librdkafka clients (ours) take ``sasl.username``/``sasl.password`` instead; Java clients take one
JAAS line naming the login module of the SASL mechanism.
"""

from __future__ import annotations

_SCRAM = "org.apache.kafka.common.security.scram.ScramLoginModule"
LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": _SCRAM,
    "SCRAM-SHA-512": _SCRAM,
}


def jaas_config(mechanism: str, username: str, password: str) -> str:
    """The JAAS line logging ``username`` in with ``password`` over ``mechanism``.

    ``password`` may be a config-provider reference (``${env:...}``, ``${file:...}``) that the
    Java process resolves itself, which keeps the secret out of the line's source.
    """
    module = LOGIN_MODULES.get(mechanism)
    if module is None:
        raise ValueError(
            f"no JAAS login module for SASL mechanism {mechanism!r}; "
            f"supported: {', '.join(LOGIN_MODULES)}"
        )
    for name, value in (("username", username), ("password", password)):
        # A quote or backslash would end the JAAS option early (or be read as an escape).
        if '"' in value or "\\" in value:
            raise ValueError(f"a JAAS {name} cannot hold '\"' or '\\\\'")
    return f'{module} required username="{username}" password="{password}";'
