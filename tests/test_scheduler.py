"""The scheduler end to end, in process: real git, real uv environments, real processes."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Repo, py_task, require_service, task_yaml, write_settings

from peach_tasks.scheduling.scheduler import Scheduler
from peach_tasks.store import Store

RETURN_ONE = "def main():\n    print('hello from the task')\n    return 1\n"


@pytest.fixture
def make(tmp_path: Path, open_scheduler: Any) -> Any:
    def factory(repos: list[dict[str, Any]], **extra: Any) -> tuple[Scheduler, Store]:
        return open_scheduler(write_settings(tmp_path, repos, **extra))

    return factory


def by_name(store: Store, codops: str | None = None) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in store.tasks([codops] if codops else None)}


def last_run(store: Store, codops: str, task: str) -> dict[str, Any]:
    return store.runs(codops, task, limit=1)[0]


def test_task_registers_and_runs_in_one_iteration(repo: Repo, make: Any) -> None:
    repo.notebook("nb.ipynb", ("markdown", "# title"), RETURN_ONE)
    repo.write("peach.conf/tf.yaml", task_yaml("default", {"t": py_task("nb.ipynb", "main")}))
    repo.commit("notebook")
    nb_version = repo.short()
    repo.write("README.md", "unrelated change")
    head = repo.commit("docs")
    scheduler, store = make([{"url": str(repo.path)}])
    counts = scheduler.run_once()
    assert counts == {"default": 1, "metadata": 0}
    run = last_run(store, "default", "t")
    assert run["status"] == "SUCCESS" and run["result"] == 1
    assert run["version"] == nb_version != repo.short()  # the notebook's last commit, not HEAD
    assert run["commit"] == head
    log = store.log(run["id"]) or ""
    assert "hello from the task" in log
    task = by_name(store)["t"]
    assert task["state"] == "FINISHED" and task["successes"] == 1 and task["version"] == nb_version


def test_both_layouts_are_read(repo: Repo, make: Any) -> None:
    repo.notebook("a.ipynb", RETURN_ONE)
    repo.write("peach.yaml", task_yaml("default", {"root_task": py_task("a.ipynb", "main")}))
    repo.write("peach.conf/more.yml", task_yaml("chrts", {"conf_task": py_task("a.ipynb", "main")}))
    repo.commit()
    scheduler, store = make([{"url": str(repo.path)}])
    assert scheduler.run_once() == {"default": 1, "chrts": 1, "metadata": 0}
    assert last_run(store, "default", "root_task")["status"] == "SUCCESS"
    assert last_run(store, "chrts", "conf_task")["status"] == "SUCCESS"


def test_commit_to_master_changes_what_runs_next(repo: Repo, make: Any) -> None:
    repo.notebook("nb.ipynb", "def main():\n    return 'v1'\n")
    repo.write("peach.yaml", task_yaml("default", {"t": py_task("nb.ipynb", "main")}))
    repo.commit()
    scheduler, store = make([{"url": str(repo.path)}])
    scheduler.run_once()
    first = last_run(store, "default", "t")
    repo.notebook("nb.ipynb", "def main():\n    return 'v2'\n")
    repo.commit("v2")
    scheduler.run_once()
    second = last_run(store, "default", "t")
    assert (first["result"], second["result"]) == ("v1", "v2")
    assert first["version"] != second["version"] == repo.short()


def test_cell_only_versus_full_notebook_and_magics(repo: Repo, make: Any) -> None:
    cells = ("%matplotlib inline\nHELPER = 41\n", "def main():\n    !ls\n    return HELPER + 1\n")
    repo.notebook("nb.ipynb", *cells)
    repo.write("peach.yaml", task_yaml("default", {
        "cell_only": py_task("nb.ipynb", "main"),
        "full": py_task("nb.ipynb", "main", full_notebook=True),
    }))
    repo.commit()
    scheduler, store = make([{"url": str(repo.path)}])
    scheduler.run_once()
    cell_only, full = last_run(store, "default", "cell_only"), last_run(store, "default", "full")
    assert cell_only["status"] == "FAILURE" and "NameError" in cell_only["error"]
    assert full["status"] == "SUCCESS" and full["result"] == 42
    full_log = store.log(full["id"]) or ""
    assert "'%matplotlib inline' skipped (no effect in a scheduled run)" in full_log
    assert "Z nb.ipynb\n" in full_log  # `!ls` ran in the task's folder, its output in the log


def test_failure_timeout_and_success_in_one_loop(repo: Repo, make: Any) -> None:
    repo.notebook("fail.ipynb", "def main():\n    raise RuntimeError('broken input')\n")
    repo.notebook("slow.ipynb", "import time\ndef main():\n    time.sleep(60)\n")
    repo.notebook("ok.ipynb", RETURN_ONE)
    repo.write("peach.yaml", task_yaml("default", {
        "a_fail": py_task("fail.ipynb", "main"),
        "b_slow": py_task("slow.ipynb", "main", timeout=1.5),
        "c_ok": py_task("ok.ipynb", "main"),
    }))
    repo.commit()
    scheduler, store = make([{"url": str(repo.path)}])
    scheduler.run_once()
    fail, slow, ok = (last_run(store, "default", n) for n in ("a_fail", "b_slow", "c_ok"))
    assert fail["status"] == "FAILURE" and fail["error"] == "fail.ipynb cell 1 line 2: RuntimeError: broken input"
    assert "Traceback" in (store.log(fail["id"]) or "")
    assert slow["status"] == "TIMEOUT" and "timed out" in slow["error"]
    assert ok["status"] == "SUCCESS"
    assert fail["id"] < slow["id"] < ok["id"]  # strictly one after another, stable order


def test_states_pending_running_finished(repo: Repo, make: Any) -> None:
    repo.notebook("slow.ipynb", "import time\ndef main():\n    time.sleep(1.5)\n")
    repo.write("peach.yaml", task_yaml("default", {"a": py_task("slow.ipynb", "main"),
                                                   "b": py_task("slow.ipynb", "main")}))
    repo.commit()
    scheduler, store = make([{"url": str(repo.path)}])
    scheduler.recover()
    scheduler.sync()
    seen: set[tuple[str, str]] = set()
    loop = scheduler.make_loop("default")
    thread = threading.Thread(target=loop.tick)
    thread.start()
    while thread.is_alive():
        states = by_name(store)
        seen.add((states["a"]["state"], states["b"]["state"]))
        time.sleep(0.05)
    states = by_name(store)
    assert ("RUNNING", "PENDING") in seen
    assert ("FINISHED", "RUNNING") in seen
    assert (states["a"]["state"], states["b"]["state"]) == ("FINISHED", "FINISHED")


def test_missing_method_fails_without_starting_a_process(repo: Repo, make: Any) -> None:
    repo.notebook("nb.ipynb", "def other():\n    pass\n")
    repo.write("peach.yaml", task_yaml("default", {"t": py_task("nb.ipynb", "main")}))
    repo.commit()
    scheduler, store = make([{"url": str(repo.path)}])
    scheduler.run_once()
    run = last_run(store, "default", "t")
    assert run["status"] == "FAILURE" and "'main'" in run["error"] and "nb.ipynb" in run["error"]
    assert run["exit_code"] is None and run["signal"] is None  # no process ran


def test_broken_file_beside_good_one(repo: Repo, make: Any) -> None:
    repo.notebook("nb.ipynb", RETURN_ONE)
    repo.write("peach.conf/good.yaml", task_yaml("default", {"good": py_task("nb.ipynb", "main")}))
    repo.write("peach.conf/bad.yaml", "codops: default\ntasks:\n  bad:\n    notebook: nb.ipynb\n    metod: main\n")
    repo.commit()
    scheduler, store = make([{"url": str(repo.path)}])
    scheduler.run_once()
    assert last_run(store, "default", "good")["status"] == "SUCCESS"
    [problem] = store.problems()
    assert (problem["file"], problem["line"]) == ("peach.conf/bad.yaml", 5)
    assert "metod" in problem["message"]


def test_duplicate_across_repositories_first_keeps_running(tmp_path: Path, make: Any) -> None:
    first, second = Repo(tmp_path / "first"), Repo(tmp_path / "second")
    for r, value in ((first, "first"), (second, "second")):
        r.notebook("nb.ipynb", f"def main():\n    return {value!r}\n")
        r.write("peach.yaml", task_yaml("default", {"t": py_task("nb.ipynb", "main")}))
        r.commit()
    scheduler, store = make([{"url": str(first.path)}, {"url": str(second.path)}])
    scheduler.run_once()
    assert last_run(store, "default", "t")["result"] == "first"
    [problem] = store.problems()
    assert problem["scope"] == "second" and "already defined in first:peach.yaml" in problem["message"]


def test_remote_disappears_last_good_checkout_keeps_running(repo: Repo, make: Any) -> None:
    import shutil

    repo.notebook("nb.ipynb", RETURN_ONE)
    repo.write("peach.yaml", task_yaml("default", {"t": py_task("nb.ipynb", "main")}))
    repo.commit()
    scheduler, store = make([{"url": str(repo.path)}])
    scheduler.run_once()
    shutil.rmtree(repo.path)
    scheduler.run_once()
    runs = store.runs("default", "t")
    assert [r["status"] for r in runs] == ["SUCCESS", "SUCCESS"]
    [problem] = store.problems()
    assert problem["kind"] == "sync" and "cannot fetch" in problem["message"]


def test_removed_task_stops_and_keeps_history(repo: Repo, make: Any) -> None:
    repo.notebook("nb.ipynb", RETURN_ONE)
    repo.write("peach.yaml", task_yaml("default", {"a": py_task("nb.ipynb", "main"),
                                                   "b": py_task("nb.ipynb", "main")}))
    repo.commit()
    scheduler, store = make([{"url": str(repo.path)}])
    scheduler.run_once()
    repo.write("peach.yaml", task_yaml("default", {"a": py_task("nb.ipynb", "main")}))
    repo.commit("drop b")
    scheduler.run_once()
    assert len(store.runs("default", "a")) == 2 and len(store.runs("default", "b")) == 1
    assert set(by_name(store)) == {"a"}
    assert {t["name"]: t["active"] for t in store.tasks(include_inactive=True)} == {"a": True, "b": False}


@pytest.mark.spark
def test_spark_is_the_default_executor_on_embedded_local_master(repo: Repo, make: Any) -> None:
    from spark_cluster import missing_reason

    require_service(missing_reason())
    repo.notebook("nb.ipynb", "def main():\n    return spark.range(10).count() + sc.parallelize([1, 2]).sum()\n")
    repo.write("peach.yaml", "codops: default\ntasks:\n  t:\n    notebook: nb.ipynb\n    method: main\n")
    repo.commit()
    # A JVM start on a loaded machine can pass the suite's usual 60 s.
    scheduler, store = make([{"url": str(repo.path)}], timeouts={"task": 600, "metadata": 30, "kill_grace": 1})
    scheduler.run_once()
    run = last_run(store, "default", "t")
    assert run["executor"] == "spark"
    assert run["status"] == "SUCCESS", store.log(run["id"])
    assert run["result"] == 13
    assert run["details"]["spark_application_id"].startswith("local-")
    assert "Spark application local-" in (store.log(run["id"]) or "")


def test_environment_isolation_and_secrets(repo: Repo, make: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEACH_TASKS_DATABASE_URL", "")  # keep the store where the settings say
    monkeypatch.setenv("SECRET_TOKEN", "s3cret")
    repo.notebook("nb.ipynb",
                  "import os, sys\n"
                  "def main():\n"
                  "    from tabulate import tabulate\n"
                  "    try:\n"
                  "        import click  # installed for the scheduler, not for tasks\n"
                  "        leaked = True\n"
                  "    except ImportError:\n"
                  "        leaked = False\n"
                  "    return {'leaked': leaked, 'secret': os.environ.get('SECRET_TOKEN'),\n"
                  "            'extra': os.environ.get('GREETING'), 'prefix': sys.prefix,\n"
                  "            'table': tabulate([[1]])}\n")
    repo.write("peach.yaml", task_yaml("default", {"t": py_task("nb.ipynb", "main")}, dependencies=["tabulate"]))
    repo.commit()
    scheduler, store = make([{"url": str(repo.path)}], task_env={"GREETING": "hi"})
    scheduler.run_once()
    run = last_run(store, "default", "t")
    assert run["status"] == "SUCCESS", store.log(run["id"])
    result = run["result"]
    assert result["leaked"] is False and result["secret"] is None and result["extra"] == "hi"
    assert result["prefix"].startswith(str(scheduler.state_dir / "envs" / "default"))
    assert "1" in result["table"]


@pytest.mark.slow
def test_environment_build_failure_falls_back_to_last_good(repo: Repo, make: Any) -> None:
    repo.notebook("nb.ipynb", "def main():\n    import tabulate\n    return tabulate.__name__\n")
    repo.write("peach.yaml", task_yaml("default", {"t": py_task("nb.ipynb", "main")}, dependencies=["tabulate"]))
    repo.commit()
    scheduler, store = make([{"url": str(repo.path)}])
    scheduler.run_once()
    good_env = scheduler.envs.current("default")
    repo.write("peach.yaml", task_yaml("default", {"t": py_task("nb.ipynb", "main")},
                                       dependencies=["tabulate", "peach-tasks-no-such-package-xyz==1.0"]))
    repo.commit("add a package that does not exist")
    scheduler.run_once()
    assert scheduler.envs.current("default") == good_env
    runs = store.runs("default", "t")
    assert [r["status"] for r in runs] == ["SUCCESS", "SUCCESS"]
    [problem] = store.problems(["default"])
    assert problem["kind"] == "environment" and "peach-tasks-no-such-package-xyz" in problem["message"]
    assert "keep using environment" in problem["message"]


def test_new_organisation_whose_environment_fails_gets_clear_failure(repo: Repo, make: Any) -> None:
    repo.notebook("nb.ipynb", RETURN_ONE)
    repo.write("peach.yaml", task_yaml("sesr", {"t": py_task("nb.ipynb", "main")},
                                       dependencies=["peach-tasks-no-such-package-xyz==1.0"]))
    repo.commit()
    scheduler, store = make([{"url": str(repo.path)}])
    scheduler.run_once()
    run = last_run(store, "sesr", "t")
    assert run["status"] == "FAILURE" and "no Python environment" in run["error"]


def test_rejected_requirement_is_a_config_problem_with_line(repo: Repo, make: Any) -> None:
    repo.notebook("nb.ipynb", "def main():\n    import tabulate\n    return 1\n")
    repo.write("peach.yaml", "codops: default\ndependencies:\n  - tabulate\n  - -e ./lib\n"
                             "tasks:\n  t:\n    executor: python\n    notebook: nb.ipynb\n    method: main\n")
    repo.commit()
    scheduler, store = make([{"url": str(repo.path)}])
    scheduler.run_once()
    assert last_run(store, "default", "t")["status"] == "SUCCESS"  # the valid entry was kept
    [problem] = store.problems()
    assert (problem["file"], problem["line"]) == ("peach.yaml", 4) and "pip option" in problem["message"]


def test_stop_mid_iteration_leaves_nothing_pending_or_running(repo: Repo, make: Any) -> None:
    repo.notebook("slow.ipynb", "import time\ndef main():\n    time.sleep(30)\n")
    repo.write("peach.yaml", task_yaml("default", {"a": py_task("slow.ipynb", "main"),
                                                   "b": py_task("slow.ipynb", "main")}))
    repo.commit()
    scheduler, store = make([{"url": str(repo.path)}])
    scheduler.recover()
    scheduler.sync()
    thread = threading.Thread(target=scheduler.make_loop("default").tick)
    thread.start()
    deadline = time.monotonic() + 60
    while by_name(store)["a"]["state"] != "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert by_name(store)["b"]["state"] == "PENDING"
    scheduler.stop_event.set()
    thread.join(timeout=60)
    states = {name: t["state"] for name, t in by_name(store).items()}
    assert states == {"a": "FINISHED", "b": "FINISHED"}
    assert last_run(store, "default", "a")["status"] == "ABANDONED"
    assert store.runs("default", "b") == []


def test_a_run_end_that_cannot_be_stored_at_once_is_retried(repo: Repo, make: Any,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # The store out of reach for a moment (a busy connection pool, a database restart)
    # when the task ends: the run must still end with its own outcome and its whole log.
    from peach_tasks.scheduling import loops

    repo.notebook("nb.ipynb", RETURN_ONE)
    repo.write("peach.yaml", task_yaml("default", {"t": py_task("nb.ipynb", "main")}))
    repo.commit("task")
    scheduler, store = make([{"url": str(repo.path)}])
    monkeypatch.setattr(loops, "FINISH_RETRY_SECONDS", (0.01, 0.01))
    real, failures = Store._finish, []

    def flaky(*args: Any) -> None:  # fails after the log went into the transaction
        if len(failures) < 2:
            failures.append(1)
            raise ConnectionError("database briefly gone")
        real(*args)

    monkeypatch.setattr(Store, "_finish", staticmethod(flaky))
    scheduler.run_once()
    monkeypatch.undo()
    run = last_run(store, "default", "t")
    assert len(failures) == 2 and run["status"] == "SUCCESS" and run["result"] == 1
    log = store.log(run["id"]) or ""
    assert log.count("hello from the task") == 1  # neither lost nor written twice
