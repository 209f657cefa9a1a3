"""Findings of issue 11 ("Hardening"), each against the real ``peach-tasks`` command line.

Every test starts the console script as a real process (as tests/test_cli.py does) on real
git repositories, from an empty working directory and without ``$PEACH_TASKS_CONFIG`` /
``$PEACH_TASKS_DATABASE_URL`` from the caller.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest
import yaml
from conftest import Repo, py_task, shared_folder, task_yaml, wait_for, write_settings

from peach_tasks.store import Store

SCRIPT = Path(sys.executable).with_name("peach-tasks")
PEACH = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "peach_tasks.cli"]

CLEAN_ENV = {k: v for k, v in os.environ.items()
             if k not in ("PEACH_TASKS_CONFIG", "PEACH_TASKS_DATABASE_URL")}

GOOD_CELL = "def good():\n    return 42\n"


class Project:
    """A git repository ``algos`` with one task, its scheduler.yaml and an empty cwd."""

    def __init__(self, tmp_path: Path, cell: str = GOOD_CELL, method: str = "good",
                 dependencies: list[str] | None = None, **settings: Any) -> None:
        self.tmp = tmp_path
        self.cwd = tmp_path / "elsewhere"
        self.cwd.mkdir()
        self.repo = Repo(tmp_path / "algos")
        self.repo.notebook("nb.ipynb", cell)
        self.repo.write("peach.yaml", task_yaml("default", {"t": py_task("nb.ipynb", method)}, dependencies))
        self.repo.commit()
        # web.port 0: serve's dashboard on a free port, never one another process holds.
        self.config = write_settings(tmp_path, [{"url": "algos"}], web={"port": 0}, **settings)
        self.state = tmp_path / "state"
        self.started: list[subprocess.Popen[bytes]] = []

    def settings(self) -> dict[str, Any]:
        return yaml.safe_load(self.config.read_text())

    def write_settings(self, data: dict[str, Any]) -> None:
        self.config.write_text(yaml.safe_dump(data, sort_keys=False))

    def __call__(self, *args: str, env: dict[str, str] | None = None,
                 timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*PEACH, "--config", str(self.config), *args], cwd=self.cwd,
                              env=env or CLEAN_ENV, capture_output=True, text=True, timeout=timeout)

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """``peach-tasks --config ... ARGS`` in the background; its output goes to a log file."""
        with open(self.tmp / f"scheduler{len(self.started)}.log", "wb") as log:
            proc = subprocess.Popen([*PEACH, "--config", str(self.config), *args], cwd=self.cwd,
                                    env=env or CLEAN_ENV, stdout=log, stderr=subprocess.STDOUT)
        self.started.append(proc)
        return proc

    def log(self, index: int = -1) -> str:
        index = index % len(self.started)
        return (self.tmp / f"scheduler{index}.log").read_text(errors="replace")

    def store(self) -> Store:
        return Store.open(f"sqlite:///{self.state / 'peach.db'}", migrate=False)

    def runs(self, task: str = "t") -> list[dict[str, Any]]:
        store = self.store()
        try:
            return store.runs("default", task, limit=100)
        finally:
            store.close()

    def problems(self) -> list[dict[str, Any]]:
        store = self.store()
        try:
            return store.problems()
        finally:
            store.close()

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGUSR1)  # serve writes every thread's stack to its log
            time.sleep(2)
            proc.kill()
            proc.wait()
            raise AssertionError(f"the scheduler did not stop within {timeout} s of SIGTERM:\n{self.log()}")

    def cleanup(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    p = Project(tmp_path)
    yield p
    p.cleanup()


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr


# -- 10. problems of a repository removed from scheduler.yaml ---------------------------

def test_problems_of_a_removed_repository_go_away(project: Project) -> None:
    broken = Repo(project.tmp / "broken")
    broken.write("peach.yaml", "codops: default\ntasks:\n  x:\n    bogus: 1\n")
    broken.commit()
    data = project.settings()
    data["repositories"] += [{"url": "broken"}, {"url": "no-such-remote"}]
    project.write_settings(data)
    result = project("sync")
    assert result.returncode == 1, result.stderr
    assert {p["scope"] for p in project.problems()} == {"broken", "no-such-remote"}

    data["repositories"] = data["repositories"][:1]
    project.write_settings(data)
    result = project("sync")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "" and project.problems() == []


# -- 12. repository names that leave state_dir ------------------------------------------

@pytest.mark.parametrize("entry, shown", [({"url": "algos", "name": "../../escaped"}, "../../escaped"),
                                          ({"url": "algos", "name": "/tmp/escaped"}, "/tmp/escaped"),
                                          ({"url": "algos/.."}, "'..'")],
                         ids=["name", "absolute-name", "derived-from-url"])
def test_repository_name_outside_state_dir_is_refused_with_its_line(project: Project, entry: dict[str, Any],
                                                                   shown: str) -> None:
    data = project.settings()
    data["repositories"] = [entry]
    project.write_settings(data)
    before = sorted(p.name for p in project.tmp.iterdir())
    result = project("sync")
    assert result.returncode == 1
    no_traceback(result)
    lines = project.config.read_text().splitlines()
    line = 1 + next(i for i, text in enumerate(lines)
                    if text.strip().startswith("name:" if "name" in entry else "- url:"))
    assert f"scheduler.yaml:{line}:" in result.stderr and shown in result.stderr, result.stderr
    assert sorted(p.name for p in project.tmp.iterdir()) == before  # nothing created, not even state_dir


def test_discovered_project_named_outside_state_dir_is_refused(project: Project) -> None:
    from gitlab_standin import StandInGitLab

    token = "glpat-standin-0123456789"
    gitlab = StandInGitLab(token).start()
    try:
        gitlab.add("../../../../escaped", project.repo.path, ["peach-lab"])
        gitlab.add("data/fine", project.repo.path, ["peach-lab"])
        data = project.settings()
        data["repositories"] = []
        data["gitlab"] = {"url": gitlab.url, "token_env": "PEACH_TEST_GITLAB_TOKEN"}
        project.write_settings(data)
        result = project("sync", env=dict(CLEAN_ENV, PEACH_TEST_GITLAB_TOKEN=token))
    finally:
        gitlab.stop()
    no_traceback(result)
    assert result.returncode == 1
    assert "../../../../escaped" in result.stdout and "gitlab" in result.stdout, result.stdout
    assert not (project.tmp / "escaped").exists()
    assert not list(project.tmp.glob("**/escaped"))
    assert (project.state / "discovered" / "gitlab" / "repos" / "data" / "fine" / "mirror.git").is_dir()


def test_repository_refuses_a_folder_outside_its_state_dir(tmp_path: Path) -> None:
    from peach_tasks.errors import PeachError
    from peach_tasks.sources.repos import Repository

    for name in ("../escaped", "a/../../escaped", "/tmp/escaped", "..", ".", ""):
        with pytest.raises(PeachError, match="outside|not a usable"):
            Repository(name, str(tmp_path), "master", tmp_path / "state")
    assert Repository("group/project", str(tmp_path), "master", tmp_path / "state").root == \
        tmp_path / "state" / "repos" / "group" / "project"


# -- 13. clear messages -----------------------------------------------------------------

@pytest.mark.parametrize("state_dir", ["state", "state/inner"], ids=["is-a-file", "under-a-file"])
@pytest.mark.parametrize("command", [["sync"], ["run-once"], ["tasks"]], ids=lambda c: c[0])
def test_state_dir_that_is_a_file_is_a_clear_error(project: Project, state_dir: str, command: list[str]) -> None:
    (project.tmp / "state").write_text("not a folder\n")
    data = project.settings()
    data["state_dir"] = state_dir
    project.write_settings(data)
    result = project(*command)
    assert result.returncode == 1
    no_traceback(result)
    assert "scheduler.yaml:1: " in result.stderr and "state_dir" in result.stderr, result.stderr
    assert "not a folder" in result.stderr and str(project.tmp / "state") in result.stderr, result.stderr


def test_task_name_too_long_for_yaml_says_so(project: Project) -> None:
    name = "n" * 5000
    # As people write it: a plain key (yaml.safe_dump would write a long key as '? key').
    project.repo.write("peach.conf/long.yaml", f"codops: other\ntasks:\n  {name}:\n    executor: python\n"
                                               "    notebook: nb.ipynb\n    method: good\n")
    project.repo.commit("a long name")
    result = project("sync")
    assert result.returncode == 1
    no_traceback(result)
    [line] = [ln for ln in result.stdout.splitlines() if ln.startswith("peach.conf/long.yaml:")]
    assert line.startswith("peach.conf/long.yaml:3: ") and "syntax" not in line, line
    assert "5000 characters" in line and "1024" in line, line


def test_task_that_deletes_its_folder_then_raises_reports_its_own_error(tmp_path: Path) -> None:
    cell = ("import os, shutil\n\ndef wipe():\n    shutil.rmtree(os.getcwd())\n"
            "    raise ValueError('my own error, after the folder went away')\n")
    project = Project(tmp_path, cell, "wipe")
    try:
        result = project("run-once")
        assert result.returncode == 0, result.stderr
        [run] = project.runs()
        assert run["status"] == "FAILURE"
        assert run["error"] == "nb.ipynb cell 1 line 5: ValueError: my own error, after the folder went away", run
    finally:
        project.cleanup()


# -- 7. a stop during an environment build ----------------------------------------------

class SilentIndex:
    """A package index that accepts connections and never answers a byte."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.connections: list[socket.socket] = []
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.getsockname()[1]}/simple"

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                self.connections.append(self.server.accept()[0])
            except OSError:  # the timeout: look at closed again
                continue

    def close(self) -> None:
        self.closed.set()
        self.thread.join()
        self.server.close()
        for conn in self.connections:
            conn.close()


