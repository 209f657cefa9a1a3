"""``/metrics`` parses with prometheus-client's parser and its counts match the runs."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from conftest import Repo, py_task, task_yaml, write_settings
from prometheus_client.parser import text_string_to_metric_families
from web_helpers import Filled, start_server

from peach_tasks.observability.metrics import DURATION_BUCKETS, PROCESS, record_sync_failure
from peach_tasks.scheduling.scheduler import Scheduler
from peach_tasks.settings import load_settings
from peach_tasks.store import Store
from peach_tasks.web.access import Scope
from peach_tasks.web.metrics import ScopedCollector
from peach_tasks.web.server import WebServer


def scrape(web: WebServer) -> dict[str, list[Any]]:
    response = httpx.get(web.url + "/metrics", timeout=30)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    families: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(response.text):
        families.setdefault(family.name, []).extend(family.samples)
    return families


def all_runs(store: Store) -> list[dict[str, Any]]:
    return [r for t in store.tasks() for r in store.runs(t["codops"], t["name"], limit=1000)]


def test_run_counts_match_the_store(filled: Filled, server: WebServer) -> None:
    families = scrape(server)
    counted = {(s.labels["codops"], s.labels["task"], s.labels["status"]): s.value
               for s in families["peach_tasks_runs"] if s.name == "peach_tasks_runs_total"}
    expected = Counter((r["codops"], r["task"], r["status"]) for r in all_runs(filled.store))
    assert counted == {key: float(n) for key, n in expected.items()}
    assert counted[("chrts", "flaky", "FAILURE")] == 1.0 and counted[("chrts", "steady", "SUCCESS")] == 2.0


def test_duration_histogram_matches_the_runs(filled: Filled, server: WebServer) -> None:
    samples = scrape(server)["peach_tasks_run_duration_seconds"]
    runs = all_runs(filled.store)
    for codops, status in {(r["codops"], r["status"]) for r in runs}:
        durations = [r["duration_s"] for r in runs if (r["codops"], r["status"]) == (codops, status)]
        mine = [s for s in samples if s.labels["codops"] == codops and s.labels["status"] == status]
        count = next(s.value for s in mine if s.name.endswith("_count"))
        total = next(s.value for s in mine if s.name.endswith("_sum"))
        buckets = {float(s.labels["le"]): s.value for s in mine if s.name.endswith("_bucket")}
        assert count == len(durations) and abs(total - sum(durations)) < 1e-6
        assert buckets[float("inf")] == count
        for bound in DURATION_BUCKETS:
            assert buckets[bound] == sum(1 for d in durations if d <= bound)


def test_last_success_and_task_states(filled: Filled, server: WebServer) -> None:
    families = scrape(server)
    last = {(s.labels["codops"], s.labels["task"]): s.value
            for s in families["peach_tasks_last_success_timestamp_seconds"]}
    for (codops, task), value in last.items():
        newest = next(r for r in filled.store.runs(codops, task, limit=100) if r["status"] == "SUCCESS")
        assert abs(value - datetime.fromisoformat(newest["finished_at"].replace("Z", "+00:00")).timestamp()) < 1e-3
    assert set(last) == {("chrts", "steady"), ("chrts", "flaky"), ("sesr", "secret")}
    states = {(s.labels["codops"], s.labels["state"]): s.value for s in families["peach_tasks_tasks"]}
    assert states == {("chrts", "FINISHED"): 2.0, ("sesr", "FINISHED"): 1.0}
    # The environments were built while filling the store, in this process.
    builds = {s.labels["codops"]: s.value for s in families["peach_tasks_environment_build_seconds"]
              if s.name.endswith("_count") and s.labels["result"] == "success"}
    assert builds.get("chrts", 0) >= 1 and builds.get("sesr", 0) >= 1


def test_loop_iterations_of_a_serving_scheduler_are_measured(tmp_path: Path) -> None:
    repo = Repo(tmp_path / "algos")
    repo.notebook("nb.ipynb", "def main():\n    return 1\n")
    repo.write("peach.yaml", task_yaml("looped", {"t": py_task("nb.ipynb", "main")}))
    repo.commit()
    # A pace keeps the loop from starting a second run before serve's stop reaches it
    # (a replica's loops stop on their own event, set by the stop a moment later).
    settings = load_settings(write_settings(tmp_path, [{"url": str(repo.path)}],
                                            loop={"min_iteration_seconds": 60, "sync_interval_seconds": 1}))
    store = Store.open(settings.database_url)
    scheduler = Scheduler(settings, store, on_run=lambda event: scheduler.stop_event.set())
    try:
        scheduler.serve(duration=120)  # the first finished run stops it: one full iteration
        web = start_server(settings, store)
        try:
            families = scrape(web)
        finally:
            web.stop()
    finally:
        scheduler.close()
        store.close()
    iterations = {s.labels["loop"]: s.value for s in families["peach_tasks_loop_iteration_seconds"]
                  if s.name.endswith("_count")}
    assert iterations.get("looped", 0) >= 1
    runs = {s.labels["status"]: s.value for s in families["peach_tasks_runs"] if s.labels["codops"] == "looped"}
    assert runs == {"SUCCESS": 1.0}


def test_in_process_metrics_are_limited_to_a_tokens_organisations() -> None:
    record_sync_failure("a-repository")
    PROCESS.loop_iteration.labels(loop="chrts").observe(1.0)
    PROCESS.loop_iteration.labels(loop="metadata").observe(1.0)
    everything = {(s.name, tuple(sorted(s.labels.items()))) for f in ScopedCollector(PROCESS.registry, Scope()).collect()
                  for s in f.samples}
    assert ("peach_tasks_sync_failures_total", (("repository", "a-repository"),)) in everything
    limited = [s for f in ScopedCollector(PROCESS.registry, Scope(frozenset({"chrts"}))).collect() for s in f.samples]
    owners = {s.labels.get("loop") or s.labels.get("codops") or s.labels.get("repository") for s in limited}
    assert owners == {"chrts"}  # no other organisation's, no shared loop's, no repository's series


def test_a_scrape_reads_nothing_from_the_store(filled: Filled, server: WebServer) -> None:
    """The store's families come from memory: a scrape runs no SQL statement (the refresher
    thread reads the store, on its own schedule)."""
    import threading

    import sqlalchemy as sa

    scrape(server)  # loaded
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if threading.current_thread().name != "metrics-refresh":
            statements.append(statement)

    engine = server.app.state.store.engine
    sa.event.listen(engine, "before_cursor_execute", seen)
    try:
        families = scrape(server)
    finally:
        sa.event.remove(engine, "before_cursor_execute", seen)
    assert families["peach_tasks_runs"] and statements == []
