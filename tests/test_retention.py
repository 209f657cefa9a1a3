"""Retention on SQLite and PostgreSQL: what goes and what stays, the lease, a stop, the CLI,
and 100,000 runs pruned while a real loop runs real tasks."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from conftest import Repo, py_task, task_yaml, wait_for, write_settings

from peach_tasks.cli import main
from peach_tasks.model import Executor, Outcome, RunStatus, TaskSpec
from peach_tasks.scheduling.retention import LEASE, Pruner, plan
from peach_tasks.settings import RetentionSettings, SettingsError, load_settings, settings_from_dict
from peach_tasks.store import Store
from peach_tasks.store.leases import LeaseStore
from peach_tasks.store.schema import log_chunks, runs
from peach_tasks.store.store import TaskRegistration
from peach_tasks.store.totals import TotalsCache

DAY = timedelta(days=1)
SPECS = [TaskSpec("a", f"t{i}", "nb.ipynb", "m", executor=Executor.PYTHON, repo="algos", source_file="peach.yaml")
         for i in range(3)]


def policy(**changes: Any) -> RetentionSettings:
    return RetentionSettings(**{"runs_days": 90, "logs_days": 30, "keep_last": 3, "batch": 4, "pause": 0,
                                **changes})


def store_with_runs(url: str, per_task: int = 10) -> Store:
    """Each task's runs, finished now, with a log line and the same totals as any real run."""
    store = Store.open(url)
    store.register_tasks([TaskRegistration(spec, "v") for spec in SPECS])
    for _ in range(per_task):
        for spec in SPECS:
            run_id = store.start_run(spec, "v", "c", "me")
            writer = store.log_writer(run_id)
            writer.write(f"run {run_id} says hello")
            store.finish_run(run_id, Outcome(RunStatus.SUCCESS), log=writer)
    return store


def age(store: Store, run_ids: list[int], days: float) -> None:
    """Make runs look as if they ended ``days`` ago."""
    when = datetime.now(timezone.utc) - timedelta(days=days)
    with store.engine.begin() as conn:
        conn.execute(runs.update().where(runs.c.id.in_(run_ids)).values(started_at=when, finished_at=when))


def ids_of(store: Store, spec: TaskSpec) -> list[int]:
    return sorted(r["id"] for r in store.runs(spec.codops, spec.name, limit=10_000))


def totals(store: Store) -> dict[Any, Any]:
    cache = TotalsCache(store)
    cache.refresh()
    return {c: dict(rows) for c, rows in cache.rows.items()}


def test_old_runs_go_old_logs_go_the_newest_stay(database_url: str) -> None:
    store = store_with_runs(database_url)
    try:
        first = SPECS[0]
        ids = ids_of(store, first)  # 10 runs
        age(store, ids[:4], 100)  # old enough to go whole...
        age(store, ids[4:8], 40)  # ...old enough to lose their log
        age(store, ids[8:9], 100)  # old, but among the 3 newest by id (keep_last): stays whole
        running = store.start_run(first, "v", "c", "me")  # RUNNING: never touched
        age(store, [running], 100)
        with store.engine.begin() as conn:  # a RUNNING run has no end: it would never match anyway
            conn.execute(runs.update().where(runs.c.id == running).values(finished_at=None))
        others = {spec.name: ids_of(store, spec) for spec in SPECS[1:]}
        for spec in SPECS[1:]:
            age(store, ids_of(store, spec), 100)  # all old: only keep_last stay
        before = totals(store)
        planned = {(p.codops, p.task): p for p in plan(store, policy())}
        pruner = Pruner(policy(), store, "me")
        result = pruner.round()
        assert result.skipped is None
        # What the dry run said is what went.
        assert result.runs == sum(p.runs for p in planned.values()) == 4 + 2 * 7
        assert result.logs == sum(p.logs for p in planned.values()) == 4
        assert result.batches >= (result.runs + result.logs) // 4  # batches of at most 4 runs
        kept = ids_of(store, first)
        assert kept == ids[4:] + [running]
        for spec in SPECS[1:]:  # only the newest keep_last
            assert ids_of(store, spec) == others[spec.name][-3:]
        for run_id in ids[4:8]:
            run = store.run(run_id)
            assert run is not None and run["log_pruned_at"] is not None
            assert "removed by retention" in (store.log(run_id) or "") and "says hello" not in store.log(run_id)
        for run_id in ids[8:]:
            assert f"run {run_id} says hello" in (store.log(run_id) or "")
            assert store.run(run_id)["log_pruned_at"] is None  # type: ignore[index]
        with store.engine.connect() as conn:  # no log left behind by a removed run
            assert conn.execute(sa.select(sa.func.count()).select_from(log_chunks)
                                .where(log_chunks.c.run_id.in_(ids[:4]))).scalar() == 0
        # Counters never go down: the totals (and so /metrics and the task list) are unchanged.
        assert totals(store) == before
        assert {t["name"]: t["successes"] for t in store.tasks()} == {"t0": 10, "t1": 10, "t2": 10}
        # Nothing more to do: a second round removes nothing.
        again = Pruner(policy(), store, "me").round()
        assert (again.runs, again.logs) == (0, 0) and plan(store, policy()) == []
    finally:
        store.close()


