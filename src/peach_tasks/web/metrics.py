"""Prometheus metrics.

Two sources. What the store knows (runs by status, durations, last success, task
states, problems) is read from the database at scrape time (run totals incrementally,
see ``run_totals.py``), so ``peach-tasks web`` alone serves it and every replica agrees. What only a running scheduler knows (how long
loop iterations and environment builds take, which builds and syncs failed) is recorded
in this process by ``record_*`` calls from the loops, the environment manager and the
scheduler, and served by the ``serve`` process's web server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .access import Scope, scoped_problems
from .freshness_metrics import FreshnessCollector
from .run_totals import RunTotals

if TYPE_CHECKING:
    from ..store import Store

# Seconds; the last bound is the organisation loops' default timeout.
DURATION_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
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


class StoreCollector(Collector):
    """Metric families from the store, computed when Prometheus scrapes.

    Run totals come from ``totals``, which reads only the runs new since the last scrape;
    task states and problems are small tables, read whole each time.
    """

    def __init__(self, store: "Store", scope: Scope, totals: RunTotals) -> None:
        self.store, self.scope, self.totals = store, scope, totals

    def collect(self) -> Iterator[Metric]:
        self.totals.refresh(self.store)
        allows = self.scope.allows
        runs = CounterMetricFamily("peach_tasks_runs", "Finished runs by organisation, task and final status",
                                   labels=["codops", "task", "status"])
        for (codops, task, status), n in sorted(self.totals.counts.items()):
            if allows(codops):
                runs.add_metric([codops, task, status], n)
        yield runs
        last_success = GaugeMetricFamily("peach_tasks_last_success_timestamp_seconds",
                                         "Unix time when each task's last successful run ended",
                                         labels=["codops", "task"])
        for (codops, task), when in sorted(self.totals.last_success.items()):
            if allows(codops):
                last_success.add_metric([codops, task], when.timestamp())
        yield last_success
        durations = HistogramMetricFamily("peach_tasks_run_duration_seconds",
                                          "Duration of finished runs by organisation and status",
                                          labels=["codops", "status"])
        bounds = [floatToGoString(b) for b in DURATION_BUCKETS] + ["+Inf"]
        for (codops, status), buckets in sorted(self.totals.durations.items()):
            if allows(codops):
                durations.add_metric([codops, status], list(zip(bounds, buckets.cumulative())),
                                     sum_value=buckets.total)
        yield durations
        states = GaugeMetricFamily("peach_tasks_tasks", "Active tasks by organisation and state",
                                   labels=["codops", "state"])
        for row in self.store.task_state_counts(self.scope.organisations):
            states.add_metric([row["codops"], row["state"]], row["count"])
        yield states
        yield self._problems()

    def _problems(self) -> Metric:
        family = GaugeMetricFamily("peach_tasks_problems", "Open problems (sync, config, environment) "
                                   "as shown by 'peach-tasks sync'", labels=["kind", "scope"])
        counts: dict[tuple[str, str], int] = {}
        for p in scoped_problems(self.store, self.scope):
            counts[(p["kind"], p["scope"])] = counts.get((p["kind"], p["scope"]), 0) + 1
        for (kind, scope), n in sorted(counts.items()):
            family.add_metric([kind, scope], n)
        return family


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


def render(store: "Store", scope: Scope, totals: RunTotals) -> bytes:
    """The Prometheus text exposition for one scrape, limited to ``scope``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store, scope, totals))
    registry.register(FreshnessCollector(store, scope))
    registry.register(ScopedCollector(PROCESS.registry, scope))
    return generate_latest(registry)
