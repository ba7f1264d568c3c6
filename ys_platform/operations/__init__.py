"""The operator's tools behind ``ys-platform groups|topics|dlq|sql``: Dagster-free, one job each.

* :mod:`.groups`: consumer groups, their lag, and resetting their offsets;
* :mod:`.inspect`: a topic's partitions, replicas, configs and offsets, and its last records;
* :mod:`.dead_letters`: what a group dead-lettered, and replaying it at most once;
* :mod:`.sql`: a statement on ClickHouse and its result as a table, CSV or JSON.
"""

from ys_platform.operations.admin import OperationError

__all__ = ["OperationError"]