def test_a_round_waits_for_the_replica_holding_the_lease(database_url: str) -> None:
    store = store_with_runs(database_url, per_task=5)
    try:
        age(store, [i for spec in SPECS for i in ids_of(store, spec)], 100)
        leases = LeaseStore(store.engine)
        assert leases.try_acquire(LEASE, "other-replica", leases.now(), 60) is not None
        result = Pruner(policy(), store, "me").round()
        assert result.skipped == "another replica is pruning" and result.runs == 0
        assert sum(len(ids_of(store, spec)) for spec in SPECS) == 15
        leases.release("other-replica", [LEASE])
        assert Pruner(policy(), store, "me").round().runs == 6  # 5 - 3 per task
        assert LEASE not in {lease.loop for lease in leases.leases() if lease.owner}  # released after the round
    finally:
        store.close()


def test_a_stop_ends_a_round_between_batches(database_url: str) -> None:
    store = store_with_runs(database_url, per_task=10)
    try:
        age(store, [i for spec in SPECS for i in ids_of(store, spec)], 100)
        stop = threading.Event()
        seen: list[float] = []

        def pause(seconds: float) -> None:  # the pause after the first batch: the stop comes now
            seen.append(seconds)
            stop.set()

        result = Pruner(policy(batch=2, pause=0.01), store, "me", stop=stop, sleep=pause).round()
        assert result.batches == 1 and result.runs in (1, 2) and seen == [0.01]  # one batch (<= 2 runs), then no more
        assert sum(len(ids_of(store, spec)) for spec in SPECS) == 30 - result.runs
    finally:
        store.close()


def test_settings_read_durations_and_refuse_nonsense(tmp_path: Path) -> None:
    settings = settings_from_dict({"retention": {"runs_days": 7, "logs_days": 1.5, "keep_last": 10,
                                                 "pause": "20ms", "every": "5m"}}, tmp_path)
    assert settings.retention is not None
    assert (settings.retention.pause, settings.retention.every, settings.retention.keep_last) == (0.02, 300.0, 10)
    assert settings_from_dict({}, tmp_path).retention is None  # absent: everything is kept
    config = tmp_path / "scheduler.yaml"
    config.write_text("retention:\n  runs_days: 90\n  keep_last: 0\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(config)
    assert "scheduler.yaml:3" in str(caught.value) and "keep_last" in str(caught.value)
    config.write_text("retention:\n  every: soon\n")
    with pytest.raises(SettingsError, match="not a duration"):
        load_settings(config)


def test_cli_dry_run_shows_and_keeps_then_prune_removes(tmp_path: Path) -> None:
    config = write_settings(tmp_path, [], retention={"runs_days": 90, "logs_days": 30, "keep_last": 3})
    settings = load_settings(config)
    store = store_with_runs(settings.database_url, per_task=6)
    try:
        age(store, [i for spec in SPECS for i in ids_of(store, spec)], 100)
    finally:
        store.close()
    runner = CliRunner()
    shown = runner.invoke(main, ["--config", str(config), "prune", "--dry-run", "--json"])
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.output)
    assert data["dry_run"] is True and data["removed"] is None
    assert data["total"]["runs"] == 9 and {t["task"]: t["runs"] for t in data["tasks"]} == {"t0": 3, "t1": 3, "t2": 3}
    table = runner.invoke(main, ["--config", str(config), "prune", "--dry-run"])
    assert table.exit_code == 0 and "would remove: 9 runs" in table.output and "CODOPS" in table.output
    store = Store.open(settings.database_url)
    assert sum(len(ids_of(store, spec)) for spec in SPECS) == 18  # the dry run removed nothing
    store.close()
    done = runner.invoke(main, ["--config", str(config), "prune", "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["removed"]["runs"] == 9
    store = Store.open(settings.database_url)
    assert sum(len(ids_of(store, spec)) for spec in SPECS) == 9
    store.close()
    (tmp_path / "bare").mkdir()
    bare = write_settings(tmp_path / "bare", [])
    refused = runner.invoke(main, ["--config", str(bare), "prune", "--dry-run"])
    assert refused.exit_code == 1 and "no 'retention'" in refused.output


def fill_old_runs(store: Store, count: int, tasks: int) -> None:
    """``count`` runs that ended 100 days ago over ``tasks`` tasks of organisation 'old',
    each with a one-line log, inserted in bulk."""
    specs = [TaskSpec("old", f"o{i:03d}", "nb.ipynb", "m", executor=Executor.PYTHON, repo="algos",
                      source_file="peach.yaml") for i in range(tasks)]
    store.register_tasks([TaskRegistration(spec, "v") for spec in specs])
    when = datetime.now(timezone.utc) - 100 * DAY
    with store.engine.connect() as conn:
        first = int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(runs.c.id), 0))).scalar()) + 1
    step = 10_000
    for start in range(0, count, step):
        rows = [dict(id=first + i, codops="old", task=specs[i % tasks].name, loop="old", executor="python",
                     started_at=when, finished_at=when, status="SUCCESS", duration_s=1.0, owner="filled",
                     log_bytes=20, log_dropped_bytes=0) for i in range(start, min(start + step, count))]
        with store.engine.begin() as conn:
            conn.execute(runs.insert(), rows)
            conn.execute(log_chunks.insert(), [dict(run_id=r["id"], seq=1, part="h", nbytes=20,
                                                    data="old run did a thing\n") for r in rows])
    if store.engine.dialect.name == "postgresql":  # ids given by hand: the next run's id comes after them
        with store.engine.begin() as conn:
            conn.execute(sa.text("SELECT setval(pg_get_serial_sequence('runs', 'id'), :n)"), {"n": first + count})


