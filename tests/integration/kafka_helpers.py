"""Small helpers shared by the integration tests that talk to the local broker."""

import time

from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from ys_platform.streaming.topics import describe_topics

# A config change goes through the KRaft controller and reaches the broker that answers
# describe_configs a moment later; 15 s is far above the ~100 ms seen here.
PROPAGATION_TIMEOUT_S = 15.0


def set_config_by_hand(admin: AdminClient, topic: str, key: str, value: str) -> None:
    """Alter a topic config as an operator would, and wait until the cluster reports it."""
    entry = ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource("topic", topic, incremental_configs=[entry])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)
    deadline = time.monotonic() + PROPAGATION_TIMEOUT_S
    while describe_topics(admin, [topic])[topic].configs.get(key) != value:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{topic}: {key}={value} not visible after {PROPAGATION_TIMEOUT_S}s"
            )
        time.sleep(0.1)
