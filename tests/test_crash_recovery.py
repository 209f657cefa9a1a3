"""The scheduler as a real process: killed with SIGKILL, stopped with SIGTERM/SIGINT.

The task writes its own pid and the pid of a grandchild (``sleep 300``) into a folder
given through ``task_env`` and shown to its sandbox (``python.mounts``), then sleeps. The
test finds those processes on the host (``host_pid``) and watches them and the store.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest
import yaml
from conftest import Repo, host_pid, py_task, run_marker, shared_folder, task_yaml, wait_for, write_settings

from peach_tasks.store import Store

# The console script (``python -m peach_tasks.cli`` only when it is not installed here).
SCRIPT = Path(sys.executable).with_name("peach-tasks")
PEACH = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "peach_tasks.cli"]

CLEAN_ENV = {k: v for k, v in os.environ.items()
             if k not in ("PEACH_TASKS_CONFIG", "PEACH_TASKS_DATABASE_URL")}

SLEEPER = (
    "import os, subprocess, time\n"
    "from pathlib import Path\n"
    "\n"
    "def sleepy():\n"
    "    out = Path(os.environ['OUT'])\n"
    "    run = os.environ['PEACH_RUN_ID']\n"
    "    child = subprocess.Popen(['sleep', '300'])\n"
    "    for name, pid in (('grandchild', child.pid), ('task', os.getpid())):\n"
    "        (out / f'{run}.{name}.tmp').write_text(str(pid))\n"
    "        os.replace(out / f'{run}.{name}.tmp', out / f'{run}.{name}')\n"
    "    print('sleeping with a grandchild', child.pid, flush=True)\n"
    "    time.sleep(300)\n"
)


def run_processes(state_dir: Path, run_id: int) -> list[int]:
    """Live processes on the host carrying the marker of run ``run_id`` of ``state_dir``."""
    marker = run_marker(state_dir, run_id)
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("PEACH_TASKS_RUN") == marker and alive(proc.pid):
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


def alive(pid: int) -> bool:
    """Running, and not a zombie (a zombie only waits to be reaped)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Project:
    def __init__(self, tmp_path: Path, tasks: dict[str, dict[str, Any]], **settings: Any) -> None:
        self.tmp = tmp_path
        self.out = tmp_path / "out"
        self.out.mkdir()
        self.cwd = tmp_path / "elsewhere"
        self.cwd.mkdir()
        self.repo = Repo(tmp_path / "algos")
        self.repo.notebook("sleep.ipynb", SLEEPER)
        self.repo.notebook("misc.ipynb",
                           "import time\n\ndef fails():\n    raise RuntimeError('deliberate failure')\n\n"
                           "def hangs():\n    print('hanging', flush=True)\n    time.sleep(30)\n\n"
                           "def works():\n    print('all good', flush=True)\n    return 'ok'\n")
        self.repo.write("peach.yaml", task_yaml("default", tasks))
        self.repo.commit()
        # web.port 0: serve's dashboard on a free port, never one another process holds.
        self.config = write_settings(tmp_path, [{"url": "algos"}], task_env={"OUT": str(self.out)},
                                     web={"port": 0}, **{**shared_folder(self.out), **settings})
        self.url = f"sqlite:///{tmp_path / 'state' / 'peach.db'}"
        self.started: list[subprocess.Popen[bytes]] = []

    def set_task_timeout(self, seconds: float) -> None:
        data = yaml.safe_load(self.config.read_text())
        data["timeouts"]["task"] = seconds
        self.config.write_text(yaml.safe_dump(data, sort_keys=False))

    def command(self, *args: str) -> list[str]:
        return [*PEACH, "--config", str(self.config), *args]

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        """``peach-tasks --config ... ARGS`` in the background; its output goes to a log file."""
        log = open(self.tmp / f"scheduler{len(self.started)}.log", "wb")
        proc = subprocess.Popen(self.command(*args), cwd=self.cwd, env=CLEAN_ENV, stdout=log,
                                stderr=subprocess.STDOUT)
        log.close()
        self.started.append(proc)
        return proc

    def serve(self) -> subprocess.Popen[bytes]:
        return self.start("serve")

    def serve_log(self, index: int = 0) -> str:
        return (self.tmp / f"scheduler{index}.log").read_text(errors="replace")

    def run_once(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command("run-once"), cwd=self.cwd, env=CLEAN_ENV, capture_output=True,
                              text=True, timeout=120)

    def runs(self, task: str = "sleepy") -> list[dict[str, Any]]:
        """Newest first, straight from the store."""
        store = Store.open(self.url, migrate=False)
        try:
            return store.runs("default", task, limit=100)
        finally:
            store.close()

    def all_runs(self) -> list[dict[str, Any]]:
        store = Store.open(self.url, migrate=False)
        try:
            return [r for t in store.tasks(include_inactive=True) for r in store.runs(t["codops"], t["name"], 100)]
        finally:
            store.close()

    def running_run(self) -> dict[str, Any] | None:
        """The RUNNING run whose task has written both pid files."""
        try:
            runs = self.runs()
        except Exception:  # the scheduler is still creating the database
            return None
        for run in runs:
            if run["status"] == "RUNNING" and (self.out / f"{run['id']}.task").exists() \
                    and (self.out / f"{run['id']}.grandchild").exists():
                return run
        return None

    def wait_running(self, serve: subprocess.Popen[bytes], index: int = 0) -> dict[str, Any]:
        """Wait for ``running_run`` while ``serve`` lives (a scheduler that died fails at once)."""
        def check() -> dict[str, Any] | None:
            if serve.poll() is not None:
                raise AssertionError(f"the scheduler exited with {serve.returncode}:\n{self.serve_log(index)}")
            return self.running_run()

        return wait_for(check, 60, "the task to run and write its pids",
                        detail=lambda: self.serve_log(index))

    def pids(self, run_id: int) -> tuple[int, int]:
        """The host's pids of the run's task and grandchild (they report their sandbox's own)."""
        def find(name: str) -> int:
            ns_pid = int((self.out / f"{run_id}.{name}").read_text())
            marker = run_marker(self.tmp / "state", run_id)
            return wait_for(lambda: host_pid(ns_pid, marker), 10, f"the run's {name} on the host")

        return find("task"), find("grandchild")

    def cleanup(self) -> None:
        """Whatever a failed test left: only the processes this test started."""
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for path in self.out.iterdir():
            if path.suffix in (".task", ".grandchild"):
                try:  # the pid in the file is the sandbox's: only its host pid may be killed
                    pid = host_pid(int(path.read_text()), run_marker(self.tmp / "state", path.name.split(".")[0]))
                    if pid is not None:
                        os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, ValueError, PermissionError):
                    pass


