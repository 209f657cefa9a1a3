"""Per-task run totals (store/totals.py) on SQLite and PostgreSQL: equal to the runs, read
incrementally, right with concurrent writers, and healed when a commit comes late."""

from __future__ import annotations

import random
import threading
from collections import Counter
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from test_store import alembic

from peach_tasks.model import Executor, Outcome, RunStatus, TaskSpec
from peach_tasks.store import Store
from peach_tasks.store.schema import DURATION_BUCKETS, run_totals
from peach_tasks.store.store import TaskRegistration
from peach_tasks.store.totals import TotalsCache, add_run

SPECS = [TaskSpec(org, name, "nb.ipynb", "m", executor=Executor.PYTHON, repo="algos", source_file="peach.yaml")
         for org, name in (("a", "one"), ("a", "two"), ("b", "three"))]
STATUSES = [RunStatus.SUCCESS, RunStatus.FAILURE, RunStatus.TIMEOUT, RunStatus.SUCCESS, RunStatus.ABANDONED]


def open_store(url: str) -> Store:
    store = Store.open(url)
    store.register_tasks([TaskRegistration(spec, "v") for spec in SPECS])
    return store


def finished_runs(store: Store) -> list[dict[str, Any]]:
    return [r for s in SPECS for r in store.runs(s.codops, s.name, limit=10_000) if r["status"] != "RUNNING"]


def cache_counts(cache: TotalsCache) -> dict[tuple[str, str, str], int]:
    return {(codops, task, status): total.runs for codops, rows in cache.rows.items()
            for (task, status), total in rows.items()}


def check_equal(store: Store, cache: TotalsCache) -> None:
    """The cache says exactly what the runs say: counts, buckets, sums, last successes."""
    done = finished_runs(store)
    assert cache_counts(cache) == dict(Counter((r["codops"], r["task"], r["status"]) for r in done))
    for codops, rows in cache.rows.items():
        for (task, status), total in rows.items():
            mine = [r["duration_s"] for r in done if (r["codops"], r["task"], r["status"]) == (codops, task, status)]
            cumulative = [sum(total.buckets[: i + 1]) for i in range(len(DURATION_BUCKETS))]
            assert cumulative == [sum(1 for d in mine if d <= b) for b in DURATION_BUCKETS]
            assert total.timed == len(mine) and abs(total.duration_sum - sum(mine)) < 1e-6
    for spec in SPECS:
        successes = [r for r in done if (r["codops"], r["task"], r["status"]) == (spec.codops, spec.name, "SUCCESS")]
        newest = max((r["finished_at"] for r in successes), default=None)
        seen = cache.last_success(spec.codops, spec.name)
        assert (seen and seen.isoformat(timespec="milliseconds").replace("+00:00", "Z")) == newest


def test_totals_follow_the_runs_and_refresh_reads_only_what_changed(database_url: str) -> None:
    store = open_store(database_url)
    running: list[int] = []
    try:
        cache = TotalsCache(store)
        for i in range(40):
            run_id = store.start_run(SPECS[i % 3], "v", "c", "me")
            if i % 4 == 3:
                running.append(run_id)  # ends later: counted then, once
            else:
                store.finish_run(run_id, Outcome(STATUSES[i % len(STATUSES)]), started_monotonic=None)
        assert cache.refresh() == {"a", "b"}
        check_equal(store, cache)
        assert cache.refresh() == set()  # nothing new: nothing counted twice
        check_equal(store, cache)
        store.finish_run(running.pop(), Outcome(RunStatus.SUCCESS))  # a run of a/one (i = 39)
        assert cache.refresh() == {"a"}  # only the organisation whose task ended is read again
        check_equal(store, cache)
        for run_id in running:
            store.finish_run(run_id, Outcome(RunStatus.FAILURE))
        cache.refresh()
        check_equal(store, cache)
        # The task list counts from the same totals.
        listed = {t["name"]: (t["successes"], t["failures"]) for t in store.tasks()}
        done = finished_runs(store)
        for spec in SPECS:
            mine = [r["status"] for r in done if r["task"] == spec.name]
            assert listed[spec.name] == (mine.count("SUCCESS"), mine.count("FAILURE") + mine.count("TIMEOUT"))
    finally:
        store.close()


