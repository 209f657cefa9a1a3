"""The metrics only a running scheduler knows, recorded in this process.

The loops, the environment manager, the scheduler and the lease keeper call ``record_*``;
the web's ``/metrics`` (``web/metrics.py``) serves them beside what the store knows. They
live here, not in ``web/``, so that the engine never imports the views.

What only a running scheduler knows: how long loop iterations and environment builds
take, which builds and syncs failed, how many loops this replica leases. What the store
knows is not here: ``web/metrics_cache.py`` reads it from the store's per-task totals.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Seconds; the last bound is the organisation loops' default timeout. Run durations are
# counted in these buckets by the store (a column each, see store/schema.py).
from ..store.schema import DURATION_BUCKETS

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