@pytest.fixture
def sleeper(tmp_path: Path) -> Iterator[Project]:
    project = Project(tmp_path, {"sleepy": py_task("sleep.ipynb", "sleepy")})
    yield project
    project.cleanup()


@pytest.mark.parametrize("isolation", ["sandbox", "none"])
def test_sigkill_then_restart_ends_the_orphaned_run(tmp_path: Path, isolation: str) -> None:
    sleeper = Project(tmp_path, {"sleepy": py_task("sleep.ipynb", "sleepy")}, isolation=isolation)
    try:
        _sigkill_then_restart(sleeper, sandboxed=isolation == "sandbox")
    finally:
        sleeper.cleanup()


def _sigkill_then_restart(sleeper: Project, sandboxed: bool) -> None:
    serve = sleeper.serve()
    run = sleeper.wait_running(serve)
    task_pid, grandchild_pid = sleeper.pids(run["id"])
    assert alive(task_pid) and alive(grandchild_pid)

    serve.kill()  # SIGKILL: no handler, no clean-up of any kind
    assert serve.wait(timeout=30) == -signal.SIGKILL

    if sandboxed:
        # A sandbox dies with its scheduler (bubblewrap's --die-with-parent), all of it.
        wait_for(lambda: not alive(task_pid) and not alive(grandchild_pid), 10, "the sandbox to die with serve")
    else:
        # A plain task runs in its own session: it survives its scheduler. Without a
        # recovery it would go on for 300 s.
        time.sleep(0.5)
        assert alive(task_pid) and alive(grandchild_pid)
    # Either way its run stays RUNNING until a scheduler starts again.
    assert sleeper.runs()[0]["id"] == run["id"] and sleeper.runs()[0]["status"] == "RUNNING"

    # The restarted scheduler's own run of the task should end quickly: a 3 s limit.
    sleeper.set_task_timeout(3)
    result = sleeper.run_once()
    assert result.returncode == 0, result.stderr

    assert wait_for(lambda: not alive(task_pid) and not alive(grandchild_pid), 10,
                    "the orphaned task and its grandchild to be gone")
    runs = sleeper.runs()
    old = next(r for r in runs if r["id"] == run["id"])
    assert old["status"] == "ABANDONED"
    assert "scheduler stopped" in old["error"]
    assert old["finished_at"] is not None

    new = [r for r in runs if r["id"] > run["id"]]
    assert len(new) == 1, runs
    assert new[0]["status"] == "TIMEOUT" and "timed out" in new[0]["error"]
    # The new run started its own processes, and they were ended by its timeout.
    assert (sleeper.out / f"{new[0]['id']}.task").exists() and (sleeper.out / f"{new[0]['id']}.grandchild").exists()
    assert run_processes(sleeper.tmp / "state", new[0]["id"]) == []
    assert all(r["status"] != "RUNNING" for r in sleeper.all_runs())


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: signal.Signals(s).name)
def test_clean_stop_abandons_the_run_and_ends_its_processes(sleeper: Project, signum: int) -> None:
    serve = sleeper.serve()
    run = sleeper.wait_running(serve)
    task_pid, grandchild_pid = sleeper.pids(run["id"])
    assert alive(task_pid) and alive(grandchild_pid)

    serve.send_signal(signum)
    assert serve.wait(timeout=60) == 0, sleeper.serve_log()
    log = sleeper.serve_log()
    assert f"{signal.Signals(signum).name} received" in log
    assert "Traceback" not in log

    assert not alive(task_pid) and not alive(grandchild_pid)
    runs = sleeper.runs()
    assert [r["id"] for r in runs] == [run["id"]]  # no new run began while stopping
    assert runs[0]["status"] == "ABANDONED"
    assert runs[0]["error"] and "scheduler" in runs[0]["error"]
    assert runs[0]["finished_at"] is not None
    assert all(r["status"] != "RUNNING" for r in sleeper.all_runs())
    store = Store.open(sleeper.url, migrate=False)
    try:
        assert [t["state"] for t in store.tasks()] == ["FINISHED"]
    finally:
        store.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: signal.Signals(s).name)