def test_replicas_finishing_runs_at_once_while_a_reader_refreshes(database_url: str) -> None:
    """Two stores (two replicas' engines) end runs of the same tasks concurrently while a third
    refreshes all along: the reader ends with the exact totals, nothing lost or doubled."""
    stores = [open_store(database_url) for _ in range(3)]
    reader = TotalsCache(stores[2])
    done = threading.Event()
    errors: list[BaseException] = []

    def replica(store: Store, seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(60):
                run_id = store.start_run(rng.choice(SPECS), "v", "c", f"r{seed}")
                store.finish_run(run_id, Outcome(rng.choice(STATUSES)))
        except BaseException as exc:  # reported below
            errors.append(exc)

    def read() -> None:
        while not done.is_set():
            reader.refresh()

    try:
        threads = [threading.Thread(target=replica, args=(stores[i], i)) for i in range(2)]
        refresher = threading.Thread(target=read)
        refresher.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        done.set()
        refresher.join()
        assert errors == []
        reader.refresh()
        check_equal(stores[2], reader)
        assert sum(cache_counts(reader).values()) == 120
    finally:
        for store in stores:
            store.close()


def test_a_change_committed_late_is_read_again(postgres_url: str) -> None:
    """PostgreSQL: a transaction takes its change number, another one commits a larger number
    first. A reader that only looked above what it saw would miss the first one for good; the
    window reads it, and so does the periodic whole read."""
    store = open_store(postgres_url)
    try:
        narrow, windowed, resynced = (TotalsCache(store, window=0, resync_seconds=3600),
                                      TotalsCache(store, window=10, resync_seconds=3600),
                                      TotalsCache(store, window=0, resync_seconds=0))
        for cache in (narrow, windowed, resynced):
            cache.refresh()
        now = datetime.now(timezone.utc)
        late = store.engine.connect()
        late_tx = late.begin()
        add_run(late, "a", "one", "SUCCESS", 1.0, now)  # its number is taken, not yet committed
        with store.engine.begin() as conn:
            add_run(conn, "b", "three", "FAILURE", 2.0, now)  # a larger number, committed first
        for cache in (narrow, windowed, resynced):
            cache.refresh()
            assert cache.last_success("a", "one") is None
        late_tx.commit()
        late.close()
        for cache in (narrow, windowed, resynced):
            cache.refresh()
        assert narrow.last_success("a", "one") is None  # what a window of 0 would miss
        assert windowed.last_success("a", "one") is not None and resynced.last_success("a", "one") is not None
    finally:
        store.close()


def test_upgrade_sums_the_existing_history(database_url: str) -> None:
    alembic(database_url, "upgrade", "0009")
    engine = sa.create_engine(database_url)
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    rows = [dict(codops="a", task="one", loop="a", executor="python", started_at=at, finished_at=at,
                 status=status, duration_s=duration, owner="old")
            for status, duration in (("SUCCESS", 0.2), ("SUCCESS", 7.0), ("FAILURE", 4000.0), ("ABANDONED", None),
                                     ("RUNNING", None))]
    with engine.begin() as conn:
        conn.execute(sa.table("runs", *[sa.column(k) for k in rows[0]]).insert(), rows)
    engine.dispose()
    store = Store.open(database_url, migrate=True)
    try:
        cache = TotalsCache(store)
        cache.refresh()
        assert cache_counts(cache) == {("a", "one", "SUCCESS"): 2, ("a", "one", "FAILURE"): 1,
                                       ("a", "one", "ABANDONED"): 1}
        success = cache.rows["a"][("one", "SUCCESS")]
        assert success.buckets[0] == 1 and success.buckets[4] == 1 and success.timed == 2  # 0.2 <= 0.5, 7 <= 10
        assert cache.rows["a"][("one", "FAILURE")].buckets[-1] == 1  # above every bound
        assert cache.rows["a"][("one", "ABANDONED")].timed == 0
        # The next change is numbered above the summed rows (PostgreSQL: the sequence was moved on).
        before = cache.watermark
        store.register_tasks([TaskRegistration(SPECS[0], "v")])
        store.finish_run(store.start_run(SPECS[0], "v", "c", "me"), Outcome(RunStatus.SUCCESS))
        assert cache.refresh() == {"a"} and cache.watermark > before
        with store.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(run_totals)).scalar() == 3
    finally:
        store.close()
