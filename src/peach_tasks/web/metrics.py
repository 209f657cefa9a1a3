"""Prometheus metrics: ``/metrics``, limited to the caller's organisations.

Two sources. What the store knows comes from the store's per-task totals, rendered ahead
of the scrapes (``metrics_cache.py``); what only a running scheduler knows is recorded in
this process (``observability/metrics.py``) and served by the ``serve`` process's web server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from ..observability.metrics import PROCESS
from .access import Scope
from .alert_metrics import AlertCollector
from .freshness_metrics import FreshnessCollector

if TYPE_CHECKING:
    from .metrics_cache import MetricsCache


class ScopedCollector(Collector):
    """The in-process metrics, limited to the series of the scope's organisations.

    A series belongs to the organisation in its ``codops`` or ``loop`` label; series of
    the shared metadata loop or of a repository belong to no single organisation and
    are shown to tokens that see every organisation only.
    """

    def __init__(self, source: CollectorRegistry, scope: Scope) -> None:
        self.source, self.scope = source, scope

    def collect(self) -> Iterator[Metric]:
        for family in self.source.collect():
            if self.scope.everything:
                yield family
                continue
            kept = [s for s in family.samples if (owner := self._owner(s.labels)) and self.scope.allows(owner)]
            clone = Metric(family.name, family.documentation, family.type, family.unit)
            clone.samples = kept
            yield clone

    @staticmethod
    def _owner(labels: dict[str, Any]) -> str | None:
        return labels.get("codops") or labels.get("loop")


def render(scope: Scope, cache: MetricsCache) -> bytes:
    """The Prometheus text exposition for one scrape, limited to ``scope``: the store's
    families from ``cache`` (rendered ahead), then this process's own."""
    stored = cache.render(scope)  # first: it loads the cache on the first scrape
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FreshnessCollector(cache.snapshot.freshness, scope))  # from memory too
    registry.register(AlertCollector(cache.snapshot.alerts, scope))
    registry.register(ScopedCollector(PROCESS.registry, scope))
    return stored + generate_latest(registry)
