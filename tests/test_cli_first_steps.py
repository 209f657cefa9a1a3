"""First steps with the command line (issue 14, item 4), each run as a real ``peach-tasks``
process: unknown names are errors with the closest ones suggested, counts read as English,
cut cells say so, ``serve`` tells its console about problems, the demo's settings are found,
the widget's extra is named, and a scheduler without Spark says so before any run fails."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import py_task, stop_processes, task_yaml, wait_for, write_settings
from test_cli import CLEAN_ENV, PEACH, Peach, cli, no_traceback, two_tasks

from peach_tasks.commands.words import ELLIPSIS, closest, cut, plural
from peach_tasks.demo import create_demo
from peach_tasks.web.api_client import ApiClient, demo_url_file

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Peach:
    """Two tasks (default/good, default/bad) after one ``run-once``; tests using it only read."""
    p = two_tasks(tmp_path_factory.mktemp("first-steps"))
    p.ok("run-once")
    return p


# -- unknown names ---------------------------------------------------------------------------

@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
def test_runs_of_an_unknown_task_is_an_error_naming_the_closest(ran: Peach, as_json: bool) -> None:
    result = ran("runs", "default/goood", *(["--json"] if as_json else []))
    assert result.returncode == 1
    no_traceback(result)
    assert "no task 'goood' in organisation 'default'" in result.stderr
    assert "did you mean 'default/good'" in result.stderr
    assert result.stdout == ""


def test_runs_of_a_task_nothing_resembles_says_where_the_list_is(ran: Peach) -> None:
    result = ran("runs", "nope/nothing")  # the README's own example is a task the store lacks
    assert result.returncode == 1
    assert "no task 'nothing' in organisation 'nope'" in result.stderr and "peach-tasks tasks" in result.stderr


def test_runs_of_a_known_task_without_runs_is_not_an_error(tmp_path: Path) -> None:
    p = two_tasks(tmp_path)
    assert p("sync").returncode == 0  # registers the tasks; nothing runs
    result = p.ok("runs", "default/good")
    assert result.stdout.strip() == "no runs of default/good yet"
    assert p.json("runs", "default/good") == []


def test_logs_of_an_unknown_run_says_which_runs_exist(ran: Peach) -> None:
    newest = max(r["id"] for r in ran.runs("default/good") + ran.runs("default/bad"))
    result = ran("logs", str(newest + 100))
    assert result.returncode == 1
    no_traceback(result)
    assert f"no run with id {newest + 100} (the runs go from 1 to {newest})" in result.stderr


def test_trigger_of_an_unknown_task_names_the_closest(ran: Peach) -> None:
    result = ran("trigger", "default/bda")
    assert result.returncode == 1
    assert "no task 'default/bda' is defined" in result.stderr and "did you mean 'default/bad'" in result.stderr


def test_tasks_of_an_unknown_organisation_is_an_error(ran: Peach) -> None:
    result = ran("tasks", "--org", "defualt")
    assert result.returncode == 1
    assert "no organisation 'defualt' has tasks" in result.stderr and "'default'" in result.stderr
    assert len(ran.ok("tasks", "--org", "default").stdout.splitlines()) == 3  # the header and two tasks


def test_closest_finds_a_task_of_another_organisation() -> None:
    known = ["chrts/summary", "default/train_model", "default/build_report"]
    assert closest("default/sumary", known) == ["chrts/summary"]
    assert closest("default/train", known) == ["default/train_model"]
    assert closest("xyz/abc", known) == []


# -- words and cells -------------------------------------------------------------------------

def test_plurals() -> None:
    assert [plural(n, "problem") for n in (0, 1, 2)] == ["0 problems", "1 problem", "2 problems"]
    assert plural(1, "repository") == "1 repository" and plural(3, "repository") == "3 repositories"


def test_counts_read_as_english_in_sync_validate_and_run_once(tmp_path: Path) -> None:
    p = Peach(tmp_path)
    p.repo.notebook("good.ipynb", "def good():\n    return 1\n")
    p.repo.write("peach.yaml", task_yaml("default", {"good": py_task("good.ipynb", "good"),
                                                     "lost": py_task("missing.ipynb", "lost")}))
    p.repo.commit()
    validated = cli("validate", str(p.repo.path), cwd=p.cwd)
    assert validated.returncode == 1
    assert "1 task in 1 file: 1 problem (" in validated.stderr  # a task without its notebook is no task, validated.stderr
    synced = p("sync")
    assert synced.returncode == 1
    assert synced.stderr.rstrip().endswith("1 problem"), synced.stderr
    assert "1 task in 2 loops; " in synced.stderr  # the organisation's loop and the metadata loop
    listed = p.ok("tasks")
    assert "\n1 problem:\n" in listed.stderr
    ran = p.ok("run-once", "--loop", "default")
    assert "ran 1 task in 1 loop" in ran.stderr, ran.stderr


def test_a_cut_cell_ends_in_an_ellipsis() -> None:
    assert cut("x" * 100) == "x" * 100
    assert cut("x" * 101) == "x" * 99 + ELLIPSIS and len(cut("x" * 101)) == 100
    assert cut("a\nb") == "a b"


def test_replicas_loops_column_is_cut_with_an_ellipsis(tmp_path: Path) -> None:
    from peach_tasks.settings import load_settings
    from peach_tasks.store import Store
    from peach_tasks.store.leases import LeaseStore

    p = Peach(tmp_path)
    store = Store.open(load_settings(p.config).database_url)
    try:
        leases = LeaseStore(store.engine)
        now = leases.now()
        leases.mark_started("replica-a", "host-a", 4242, now)
        for number in range(8):  # eight loops: far more than 100 characters of "loop(until …)"
            assert leases.try_acquire(f"organisation{number}", "replica-a", now, 60) is not None
    finally:
        store.close()
    result = p.ok("replicas")
    row = result.stdout.splitlines()[1]
    assert row.rstrip().endswith(ELLIPSIS), row
    assert "organisation0(until" in row and "organisation7" not in row
    assert len(p.json("replicas")[0]["loops"]) == 8  # --json keeps everything


# -- serve's console -------------------------------------------------------------------------

def test_serve_logs_each_problem_as_it_comes_and_goes_and_alembic_stays_quiet(tmp_path: Path) -> None:
    p = Peach(tmp_path, web={"port": 0})
    p.repo.notebook("good.ipynb", "def good():\n    return 1\n")
    p.repo.write("peach.yaml", task_yaml("default", {"good": py_task("good.ipynb", "good")}))
    p.repo.commit()
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        serve = subprocess.Popen([*PEACH, "--config", str(p.config), "serve"], cwd=p.cwd, env=CLEAN_ENV,
                                 stdout=log, stderr=subprocess.STDOUT)
    text = lambda: log_path.read_text(errors="replace")  # noqa: E731
    try:
        wait_for(lambda: "dashboard and API on" in text(), 60, "serve to start", detail=text)
        p.repo.write("peach.conf/broken.yaml", "codops: default\ntasks:\n  oops: [not, a, mapping]\n")
        p.repo.commit("a broken definition")
        assert p("sync").returncode == 1  # asks serve to sync now
        warned = wait_for(lambda: [line for line in text().splitlines() if "broken.yaml" in line], 60,
                          "the problem in serve's log", detail=text)
        assert len(warned) == 1 and " WARNING peach_tasks.problems: config problem in algos: " in warned[0]
        assert "peach.conf/broken.yaml:3: " in warned[0], warned
        (p.repo.path / "peach.conf" / "broken.yaml").unlink()
        p.repo.commit("fixed")
        assert p("sync").returncode == 0
        cleared = wait_for(lambda: [line for line in text().splitlines() if "cleared: " in line], 60,
                           "the cleared problem in serve's log", detail=text)
        assert len(cleared) == 1 and " INFO peach_tasks.problems: cleared: config problem in algos: " in cleared[0]
        assert "broken.yaml" in cleared[0]
    finally:
        stop_processes([serve], timeout=60)
    output = text()
    assert [line for line in output.splitlines() if "broken.yaml" in line and "WARNING" in line] == warned
    assert "alembic" not in output, output  # migrations ran (a fresh database), silently


def test_alembic_lines_are_debug_with_verbose(tmp_path: Path) -> None:
    p = Peach(tmp_path)
    result = p("run-once", "--verbose")
    assert result.returncode == 0, result.stderr
    alembic = [line for line in result.stderr.splitlines() if " alembic." in line]
    assert alembic and all(" DEBUG alembic." in line for line in alembic), alembic
    quiet = Peach(tmp_path / "again")
    assert "alembic" not in quiet.ok("run-once").stderr


# -- the demo's settings, its URL, the widget's extra ----------------------------------------

def test_commands_find_the_demos_settings_from_where_it_was_started(tmp_path: Path) -> None:
    create_demo(tmp_path / "peach-demo")
    upgraded = cli("db", "upgrade", cwd=tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "using the demo's settings" in upgraded.stderr and "peach-demo/scheduler.yaml" in upgraded.stderr
    assert (tmp_path / "peach-demo" / "state" / "peach.db").exists()
    listed = cli("tasks", cwd=tmp_path)
    assert listed.returncode == 0 and listed.stdout.strip() == "no tasks", listed.stderr


def test_other_settings_one_folder_down_are_named_not_guessed(tmp_path: Path) -> None:
    (tmp_path / "project").mkdir()
    write_settings(tmp_path / "project", [])
    result = cli("tasks", cwd=tmp_path)
    assert result.returncode == 1
    assert "settings file not found in this folder; found project/scheduler.yaml" in result.stderr
    assert "--config project/scheduler.yaml" in result.stderr
    nothing = cli("tasks", cwd=tmp_path / "project")
    assert nothing.returncode == 1 and "no state yet" in nothing.stderr  # ./scheduler.yaml is used first


def test_widget_finds_a_running_demo_and_says_where_the_address_came_from(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PEACH_TASKS_URL", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert ApiClient().url == "http://127.0.0.1:8765"
    demo_url_file().parent.mkdir(parents=True)
    demo_url_file().write_text("http://127.0.0.1:1\n")  # a demo that moved to another port (1: nobody)
    client = ApiClient()
    assert client.url == "http://127.0.0.1:1"
    with pytest.raises(Exception) as raised:
        client.organisations()
    assert str(demo_url_file()) in str(raised.value) and "peach-tasks demo" in str(raised.value)
    monkeypatch.setenv("PEACH_TASKS_URL", "http://127.0.0.1:2")
    assert ApiClient().url == "http://127.0.0.1:2"  # the variable wins


def test_widget_without_ipywidgets_names_the_extra() -> None:
    code = "import sys; sys.modules['ipywidgets'] = None\nimport peach_tasks.widget"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ModuleNotFoundError: the tasks-info widget needs ipywidgets"), last
    assert "pip install 'peach-tasks[widget]'" in last


def test_readme_shows_the_widget_extra() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "pip install 'peach-tasks[widget]'" in readme
    extras = (ROOT / "pyproject.toml").read_text()
    assert 'widget = ["ipywidgets' in extras


# -- Spark where there is none ----------------------------------------------------------------

NO_SPARK = {"spark": {"submit": "/nonexistent/bin/spark-submit"}}


def spark_by_default(tmp_path: Path) -> Peach:
    p = Peach(tmp_path, **NO_SPARK)
    p.repo.notebook("first.ipynb", "def first():\n    return 1\n")
    # No 'executor': spark, as in the tutorial.
    p.repo.write("peach.yaml", "codops: default\ntasks:\n  first:\n    notebook: first.ipynb\n    method: first\n")
    p.repo.commit()
    return p


def test_validate_warns_when_no_spark_is_found(tmp_path: Path) -> None:
    p = spark_by_default(tmp_path)
    result = cli("--config", str(p.config), "validate", str(p.repo.path), cwd=p.cwd)
    assert result.returncode == 0, result.stderr  # the scheduler's machine may have Spark
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1, result.stderr
    assert "peach.yaml:3: task 'default/first' uses the spark executor (the default when 'executor' is not set)" \
        in warnings[0]
    assert "this machine has no Spark" in warnings[0] and "executor: python" in warnings[0]
    as_json = json.loads(cli("--config", str(p.config), "validate", str(p.repo.path), "--json", cwd=p.cwd).stdout)
    assert as_json["ok"] is True and len(as_json["warnings"]) == 1


def test_sync_and_tasks_say_this_scheduler_has_no_spark(tmp_path: Path) -> None:
    p = spark_by_default(tmp_path)
    synced = p("sync")
    assert synced.returncode == 1
    assert "peach.yaml:3: task 'default/first' uses the spark executor" in synced.stdout
    assert "this scheduler has no Spark" in synced.stdout and "/nonexistent/bin/spark-submit" in synced.stdout
    [task] = p.json("tasks")
    assert task["executor"] == "spark" and "no Spark" in task["problems"][0]["message"]
    # With python as the executor, the problem goes at the next sync.
    p.repo.write("peach.yaml", "codops: default\ntasks:\n  first:\n    notebook: first.ipynb\n    method: first\n"
                               "    executor: python\n")
    p.repo.commit("python")
    assert p("sync").returncode == 0


def test_spark_found_is_no_problem(tmp_path: Path) -> None:
    p = Peach(tmp_path)
    p.repo.notebook("first.ipynb", "def first():\n    return 1\n")
    p.repo.write("peach.yaml", "codops: default\ntasks:\n  first:\n    notebook: first.ipynb\n    method: first\n")
    p.repo.commit()
    env = dict(CLEAN_ENV, SPARK_HOME=str(tmp_path / "spark"))
    (tmp_path / "spark" / "bin").mkdir(parents=True)
    (tmp_path / "spark" / "bin" / "spark-submit").write_text("#!/bin/sh\n")
    result = cli("--config", str(p.config), "validate", str(p.repo.path), cwd=p.cwd, env=env)
    assert result.returncode == 0 and "warning" not in result.stderr, result.stderr
