"""The Prometheus collector of a periodic check's latest report (health, source freshness).

The monitor runs each check once per lag poll and keeps its report; a scrape renders the report
it finds instead of checking again. Each check names how its report becomes metric families.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

# The label every lag monitor series carries (Settings.monitor_cluster_name in the monitor).
DEFAULT_CLUSTER_NAME = "ys-local"

Report = TypeVar("Report")


class ReportCollector(Collector, Generic[Report]):
    """The report ``latest`` returns, as metric families at each scrape.

    ``latest`` returns the report to show (the monitor's last poll; a test may check on each
    scrape); None before the first poll exports nothing.
    """

    def __init__(
        self,
        latest: Callable[[], Report | None],
        cluster_name: str = DEFAULT_CLUSTER_NAME,
    ) -> None:
        self._latest = latest
        self.cluster_name = cluster_name

    @abstractmethod
    def render(self, report: Report) -> Iterable[Metric]:
        """The families of one report, labelled with :attr:`cluster_name`."""

    def collect(self) -> Iterator[Metric]:
        report = self._latest()
        if report is not None:
            yield from self.render(report)
