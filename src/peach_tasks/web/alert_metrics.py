"""``peach_tasks_alerts{state}``: the alert outbox by state, as the metrics' refresher last
counted it (one small GROUP BY there, none at the scrape). Alerts are the platform's:
only a token that sees every organisation sees them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..store.alert_outbox import DONE, QUEUED
from .access import Scope


class AlertCollector(Collector):
    def __init__(self, counts: Mapping[str, int], scope: Scope) -> None:
        self.counts, self.scope = counts, scope

    def collect(self) -> Iterator[Metric]:
        if not self.scope.everything:
            return
        family = GaugeMetricFamily("peach_tasks_alerts", "Alerts in the outbox by state (PENDING and SENDING wait; "
                                   "FAILED were given up; SUPPRESSED and DROPPED were over a limit)",
                                   labels=["state"])
        for state in sorted({*QUEUED, *DONE}):
            family.add_metric([state], float(self.counts.get(state, 0)))
        yield family
