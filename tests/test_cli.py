"""The ``peach-tasks`` command line, run as a real process against real git repositories.

Every test starts the ``peach-tasks`` console script (``python -m peach_tasks.cli`` only
when the script is not installed beside this interpreter) from an empty working directory,
so nothing can silently fall back to a ``./scheduler.yaml``, and without
``$PEACH_TASKS_CONFIG`` / ``$PEACH_TASKS_DATABASE_URL`` from the caller.
Tasks use the python executor and no dependencies: their uv environment is empty.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import Repo, py_task, shared_folder, stop_processes, task_yaml, wait_for, write_settings
from web_helpers import measured_store

TASK_KEYS = {"codops", "name", "loop", "executor", "state", "last_status", "last_started_at",
             "last_duration_s", "version", "successes", "failures"}
RUN_KEYS = {"id", "version", "started_at", "finished_at", "status", "duration_s", "error"}

SCRIPT = Path(sys.executable).with_name("peach-tasks")
PEACH = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "peach_tasks.cli"]

CLEAN_ENV = {k: v for k, v in os.environ.items()
             if k not in ("PEACH_TASKS_CONFIG", "PEACH_TASKS_DATABASE_URL")}

GOOD_CELL = "def good():\n    print('hello from the good task', flush=True)\n    return 42\n"
BAD_CELL = "def bad():\n    print('about to fail', flush=True)\n    raise ValueError('boom: the table is empty')\n"
SLEEP_CELL = (
    "import os, time\n"
    "from pathlib import Path\n"
    "\n"
    "def sleepy():\n"
    "    Path(os.environ['OUT'], 'started').write_text(os.environ['PEACH_RUN_ID'])\n"
    "    time.sleep(300)\n"
)


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120,
        script: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    argv = (script or PEACH) + list(args)
    return subprocess.run(argv, cwd=cwd, env=CLEAN_ENV if env is None else env, capture_output=True,
                          text=True, timeout=timeout)


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr


class Peach:
    """One project in tmp_path: a git repository, its scheduler.yaml, an empty cwd."""

    def __init__(self, tmp_path: Path, **settings: Any) -> None:
        self.tmp = tmp_path
        self.repo = Repo(tmp_path / "algos")
        self.config = write_settings(tmp_path, [{"url": "algos"}], **settings)
        self.cwd = tmp_path / "elsewhere"
        self.cwd.mkdir()

    @property
    def db(self) -> Path:
        return self.tmp / "state" / "peach.db"

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``--config`` before the command; the other placements have tests of their own."""
        return cli("--config", str(self.config), *args, cwd=self.cwd, timeout=timeout)

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = self(*args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json").stdout)

    def tasks(self, *args: str) -> dict[str, dict[str, Any]]:
        return {f"{t['codops']}/{t['name']}": t for t in self.json("tasks", *args)}

    def runs(self, key: str) -> list[dict[str, Any]]:
        return self.json("runs", key, "--limit", "100")


def two_tasks(tmp_path: Path) -> Peach:
    """A repository with one succeeding and one failing task of organisation 'default'."""
    p = Peach(tmp_path)
    p.repo.notebook("good.ipynb", GOOD_CELL)
    p.repo.notebook("bad.ipynb", BAD_CELL)
    p.repo.write("peach.conf/default.yaml",
                 task_yaml("default", {"good": py_task("good.ipynb", "good"), "bad": py_task("bad.ipynb", "bad")}))
    p.repo.commit("two tasks")
    return p


@pytest.fixture
def peach(tmp_path: Path) -> Peach:
    return two_tasks(tmp_path)


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Peach:
    """``two_tasks`` after one ``run-once``; tests using it only read."""
    p = two_tasks(tmp_path_factory.mktemp("ran"))
    p.ok("run-once")
    return p


# -- --help -------------------------------------------------------------------------

COMMANDS = [[], ["serve"], ["run-once"], ["sync"], ["tasks"], ["runs"], ["logs"], ["demo"], ["db"],
            ["db", "upgrade"]]
WITH_CONFIG = {"serve", "run-once", "sync", "tasks", "runs", "logs", "upgrade"}


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "main")
def test_every_command_answers_help(tmp_path: Path, command: list[str]) -> None:
    result = cli(*command, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage:")
    assert " ".join(command) in result.stdout.splitlines()[0]
    if command and command[-1] in WITH_CONFIG:
        assert "--config" in result.stdout
    assert list(tmp_path.iterdir()) == []  # --help created nothing (no state, no database)


def test_help_lists_every_command(tmp_path: Path) -> None:
    result = cli("-h", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for name in ("serve", "run-once", "sync", "tasks", "runs", "logs", "demo", "db"):
        assert f"  {name} " in result.stdout


@pytest.mark.parametrize("args", [["--help"], ["tasks", "--help"], ["validate", "--help"]],
                         ids=lambda a: " ".join(a))
def test_python_dash_m_entry_point(tmp_path: Path, args: list[str]) -> None:
    result = cli(*args, cwd=tmp_path, script=[sys.executable, "-m", "peach_tasks.cli"])
    no_traceback(result)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage:")


# -- where the settings come from -----------------------------------------------------

def test_config_before_the_command(ran: Peach) -> None:
    assert set(ran.tasks()) == {"default/good", "default/bad"}


@pytest.mark.parametrize("args", [["tasks", "--json"], ["db", "upgrade"], ["runs", "default/good", "--json"]],
                         ids=lambda a: " ".join(a))
def test_config_after_the_command(ran: Peach, args: list[str]) -> None:
    result = cli(*args, "--config", str(ran.config), cwd=ran.cwd)
    assert result.returncode == 0, result.stderr
    if args[0] == "tasks":
        assert {t["name"] for t in json.loads(result.stdout)} == {"good", "bad"}
    elif args[0] == "runs":
        assert json.loads(result.stdout)[0]["status"] == "SUCCESS"
    else:
        assert "schema at revision" in result.stdout


def test_config_from_environment_variable(ran: Peach) -> None:
    env = dict(CLEAN_ENV, PEACH_TASKS_CONFIG=str(ran.config))
    result = cli("tasks", "--json", cwd=ran.cwd, env=env)
    assert result.returncode == 0, result.stderr
    assert {t["name"] for t in json.loads(result.stdout)} == {"good", "bad"}
    # An explicit --config wins over the variable.
    env["PEACH_TASKS_CONFIG"] = str(ran.tmp / "missing.yaml")
    missing = cli("tasks", cwd=ran.cwd, env=env)
    assert missing.returncode != 0 and "missing.yaml" in missing.stderr
    result = cli("--config", str(ran.config), "tasks", "--json", cwd=ran.cwd, env=env)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == 2


# -- run-once, tasks, runs, logs --------------------------------------------------------

def test_run_once_records_success_and_failure(peach: Peach) -> None:
    result = peach("run-once")
    assert result.returncode == 0, result.stderr  # a failing task is not the scheduler's failure
    assert "ran 2 tasks" in result.stderr

    tasks = peach.tasks()
    assert set(tasks) == {"default/good", "default/bad"}
    for task in tasks.values():
        assert TASK_KEYS <= set(task), TASK_KEYS - set(task)
        assert task["loop"] == "default" and task["executor"] == "python" and task["state"] == "FINISHED"
        assert task["version"] == peach.repo.short()
        assert task["last_started_at"].endswith("Z")
        assert task["last_duration_s"] >= 0
    good, bad = tasks["default/good"], tasks["default/bad"]
    assert (good["last_status"], good["successes"], good["failures"]) == ("SUCCESS", 1, 0)
    assert (bad["last_status"], bad["successes"], bad["failures"]) == ("FAILURE", 0, 1)

    # The human table shows the same.
    table = peach.ok("tasks").stdout.splitlines()
    assert table[0].split()[:2] == ["CODOPS", "NAME"]
    assert any(line.split()[:2] == ["default", "good"] and "SUCCESS" in line for line in table)

    peach.ok("run-once")
    runs = peach.runs("default/good")
    assert len(runs) == 2
    for run in runs:
        assert RUN_KEYS <= set(run), RUN_KEYS - set(run)
        assert run["status"] == "SUCCESS" and run["error"] is None
        assert run["version"] == peach.repo.short()
        assert run["finished_at"] >= run["started_at"]
    assert runs[0]["id"] > runs[1]["id"] and runs[0]["started_at"] >= runs[1]["started_at"]  # newest first
    assert peach.tasks()["default/good"]["successes"] == 2

    bad_runs = peach.runs("default/bad")
    assert [r["status"] for r in bad_runs] == ["FAILURE", "FAILURE"]
    assert "boom: the table is empty" in bad_runs[0]["error"]

    log = peach.ok("logs", str(runs[0]["id"])).stdout
    assert "hello from the good task" in log
    bad_log = peach.ok("logs", str(bad_runs[0]["id"])).stdout
    assert "about to fail" in bad_log and "boom: the table is empty" in bad_log
    assert "hello from the good task" not in bad_log


def test_run_once_selects_org_and_loop(tmp_path: Path) -> None:
    p = Peach(tmp_path)
    p.repo.notebook("good.ipynb", GOOD_CELL)
    p.repo.write("peach.conf/default.yaml", task_yaml("default", {
        "own": py_task("good.ipynb", "good"),
        "meta": py_task("good.ipynb", "good", loop="metadata"),
    }))
    p.repo.write("peach.conf/other.yaml", task_yaml("other", {
        "theirs": py_task("good.ipynb", "good"),
        "their_meta": py_task("good.ipynb", "good", loop="metadata"),
    }))
    p.repo.commit()

    def counts() -> dict[str, int]:
        return {key: t["successes"] + t["failures"] for key, t in p.tasks().items()}

    p.ok("run-once", "--org", "other")
    assert counts() == {"default/own": 0, "default/meta": 0, "other/theirs": 1, "other/their_meta": 1}

    p.ok("run-once", "--loop", "metadata")
    assert counts() == {"default/own": 0, "default/meta": 1, "other/theirs": 1, "other/their_meta": 2}

    p.ok("run-once", "--org", "default", "--loop", "metadata")
    assert counts() == {"default/own": 0, "default/meta": 2, "other/theirs": 1, "other/their_meta": 2}

    tasks = p.tasks("--org", "other")
    assert set(tasks) == {"other/theirs", "other/their_meta"}
    assert (tasks["other/theirs"]["loop"], tasks["other/their_meta"]["loop"]) == ("other", "metadata")


# -- sync and problems ------------------------------------------------------------------

# Broken definition files and the line each problem must point to.
BROKEN = {
    "unknown_key.yaml": ("codops: otherx\ntasks:\n  x:\n    executor: python\n    notebook: good.ipynb\n"
                         "    method: good\n    bogus: 1\n", 7),
    "wrong_type.yaml": ("codops: othery\ntasks:\n  y:\n    executor: python\n    notebook: good.ipynb\n"
                        "    timeout: soon\n    method: good\n", 6),
    "tab.yaml": ("codops: otherz\ntasks:\n  z:\n\tnotebook: good.ipynb\n    method: good\n", 4),
}


def test_sync_reports_broken_files_and_keeps_good_task(tmp_path: Path) -> None:
    p = Peach(tmp_path)
    p.repo.notebook("good.ipynb", GOOD_CELL)
    p.repo.write("peach.conf/default.yaml", task_yaml("default", {"good": py_task("good.ipynb", "good")}))
    for name, (text, _) in BROKEN.items():
        p.repo.write(f"peach.conf/{name}", text)
    p.repo.commit()

    result = p("sync")
    assert result.returncode == 1, result.stderr
    no_traceback(result)
    for name, (_, line) in BROKEN.items():
        prefix = f"peach.conf/{name}:{line}: "
        found = [ln for ln in result.stdout.splitlines() if ln.startswith(f"peach.conf/{name}:")]
        assert len(found) == 1 and found[0].startswith(prefix) and len(found[0]) > len(prefix), result.stdout
    assert "default.yaml" not in result.stdout

    assert set(p.tasks()) == {"default/good"}  # each broken file lost only its own task

    result = p("sync", "--json")
    assert result.returncode == 1
    problems = json.loads(result.stdout)
    assert isinstance(problems, list)
    assert all({"file", "line", "message"} <= set(q) and q["message"] for q in problems)
    assert sorted((q["file"], q["line"]) for q in problems) == sorted(
        (f"peach.conf/{name}", line) for name, (_, line) in BROKEN.items())

    # Fixing the files clears the problems and registers their tasks.
    for name, task in zip(BROKEN, "xyz"):
        p.repo.write(f"peach.conf/{name}", task_yaml(f"other{task}", {task: py_task("good.ipynb", "good")}))
    p.repo.commit("fix")
    result = p("sync")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""
    assert set(p.tasks()) == {"default/good", "otherx/x", "othery/y", "otherz/z"}
    assert json.loads(p("sync", "--json").stdout) == []


# -- usage errors -----------------------------------------------------------------------

@pytest.mark.parametrize("command", [["run-once"], ["tasks"], ["serve"], ["db", "upgrade"]],
                         ids=lambda c: " ".join(c))
def test_bad_settings_file_is_reported_with_its_line(tmp_path: Path, command: list[str]) -> None:
    config = tmp_path / "scheduler.yaml"
    config.write_text("state_dir: state\nrepositories: []\ntimeouts:\n  task: 10\n  colour: blue\n")
    result = cli("--config", str(config), *command, cwd=tmp_path, timeout=60)
    assert result.returncode != 0
    no_traceback(result)
    assert "scheduler.yaml:5: unknown key" in result.stderr
    assert "colour" in result.stderr
    assert not (tmp_path / "state").exists()  # nothing was started with broken settings


def test_runs_show_what_each_run_used(tmp_path: Path) -> None:
    """Usage as the store has it: raw numbers in --json, compact in the table, "-" when not measured."""
    own = measured_store(tmp_path)
    own.store.close()
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()

    def runs(*extra: str) -> str:
        result = cli("--config", str(tmp_path / "scheduler.yaml"), "runs", "default/heavy", *extra, cwd=cwd)
        assert result.returncode == 0, result.stderr
        return result.stdout

    newest, older = json.loads(runs("--json"))
    assert (older["id"], older["peak_memory_bytes"], older["cpu_seconds"]) == (own.measured, 212 * 2**20, 1.3)
    assert (newest["id"], newest["peak_memory_bytes"], newest["cpu_seconds"]) == (own.unmeasured, None, None)

    header, *rows = runs().splitlines()
    columns = header.split()
    assert columns[columns.index("DURATION_S") + 1:][:2] == ["MEMORY", "CPU"]
    # The table is aligned: each value starts under its header.
    memory, cpu, after = (header.index(name) for name in ("MEMORY", "CPU", "TRIGGERED_BY"))
    by_id = {int(row.split()[0]): row for row in rows}
    assert (by_id[own.measured][memory:cpu].strip(), by_id[own.measured][cpu:after].strip()) == ("212 MiB", "1.3 s")
    assert (by_id[own.unmeasured][memory:cpu].strip(), by_id[own.unmeasured][cpu:after].strip()) == ("-", "-")


def test_runs_without_slash_is_a_usage_error(ran: Peach) -> None:
    result = ran("runs", "good")
    assert result.returncode == 2
    no_traceback(result)
    assert "CODOPS/TASK" in result.stderr and "default/" in result.stderr
    assert result.stdout == ""


def test_logs_of_unknown_run(ran: Peach) -> None:
    result = ran("logs", "999")
    assert result.returncode != 0
    no_traceback(result)
    assert "no run with id 999" in result.stderr
    assert result.stdout == ""


def test_runs_of_unknown_task(ran: Peach) -> None:
    # An error, as 'trigger' says (issue 14); test_cli_first_steps has the suggestions.
    for args in (["runs", "default/nope"], ["runs", "default/nope", "--json"]):
        result = ran(*args)
        assert result.returncode == 1 and result.stdout == ""
        assert "no task 'nope' in organisation 'default'" in result.stderr


@pytest.mark.parametrize("command", [["tasks"], ["runs", "default/good"], ["logs", "1"]],
                         ids=lambda c: c[0])
def test_views_before_any_run_say_what_to_do(peach: Peach, command: list[str]) -> None:
    result = peach(*command)
    assert result.returncode != 0
    no_traceback(result)
    assert "run-once" in result.stderr and "serve" in result.stderr
    assert not peach.db.exists()  # a view never creates the database


# -- one scheduler per state_dir --------------------------------------------------------

def test_second_scheduler_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    # serve's dashboard: any free port; OUT shown to the sandboxed task
    p = Peach(tmp_path, task_env={"OUT": str(out)}, web={"port": 0}, **shared_folder(out))
    p.repo.notebook("sleep.ipynb", SLEEP_CELL)
    p.repo.write("peach.yaml", task_yaml("default", {"sleepy": py_task("sleep.ipynb", "sleepy")}))
    p.repo.commit()

    with open(tmp_path / "serve.log", "wb") as log:
        serve = subprocess.Popen([*PEACH, "--config", str(p.config), "serve"],
                                 cwd=p.cwd, env=CLEAN_ENV, stdout=log, stderr=subprocess.STDOUT)
    try:
        def started() -> str | None:
            if serve.poll() is not None:
                raise AssertionError(f"serve exited with {serve.returncode}:\n"
                                     + (tmp_path / "serve.log").read_text(errors="replace"))
            return (out / "started").exists() and (out / "started").read_text()

        run_id = int(wait_for(started, 60, "the served task to start",
                              detail=lambda: (tmp_path / "serve.log").read_text(errors="replace")))

        for command in (["run-once"], ["serve", "--duration", "5"]):
            result = p(*command, timeout=60)
            assert result.returncode != 0, result.stderr
            no_traceback(result)
            assert "another scheduler" in result.stderr and "state_dir" in result.stderr

        # The refused scheduler did not "recover" the live run of the first one.
        assert serve.poll() is None
        runs = p.runs("default/sleepy")
        assert [(r["id"], r["status"]) for r in runs] == [(run_id, "RUNNING")], \
            [(r["id"], r["status"], r["error"]) for r in runs]
    finally:
        stop_processes([serve], timeout=30)
    assert serve.returncode == 0, (tmp_path / "serve.log").read_text()


# -- the demo ---------------------------------------------------------------------------

@pytest.mark.slow
def test_demo(tmp_path: Path) -> None:
    # The demo serves its dashboard on the default web.port and has no option to change it.
    try:
        socket.create_server(("127.0.0.1", 8765)).close()
    except OSError:
        pytest.skip("127.0.0.1:8765 is in use by another process; the demo's dashboard needs it")
    directory = tmp_path / "demo"
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    # Long enough for every task to run once after the environments are built, even on a
    # busy machine (scikit-learn's environment is the slow one).
    cache = tmp_path / "cache"  # where the demo tells the widget its address while it runs
    env = dict(CLEAN_ENV, XDG_CACHE_HOME=str(cache))
    from test_org_redis import redis_missing

    with_redis = redis_missing() is None  # the demo uses a Redis answering on 127.0.0.1:6379
    try:
        result = cli("demo", str(directory), "--duration", "45", cwd=cwd, timeout=900, env=env)
        weights = _demo_weights(result.stderr) if with_redis else None
    finally:
        if with_redis:
            _remove_demo_redis()
    assert result.returncode == 0, result.stderr[-3000:]
    assert "export PEACH_TASKS_URL=http://127.0.0.1:8765" in result.stderr
    assert not (cache / "peach-tasks" / "demo-url").exists()  # gone with the demo
    config = directory / "scheduler.yaml"
    assert config.exists() and (directory / "algos" / ".git").is_dir()

    listed = cli("--config", str(config), "tasks", "--json", cwd=cwd)
    assert listed.returncode == 0, listed.stderr
    tasks = {f"{t['codops']}/{t['name']}": t for t in json.loads(listed.stdout)}
    expected = {"default/train_model": ("default", "SUCCESS"), "default/build_report": ("default", "FAILURE"),
                "default/fetch_metadata": ("metadata", "SUCCESS"), "chrts/summary": ("chrts", "SUCCESS")}
    assert set(tasks) == set(expected)
    for key, (loop, status) in expected.items():
        task = tasks[key]
        assert task["loop"] == loop, key
        assert task["state"] == "FINISHED", key
        # Stopping after --duration may cut the very last run short (ABANDONED, by design);
        # every run that finished on its own ended as the task always does.
        assert task["last_status"] in (status, "ABANDONED"), (key, task)
        if status == "SUCCESS":
            assert task["successes"] >= 1 and task["failures"] == 0, (key, task)
        else:
            assert task["failures"] >= 1 and task["successes"] == 0, (key, task)
        runs = cli("--config", str(config), "runs", key, "--json", cwd=cwd)
        assert runs.returncode == 0, runs.stderr
        finished = [r["status"] for r in json.loads(runs.stdout) if r["status"] != "ABANDONED"]
        assert finished and set(finished) == {status}, (key, finished)
    if with_redis:  # the tutorial's "weights in Redis", read back as the demo says
        assert "read them back with" in result.stderr.lower() and weights is not None
        assert set(weights) == {"coef", "intercept", "accuracy"} and weights["accuracy"] > 0.9
        assert not (directory / "output" / "iris_weights.json").exists()
        assert "redis:" in config.read_text()
    else:
        assert (directory / "output" / "iris_weights.json").exists()
        assert "No Redis answers on 127.0.0.1:6379" in result.stderr
    assert (directory / "output" / "metadata.json").exists()
    assert tasks["chrts/summary"]["environment"] == "reports"  # the demo's PEACH-form organisation


def _demo_weights(stderr: str) -> Any:
    """The weights, read with the redis-cli line the demo printed."""
    import shlex

    line = next((line.strip() for line in stderr.splitlines() if line.strip().startswith("redis-cli ")), None)
    assert line is not None, stderr[-3000:]
    read = subprocess.run(shlex.split(line), capture_output=True, text=True, timeout=30)
    assert read.returncode == 0, read.stderr
    return json.loads(read.stdout)


def _remove_demo_redis() -> None:
    """The demo's users and key on the shared server: gone after the test."""
    import redis

    server = redis.Redis()
    server.acl_deluser("peach-demo-default", "peach-demo-chrts")
    server.delete("default:iris:weights")
    server.close()


def test_demo_redis_is_found_or_explained() -> None:
    from peach_tasks.demo import find_redis

    with socket.socket() as sock:  # a port where nothing answers
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ValueError, match="cannot be used"):
        find_redis(f"redis://127.0.0.1:{port}/0")
    with pytest.raises(ValueError, match="not a redis:// URL"):
        find_redis("http://127.0.0.1:6379")
    found = find_redis("redis://127.0.0.1:6379/0") if _redis_up() else None
    if found is not None:
        assert found.url == "redis://127.0.0.1:6379/0" and found.read_back().startswith("redis-cli -u redis://")


def _redis_up() -> bool:
    from test_org_redis import redis_missing

    return redis_missing() is None


def test_sync_and_validate_agree_on_notebooks_the_scheduler_cannot_run(tmp_path: Path) -> None:
    p = Peach(tmp_path)
    p.repo.write("not_json.ipynb", "this is not a notebook\n")
    p.repo.write("no_cells.ipynb", json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}}))
    p.repo.notebook("syntax.ipynb", "def broken(:\n    pass\n")
    p.repo.notebook("good.ipynb", GOOD_CELL)
    p.repo.write("peach.yaml", task_yaml("default", {
        "a": py_task("not_json.ipynb", "main"), "b": py_task("no_cells.ipynb", "main"),
        "c": py_task("syntax.ipynb", "broken"), "good": py_task("good.ipynb", "good")}))
    p.repo.commit()
    synced = p("sync")
    validated = cli("validate", str(p.repo.path), cwd=p.cwd)
    assert synced.returncode == 1 and validated.returncode == 1, (synced.stdout, validated.stdout)
    for notebook in ("not_json.ipynb", "no_cells.ipynb", "syntax.ipynb"):
        in_sync = [ln for ln in synced.stdout.splitlines() if ln.startswith(notebook)]
        in_validate = [ln for ln in validated.stdout.splitlines() if notebook in ln]
        assert in_sync and in_validate, (notebook, synced.stdout, validated.stdout)
    assert "syntax.ipynb:" in synced.stdout and "good.ipynb" not in synced.stdout
    assert set(p.tasks()) == {"default/a", "default/b", "default/c", "default/good"}  # still shown, failing


