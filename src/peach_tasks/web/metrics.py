"""Prometheus metrics.

Two sources. What the store knows (runs by status, durations, last success, task
states, problems) comes from the store's per-task totals, kept in memory and rendered
ahead of the scrapes (``metrics_cache.py``), so ``peach-tasks web`` alone serves it and
every replica agrees. What only a running scheduler knows (how long
loop iterations and environment builds take, which builds and syncs failed) is recorded
in this process by ``record_*`` calls from the loops, the environment manager and the
scheduler, and served by the ``serve`` process's web server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

# Seconds; the last bound is the organisation loops' default timeout. Run durations are
# counted in these buckets by the store (a column each, see store/schema.py).
from ..store.schema import DURATION_BUCKETS
from .access import Scope
from .alert_metrics import AlertCollector
from .freshness_metrics import FreshnessCollector

if TYPE_CHECKING:
    from .metrics_cache import MetricsCache
BUILD_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


class ProcessMetrics:
    """Metrics only the running scheduler can know, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.loop_iteration = Histogram(
            "peach_tasks_loop_iteration_seconds", "Duration of one iteration of a loop (every task once)",
            ["loop"], buckets=DURATION_BUCKETS + (7200.0, 14400.0, 43200.0), registry=self.registry)
        self.environment_build = Histogram(
            "peach_tasks_environment_build_seconds", "Duration of building an organisation's environment",
            ["codops", "result"], buckets=BUILD_BUCKETS, registry=self.registry)
        self.environment_failures = Counter(
            "peach_tasks_environment_build_failures", "Environment builds that failed",
            ["codops"], registry=self.registry)
        self.sync_failures = Counter(
            "peach_tasks_sync_failures", "Repository syncs that failed inside the scheduler",
            ["repository"], registry=self.registry)
        self.replica_loops = Gauge(
            "peach_tasks_replica_leased_loops", "Loops this scheduler replica holds the lease of",
            ["replica"], registry=self.registry)


PROCESS = ProcessMetrics()


def record_loop_iteration(loop: str, seconds: float) -> None:
    """Called by a loop after each iteration that ran tasks."""
    PROCESS.loop_iteration.labels(loop=loop).observe(seconds)


def record_environment_build(codops: str, seconds: float, ok: bool) -> None:
    """Called by the environment manager after each build attempt."""
    PROCESS.environment_build.labels(codops=codops, result="success" if ok else "failure").observe(seconds)
    if not ok:
        PROCESS.environment_failures.labels(codops=codops).inc()


def record_replica(replica: str, loops: int) -> None:
    """Called by the lease keeper after each round: who this replica is, what it runs."""
    PROCESS.replica_loops.clear()
    PROCESS.replica_loops.labels(replica=replica).set(loops)


def record_sync_failure(repository: str) -> None:
    """Called by the scheduler when syncing a repository raised."""
    PROCESS.sync_failures.labels(repository=repository).inc()


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