def test_interrupted_run_once_ends_its_task(sleeper: Project, signum: int) -> None:
    run_once = sleeper.start("run-once")
    run = sleeper.wait_running(run_once)
    task_pid, grandchild_pid = sleeper.pids(run["id"])

    run_once.send_signal(signum)
    run_once.wait(timeout=60)
    assert "Traceback" not in sleeper.serve_log()
    status = sleeper.runs()[0]
    assert status["id"] == run["id"] and status["status"] == "ABANDONED", status
    assert not alive(task_pid) and not alive(grandchild_pid)


def test_loop_goes_on_after_a_failure_and_a_timeout(tmp_path: Path) -> None:
    # Tasks run in the order of their names within the loop.
    project = Project(tmp_path, {
        "a_fails": py_task("misc.ipynb", "fails"),
        "b_hangs": py_task("misc.ipynb", "hangs", timeout=2),
        "c_works": py_task("misc.ipynb", "works"),
    })
    try:
        result = project.run_once()
        assert result.returncode == 0, result.stderr
        assert "ran 3 tasks" in result.stderr
        runs = {name: project.runs(name) for name in ("a_fails", "b_hangs", "c_works")}
        assert all(len(r) == 1 for r in runs.values()), runs
        fails, hangs, works = runs["a_fails"][0], runs["b_hangs"][0], runs["c_works"][0]
        assert fails["status"] == "FAILURE" and "deliberate failure" in fails["error"]
        assert hangs["status"] == "TIMEOUT"
        assert "timed out after 2 s" in hangs["error"]
        assert works["status"] == "SUCCESS" and works["result"] == "ok" and works["error"] is None
        assert fails["id"] < hangs["id"] < works["id"]  # the same loop went on after each
    finally:
        project.cleanup()