def test_export_ignore_does_not_hide_files_from_the_scheduler(tmp_path: Path) -> None:
    p = Peach(tmp_path)
    p.repo.notebook("nb.ipynb", GOOD_CELL)
    p.repo.write("peach.yaml", task_yaml("default", {"good": py_task("nb.ipynb", "good")}))
    p.repo.write(".gitattributes", "nb.ipynb export-ignore\npeach.yaml export-ignore\n")
    p.repo.commit()
    assert cli("validate", str(p.repo.path), cwd=p.cwd).returncode == 0
    assert p("sync").returncode == 0
    assert set(p.tasks()) == {"default/good"}
    p.ok("run-once")
    assert p.runs("default/good")[0]["status"] == "SUCCESS"


def test_run_ids_beyond_a_database_integer_are_usage_errors(tmp_path: Path) -> None:
    p = Peach(tmp_path)
    p.repo.notebook("good.ipynb", GOOD_CELL)
    p.repo.write("peach.yaml", task_yaml("default", {"good": py_task("good.ipynb", "good")}))
    p.repo.commit()
    p.ok("sync")
    for args in (("logs", str(2**64)), ("runs", "default/good", "--before", str(2**63))):
        result = p(*args)
        assert result.returncode == 2 and "is not in the range" in result.stderr, result.stderr
        no_traceback(result)