def uv_install(serve: subprocess.Popen[bytes]) -> psutil.Process | None:
    """The ``uv pip install`` the scheduler ``serve`` runs, if it runs one."""
    if serve.poll() is not None:
        raise AssertionError(f"the scheduler exited with {serve.returncode}")
    try:
        children = psutil.Process(serve.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return None
    for child in children:
        try:
            if "uv" in child.name() and "install" in child.cmdline():
                return child
        except psutil.Error:
            continue
    return None


def test_stop_during_an_environment_build_ends_it_and_a_kill_leaves_nothing_running(tmp_path: Path) -> None:
    from conftest import gone

    index = SilentIndex()
    project = Project(tmp_path, dependencies=["peach-tasks-test-never-answered"])
    env = dict(CLEAN_ENV, UV_DEFAULT_INDEX=index.url, UV_INDEX_URL=index.url, UV_HTTP_TIMEOUT="3600")
    builds = lambda: list((project.state / "envs").glob("*/*/.build-*"))  # noqa: E731
    try:
        # SIGTERM: serve ends the build at once, its uv with it, and leaves no half-built folder.
        serve = project.start("serve", env=env)
        uv = wait_for(lambda: uv_install(serve), 60, "uv to start building", detail=project.log)
        wait_for(lambda: index.connections, 30, "uv to ask the package index")
        assert builds()
        stopped_at = time.monotonic()
        assert project.stop(serve, timeout=30) == 0, project.log()
        assert time.monotonic() - stopped_at < 15
        assert gone(uv.pid)
        assert builds() == []
        log = project.log()
        assert "SIGTERM received" in log and "Traceback" not in log, log

        # SIGKILL: uv dies with its scheduler; the next one removes the folder it left.
        serve = project.start("serve", env=env)
        uv = wait_for(lambda: uv_install(serve), 60, "uv to start building again", detail=project.log)
        left = wait_for(builds, 10, "the build folder")
        serve.kill()
        serve.wait()
        wait_for(lambda: gone(uv.pid), 10, "uv to die with the scheduler killed with SIGKILL")
        assert all(path.exists() for path in left)
        serve = project.start("serve", env=env)
        wait_for(lambda: not any(path.exists() for path in left), 60, "the next scheduler to remove the leftover",
                 detail=project.log)
        assert project.stop(serve, timeout=30) == 0, project.log()
        assert builds() == []
    finally:
        project.cleanup()
        index.close()


# -- 8, 9. `peach-tasks sync` beside a running `serve` ----------------------------------

WAITS_CELL = (
    "import os, time\n"
    "from pathlib import Path\n"
    "\n"
    "def waits():\n"
    "    out = Path(os.environ['OUT'])\n"
    "    (out / 'started').write_text(os.environ['PEACH_RUN_ID'])\n"
    "    while not (out / 'go').exists():\n"
    "        time.sleep(0.1)\n"
    "    return 'done'\n"
)


def last_sync(project: Project) -> float:
    try:
        return json.loads((project.state / "last-sync.json").read_text())["finished"]
    except (OSError, ValueError, KeyError):
        return 0.0


def test_sync_beside_serve_leaves_the_running_checkout_alone(tmp_path: Path) -> None:
    out = tmp_path / "out"
    project = Project(tmp_path, WAITS_CELL, "waits", task_env={"OUT": str(out)}, **shared_folder(out))
    try:
        serve = project.start("serve")
        run_id = int(wait_for(lambda: (out / "started").exists() and (out / "started").read_text(), 90,
                              "the served task to start", detail=project.log))
        [run] = [r for r in project.runs() if r["id"] == run_id]
        checkout = project.state / "repos" / "algos" / "checkouts" / run["commit"]
        assert checkout.is_dir()

        results = []
        for n in range(4):  # more new commits than the checkouts kept beside the running one
            project.repo.write("README.md", f"change {n}\n")
            project.repo.commit(f"change {n}")
            results.append(project("sync"))
        assert checkout.is_dir(), [r.stderr for r in results]
        for result in results:
            assert result.returncode == 0, result.stdout + result.stderr
            no_traceback(result)
            assert "serving" in result.stderr and "synced by the running scheduler" in result.stderr, result.stderr
        # serve followed the new head (it synced for each request) and kept the running checkout.
        head = (project.state / "repos" / "algos" / "good-head").read_text().split()[0]
        assert head == subprocess.run(["git", "-C", str(project.repo.path), "rev-parse", "HEAD"],
                                      capture_output=True, text=True, check=True).stdout.strip()

        (out / "go").write_text("")
        wait_for(lambda: [r["status"] for r in project.runs() if r["id"] == run_id] == ["SUCCESS"], 60,
                 "the run to finish", detail=lambda: f"{project.runs()}\n{project.log()}")
        assert project.stop(serve) == 0
    finally:
        (out / "go").write_text("")
        project.cleanup()


def test_accept_rewrite_beside_serve_takes_effect_and_survives_a_restart(tmp_path: Path) -> None:
    from conftest import git

    project = Project(tmp_path, loop={"min_iteration_seconds": 2, "sync_interval_seconds": 1})
    good_head = project.state / "repos" / "algos" / "good-head"
    try:
        serve = project.start("serve")
        first = git(project.repo.path, "rev-parse", "HEAD")
        wait_for(lambda: good_head.exists() and good_head.read_text().startswith(first), 60,
                 "serve's first sync", detail=project.log)
        git(project.repo.path, "commit", "--quiet", "--amend", "-m", "rewritten history")
        rewritten = git(project.repo.path, "rev-parse", "HEAD")
        wait_for(lambda: any("force-pushed" in p["message"] for p in project.problems()), 30,
                 "serve to refuse the rewritten history", detail=project.log)

        result = project("sync", "--accept-rewrite", "algos")
        no_traceback(result)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout == "", result.stdout
        assert good_head.read_text().startswith(rewritten)
        # serve keeps following it: later syncs of its own (one a second) raise no problem again.
        time.sleep(4)
        assert project.problems() == [] and good_head.read_text().startswith(rewritten)
        assert "serving" in result.stderr, result.stderr  # and it said it was handed to serve
        assert project.stop(serve) == 0

        stopped = last_sync(project)
        serve = project.start("serve")  # and after a restart
        wait_for(lambda: last_sync(project) > stopped, 60, "the restarted serve's sync", detail=project.log)
        assert project.problems() == [] and good_head.read_text().startswith(rewritten)
        assert project.stop(serve) == 0
    finally:
        project.cleanup()


def test_sync_beside_run_once_is_refused_saying_why(tmp_path: Path) -> None:
    out = tmp_path / "out"
    project = Project(tmp_path, WAITS_CELL, "waits", task_env={"OUT": str(out)}, **shared_folder(out))
    try:
        run_once = project.start("run-once")
        wait_for(lambda: (out / "started").exists(), 90, "the task to start", detail=project.log)
        result = project("sync", "--accept-rewrite", "algos")
        no_traceback(result)
        assert result.returncode == 1
        assert "(run-once) is using this state_dir" in result.stderr and "again" in result.stderr, result.stderr
        assert not (project.state / "repos" / "algos" / "accept-rewrite").exists()
        (out / "go").write_text("")
        assert run_once.wait(timeout=60) == 0
    finally:
        (out / "go").write_text("")
        project.cleanup()
