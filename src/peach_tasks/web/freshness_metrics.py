"""``/metrics`` families for freshness, answered from the ``tasks`` table alone.

Each run's end keeps a task's last success up to date in its row (``Store.finish_run``);
the metrics' refresher reads one row per task that declares a freshness (``metrics_cache``),
never the runs, and a scrape computes the ages from those rows in memory: three series per
such task, none for the others (their last success is in
``peach_tasks_last_success_timestamp_seconds``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Sequence

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..store.times import utcnow
from .access import Scope

if TYPE_CHECKING:
    from ..store.freshness import Freshness


class FreshnessCollector(Collector):
    """``rows``: ``Store.freshness()`` as the refresher last read it, for every organisation."""

    def __init__(self, rows: Sequence[tuple[str, str, "Freshness"]], scope: Scope) -> None:
        self.rows, self.scope = rows, scope

    def collect(self) -> Iterator[Metric]:
        now = utcnow()
        stale = GaugeMetricFamily("peach_tasks_task_stale", "1 when the task's last success is older than its "
                                  "freshness (or it never succeeded since defined that long ago), else 0",
                                  labels=["codops", "task"])
        since = GaugeMetricFamily("peach_tasks_task_seconds_since_success", "Seconds since the task's last "
                                  "successful run ended (tasks with a freshness that succeeded once)",
                                  labels=["codops", "task"])
        limit = GaugeMetricFamily("peach_tasks_task_freshness_seconds", "The task's freshness: how old its "
                                  "last success may be", labels=["codops", "task"])
        mine = [row for row in self.rows if self.scope.allows(row[0])]
        for codops, task, state in sorted(mine, key=lambda r: r[:2]):
            stale.add_metric([codops, task], 1.0 if state.stale(now) else 0.0)
            limit.add_metric([codops, task], state.freshness_s or 0.0)
            seconds = state.since_success(now)
            if seconds is not None:
                since.add_metric([codops, task], seconds)
        yield stale
        yield since
        yield limit