ESCAPES_CELL = ('import sys\n\ndef forge():\n    print("progress\\r2026-01-01T00:00:00.000Z peach-tasks: run 1 of a/b FORGED")\n'
                '    print("title \\x1b]0;owned\\x07 clipboard \\x1b]52;c;ZXZpbA==\\x07 bell \\x07 nul \\x00")\n'
                '    raise ValueError("bad \\x1b[2J\\r error")\n')


def test_a_tasks_control_characters_are_shown_not_played_on_the_terminal(tmp_path: Path) -> None:
    """Found by the hostile pass: a task's OSC sequences (a window title, the clipboard) and
    carriage returns reached the operator's terminal through ``logs``, and ``\\r`` made a line
    of the task look like the scheduler's. They are written out (``\\x1b``) in logs and tables;
    ``logs --raw`` prints what the task wrote."""
    p = Peach(tmp_path)
    p.repo.notebook("nb.ipynb", ESCAPES_CELL)
    p.repo.write("peach.yaml", task_yaml("default", {"forge": py_task("nb.ipynb", "forge")}))
    p.repo.commit("escapes")
    ran = p.ok("run-once")  # its line about the run shows the task's error, written out too (the re-check)
    assert "\\x1b[2J\\x0d error" in ran.stderr and "\x1b" not in ran.stderr + ran.stdout, ran.stderr
    [run] = p.runs("default/forge")
    log = p.ok("logs", str(run["id"])).stdout
    assert "progress\\x0d2026-01-01T00:00:00.000Z peach-tasks: run 1 of a/b FORGED" in log
    assert "title \\x1b]0;owned\\x07 clipboard \\x1b]52;c;ZXZpbA==\\x07 bell \\x07" in log
    assert not any(ch in log for ch in "\x1b\r\x07\x00")
    raw = p.ok("logs", str(run["id"]), "--raw").stdout
    assert "\x1b]0;owned\x07" in raw  # (the test reads it as text, which turns a CR into a newline)
    table = p.ok("runs", "default/forge").stdout
    assert "\\x1b[2J\\x0d error" in table and "\x1b" not in table and "\r" not in table