@pytest.mark.slow
def test_100k_runs_pruned_while_a_loop_runs_real_tasks(database_url: str, tmp_path: Path,
                                                       open_scheduler: Any) -> None:
    repo = Repo(tmp_path / "algos")
    repo.notebook("nb.ipynb", "def main():\n    return 1\n")
    repo.write("peach.yaml", task_yaml("live", {f"l{i}": py_task("nb.ipynb", "main") for i in range(3)}))
    repo.commit()
    config = write_settings(tmp_path, [{"url": str(repo.path)}], database=database_url, isolation="none")
    scheduler, store = open_scheduler(config)
    fill_old_runs(store, 100_000, tasks=100)
    scheduler.recover()
    scheduler.sync()
    loop = scheduler.make_loop("live")
    ended: list[tuple[float, Any]] = []
    loop.on_run = lambda event: ended.append((event.run_id, event.outcome.status))
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    pruned_during: list[int] = []
    try:
        wait_for(lambda: len(ended) >= 3, 120, "the loop's first runs")
        def pause(seconds: float) -> None:  # after each batch: how far the loop got
            pruned_during.append(len(ended))
            time.sleep(seconds)

        pruner = Pruner(RetentionSettings(runs_days=90, logs_days=30, keep_last=100, batch=500, pause=0.01),
                        store, scheduler.owner, sleep=pause)
        result = pruner.round()
    finally:
        scheduler.stop_event.set()
        thread.join(timeout=120)
    assert not thread.is_alive()
    assert result.skipped is None and result.runs == 100_000 - 100 * 100  # the newest 100 of each task stay
    with store.engine.connect() as conn:
        left = dict(conn.execute(sa.select(runs.c.codops, sa.func.count()).group_by(runs.c.codops)).all())
        orphans = conn.execute(sa.select(sa.func.count()).select_from(log_chunks)
                               .where(log_chunks.c.run_id.not_in(sa.select(runs.c.id)))).scalar()
    assert left["old"] == 100 * 100 and orphans == 0
    # The loop went on while the pruner worked (its runs ended between the batches), and lost nothing.
    assert pruned_during[-1] > pruned_during[0]
    live = [r for name in ("l0", "l1", "l2") for r in store.runs("live", name, limit=10_000)]
    assert len(live) == left["live"] and {r["status"] for r in live} <= {"SUCCESS", "ABANDONED"}
    assert sum(1 for r in live if r["status"] == "SUCCESS") >= len([e for e in ended if e[1] == RunStatus.SUCCESS])


def test_the_side_job_prunes_in_its_own_thread_until_stopped(database_url: str) -> None:
    store = store_with_runs(database_url, per_task=5)
    try:
        age(store, [i for spec in SPECS for i in ids_of(store, spec)], 100)
        pruner = Pruner(policy(every=3600), store, "me")
        pruner.start()
        wait_for(lambda: sum(len(ids_of(store, spec)) for spec in SPECS) == 9, 30, "the background round")
        assert "retention" in {t.name for t in threading.enumerate()}
        pruner.stop()
        assert "retention" not in {t.name for t in threading.enumerate()}  # waited for, not left behind
        assert pruner.stop_event.is_set()
    finally:
        store.close()
