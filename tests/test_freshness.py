"""Freshness: a task's last success must be recent enough (``freshness: 2h``).

Real git repositories, real task processes (run-once), the real CLI as a process, the
API and /metrics through the real application.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import Repo, py_task, task_yaml, wait_for, write_settings
from fastapi.testclient import TestClient

from peach_tasks.model import Executor, Outcome, RunStatus, TaskSpec
from peach_tasks.settings import settings_from_dict
from peach_tasks.sources.definitions import load_definitions
from peach_tasks.store import Store
from peach_tasks.store.freshness import Freshness
from peach_tasks.store.schema import runs, tasks
from peach_tasks.store.store import TaskRegistration
from peach_tasks.web.app import create_app

GOOD = "def main():\n    print('fresh data')\n    return 1\n"
BAD = "def main():\n    raise RuntimeError('the source table is gone')\n"
SCRIPT = Path(sys.executable).with_name("peach-tasks")


def test_freshness_in_definitions_is_read_and_bad_values_are_pointed_at(tmp_path: Path) -> None:
    repo = Repo(tmp_path / "r")
    repo.notebook("nb.ipynb", GOOD)
    repo.write("peach.yaml", task_yaml("chrts", {
        "hourly": py_task("nb.ipynb", "main", freshness="2h"),
        "mixed": py_task("nb.ipynb", "main", freshness="1h30m"),
        "secs": py_task("nb.ipynb", "main", freshness=90),
        "off": py_task("nb.ipynb", "main", freshness=False),
        "plain": py_task("nb.ipynb", "main"),
        "words": py_task("nb.ipynb", "main", freshness="2 hours"),
        "zero": py_task("nb.ipynb", "main", freshness=0),
        "on": py_task("nb.ipynb", "main", freshness=True),
    }))
    defs = load_definitions(repo.path, "r")
    got = {t.name: t.freshness for t in defs.tasks}
    assert got == {"hourly": 7200.0, "mixed": 5400.0, "secs": 90.0, "off": 0.0, "plain": None}
    messages = {p.line: p.message for p in defs.problems}
    text = (repo.path / "peach.yaml").read_text().splitlines()
    for name in ("words", "zero", "on"):
        line = next(i for i, t in enumerate(text, 1) if t.strip() == "freshness: " + {"words": "2 hours", "zero": "0",
                                                                                         "on": "true"}[name])
        assert "freshness" in messages[line] and "2h" in messages[line], (name, messages)


def test_loop_defaults_from_settings_and_a_task_opting_out(tmp_path: Path) -> None:
    settings = settings_from_dict({"freshness": {"organisations": "1d", "metadata": "10m"},
                                   "organisations": {"sesr": {"freshness": "3h"}}}, tmp_path)
    spec = lambda codops, **kw: TaskSpec(codops, "t", "nb.ipynb", "main", **kw)
    assert settings.freshness_for(spec("chrts")) == 86400
    assert settings.freshness_for(spec("sesr")) == 3 * 3600
    assert settings.freshness_for(spec("sesr", loop="metadata")) == 600
    assert settings.freshness_for(spec("sesr", freshness=60.0)) == 60
    assert settings.freshness_for(spec("chrts", freshness=0.0)) is None  # freshness: false
    assert settings_from_dict({}, tmp_path).freshness_for(spec("chrts")) is None  # none by default
    with pytest.raises(ValueError, match="not a duration"):
        settings_from_dict({"freshness": {"organisations": "soon"}}, tmp_path)


def test_stale_means_older_than_freshness_or_never_succeeded_since_defined() -> None:
    now = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
    hour = timedelta(hours=1)
    assert Freshness(7200, now - hour, now - 10 * hour).stale(now) is False
    assert Freshness(7200, now - 3 * hour, now - 10 * hour).stale(now) is True
    assert Freshness(7200, None, now - hour).stale(now) is False  # defined an hour ago, 2h allowed
    assert Freshness(7200, None, now - 3 * hour).stale(now) is True
    assert Freshness(None, None, now - 300 * hour).stale(now) is None
    assert Freshness(7200, now - hour, None).stale_at() == now + hour


def test_a_failing_commit_makes_the_task_stale_everywhere_and_a_fix_makes_it_fresh(
        tmp_path: Path, open_scheduler) -> None:
    repo = Repo(tmp_path / "algos")
    repo.notebook("nb.ipynb", GOOD)
    repo.write("peach.yaml", task_yaml("chrts", {"report": py_task("nb.ipynb", "main", freshness="2s"),
                                                 "other": py_task("nb.ipynb", "main")}))
    repo.commit()
    config = write_settings(tmp_path, [{"url": "algos"}], isolation="none")
    scheduler, store = open_scheduler(config)
    scheduler.run_once()
    app = TestClient(create_app(store))

    def task(name: str) -> dict:
        return next(t for t in app.get("/api/organisations/chrts/tasks").json()["tasks"] if t["name"] == name)

    fresh = task("report")
    assert (fresh["stale"], fresh["freshness_s"], fresh["failures_in_row"]) == (False, 2.0, 0)
    first_success = fresh["last_success_at"]
    assert task("other")["stale"] is None  # no freshness, never stale

    repo.notebook("nb.ipynb", BAD)
    repo.commit("break the source")
    scheduler.run_once()
    failed = task("report")
    assert failed["last_status"] == "FAILURE" and failed["failures_in_row"] == 1
    assert failed["last_success_at"] == first_success  # the failure does not count as fresh data
    stale = wait_for(lambda: (t := task("report"))["stale"] and t, 30, "the task to become stale")
    assert stale["stale_at"] <= datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")

    # The CLI as a process: a column in the table and the fields in --json.
    peach = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "peach_tasks.cli"]
    table = subprocess.run(peach + ["--config", str(config), "tasks"], capture_output=True, text=True, timeout=60)
    assert table.returncode == 0, table.stderr
    header, *lines = table.stdout.splitlines()
    assert "FRESHNESS" in header
    assert "STALE (>2s)" in next(line for line in lines if " report " in line)
    assert next(line for line in lines if " other " in line).rstrip().endswith("-")
    listed = json.loads(subprocess.run(peach + ["--config", str(config), "tasks", "--json"], capture_output=True,
                                       text=True, timeout=60, check=True).stdout)
    report = next(t for t in listed if t["name"] == "report")
    assert (report["stale"], report["freshness_s"], report["last_success_at"]) == (True, 2.0, first_success)

    metrics = app.get("/metrics").text
    assert 'peach_tasks_task_stale{codops="chrts",task="report"} 1.0' in metrics
    assert 'peach_tasks_task_freshness_seconds{codops="chrts",task="report"} 2.0' in metrics
    since = next(line for line in metrics.splitlines()
                 if line.startswith('peach_tasks_task_seconds_since_success{codops="chrts",task="report"}'))
    assert float(since.split()[-1]) > 2.0
    assert 'task="other"' not in "".join(l for l in metrics.splitlines() if l.startswith("peach_tasks_task_stale"))

    repo.notebook("nb.ipynb", GOOD)
    repo.commit("fix")
    scheduler.run_once()
    recovered = task("report")
    assert (recovered["stale"], recovered["failures_in_row"]) == (False, 0)
    assert recovered["last_success_at"] > first_success
    # /metrics answers from memory, refreshed about every second: it follows within that.
    wait_for(lambda: 'peach_tasks_task_stale{codops="chrts",task="report"} 0.0' in app.get("/metrics").text,
             30, "/metrics to show the task fresh again")


def test_never_succeeded_is_stale_once_defined_longer_than_freshness(tmp_path: Path, open_scheduler) -> None:
    repo = Repo(tmp_path / "algos")
    repo.notebook("nb.ipynb", BAD)
    repo.write("peach.yaml", task_yaml("chrts", {"broken": py_task("nb.ipynb", "main")}))
    repo.commit()
    config = write_settings(tmp_path, [{"url": "algos"}], isolation="none", freshness={"organisations": "1s"})
    scheduler, store = open_scheduler(config)
    scheduler.run_once()
    [row] = store.tasks(["chrts"])
    assert row["last_success_at"] is None and row["freshness_s"] == 1.0  # the loop's default
    wait_for(lambda: store.tasks(["chrts"])[0]["stale"], 30, "a task that never succeeded to become stale")


def test_upgrade_to_0008_fills_last_success_and_streak_from_the_runs(database_url: str) -> None:
    """A store of 0007 keeps its history: each task's last success, its failures since and
    when it was first seen come from its runs."""
    from test_store import alembic

    alembic(database_url, "upgrade", "0007")
    engine = sa.create_engine(database_url)
    at = lambda minutes: datetime(2026, 1, 2, 3, 0, tzinfo=timezone.utc) + timedelta(minutes=minutes)
    with engine.begin() as conn:  # written as peach-tasks of 0007 wrote them (its columns only)
        conn.execute(tasks.insert().values(codops="c", name="t", loop="c", executor="python", state="FINISHED",
                                           active=True, repo="r", notebook="nb.ipynb", source_file="peach.yaml",
                                           updated_at=at(100)))
        for minute, status in ((1, "SUCCESS"), (2, "SUCCESS"), (3, "FAILURE"), (4, "ABANDONED"), (5, "TIMEOUT")):
            conn.execute(runs.insert().values(codops="c", task="t", loop="c", executor="python", started_at=at(minute),
                                              finished_at=at(minute) + timedelta(seconds=30), status=status))
    engine.dispose()
    store = Store.open(database_url, migrate=True)
    try:
        with store.engine.connect() as conn:
            row = conn.execute(sa.select(tasks)).one()
        assert row.failures_in_row == 2 and row.last_success_run_id == 2
        assert Freshness(60, row.last_success_at, row.first_seen_at).since_success(at(2) + timedelta(seconds=90)) \
            == pytest.approx(60)
        assert Freshness(60, None, row.first_seen_at).stale_at() == at(1) + timedelta(seconds=60)
        spec = TaskSpec("c", "t", "nb.ipynb", "main", executor=Executor.PYTHON)
        store.register_tasks([TaskRegistration(spec, "v", 60.0)])
        run = store.start_run(spec, "v", "c0", "me")
        store.finish_run(run, Outcome(RunStatus.SUCCESS))
        [task] = store.tasks(["c"])
        assert (task["failures_in_row"], task["last_success_run_id"], task["stale"]) == (0, run, False)
    finally:
        store.close()

    alembic(database_url, "downgrade", "0007")  # and back: the tasks and runs stay, without the new state
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from runs")).scalar() == 6
        assert "last_success_at" not in {c["name"] for c in sa.inspect(conn).get_columns("tasks")}
        assert not sa.inspect(conn).has_table("alert_outbox")
    engine.dispose()
