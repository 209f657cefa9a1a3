"""Shared test helpers: real git repositories, notebooks and settings in tmp_path."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pytest
import yaml

from peach_tasks.demo import notebook_json

# The web tests' shared fixtures (filled, server, browser), found by every module that names them.
pytest_plugins = ["web_helpers"]

# Spark binds to loopback in every test (driver and the standalone cluster alike).
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


# Task code that starts a child, a grandchild, a child in its own session and a daemon
# (its own session, its parent gone: reparented to init, so only the run's marker finds
# it), writes their pids to PIDS_FILE as JSON, prints "ready" and sleeps. It defines
# start_tree(): a script calls it, a notebook cell calls it from its entry function.
PROCESS_TREE = """
import json, subprocess, sys, time
sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
def start_tree():
    child = subprocess.Popen(sleeper)
    middle = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys, time\\n"
         "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\\n"
         "print(p.pid, flush=True)\\n"
         "time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    grandchild = int(middle.stdout.readline())
    session = subprocess.Popen(sleeper, start_new_session=True)
    daemon = int(subprocess.run(
        [sys.executable, "-c",
         "import os, subprocess, sys\\n"
         "p = subprocess.Popen([sys.executable, '-c', 'import os, time; os.setsid(); time.sleep(60)'],"
         " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\\n"
         "print(p.pid)"],
        capture_output=True, text=True, check=True).stdout)
    with open(PIDS_FILE, "w") as f:
        json.dump([child.pid, middle.pid, grandchild, session.pid, daemon], f)
    print("ready", flush=True)
    time.sleep(60)
"""


def process_tree_code(pids_file: Path) -> str:
    """``PROCESS_TREE`` writing its pids to ``pids_file``."""
    return f"PIDS_FILE = {str(pids_file)!r}\n" + PROCESS_TREE


def gone(pid: int) -> bool:
    """Not running: absent, or a zombie waiting to be reaped."""
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def shared_folder(folder: Path) -> dict[str, Any]:
    """Settings that show ``folder`` to every run, writable (``python.mounts``): how a test
    hears from a sandboxed task. The task runs as an unprivileged user, so the folder is
    opened to all."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o777)
    return {"python": {"mounts": {str(folder): "rw"}}}


def run_marker(state_dir: Path, run_id: int | str) -> str:
    """The marker every process of run ``run_id`` of the scheduler on ``state_dir`` carries
    (``PEACH_TASKS_RUN``): unique on the host, even with other test runs beside this one."""
    import hashlib

    return hashlib.sha256(str(Path(state_dir).resolve()).encode()).hexdigest()[:12] + f":{run_id}"


def host_pid(ns_pid: int, marker: str) -> int | None:
    """The host's pid of the process carrying ``marker`` (``run_marker``) that saw itself
    as ``ns_pid``.

    A sandboxed task lives in its own PID namespace, so the pid it reports is not the
    host's; the run's marker variable and the innermost pid of ``NSpid`` (in
    /proc/PID/status) find it. Without a sandbox both pids are the same.
    """
    import psutil

    # A task that ran in a sandbox its loop started ahead keeps, in /proc/PID/environ, the
    # marker it was started with; its cgroup carries the run's name (``<hash>-<run id>``).
    group = "/" + marker.replace(":", "-")
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("PEACH_TASKS_RUN") != marker and not any(
                    line.endswith(group) for line in Path(f"/proc/{proc.pid}/cgroup").read_text().splitlines()):
                continue
            status = Path(f"/proc/{proc.pid}/status").read_text()
        except (psutil.Error, OSError):
            continue
        nspids = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
        if nspids and int(nspids[-1]) == ns_pid:
            return proc.pid
    return None


@pytest.fixture
def open_scheduler() -> Any:
    """``open_scheduler(config) -> (Scheduler, Store)`` from a settings file; every one
    opened is closed (state_dir lock released, store disposed) after the test."""
    from peach_tasks.scheduling.scheduler import Scheduler
    from peach_tasks.settings import load_settings
    from peach_tasks.store import Store

    opened: list[tuple[Scheduler, Store]] = []

    def open_(config: Path) -> tuple[Scheduler, Store]:
        settings = load_settings(config)
        store = Store.open(settings.database_url)
        scheduler = Scheduler(settings, store)
        opened.append((scheduler, store))
        return scheduler, store

    yield open_
    for scheduler, store in opened:
        scheduler.close()
        store.close()


def wait_for(predicate: Any, timeout: float, what: str, detail: Any = lambda: "", interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something true; fail naming ``what`` after ``timeout``."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{detail()}")
        time.sleep(interval)


def stop_processes(procs: Collection[subprocess.Popen], timeout: float) -> None:
    """SIGTERM every process still running, then wait for each; one that outlives ``timeout`` is killed."""
    import signal

    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def require_service(reason: str | None) -> None:
    """Skip a test whose service is missing, except under CI=true, where it is a failure."""
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"required under CI=true: {reason}")
    pytest.skip(reason)


def sandbox_missing() -> str | None:
    """Why the default sandbox (bubblewrap + cgroups) cannot run here, or None when it can."""
    from peach_tasks.executors.sandbox import SandboxUnavailable, make_sandbox

    try:
        make_sandbox()
    except SandboxUnavailable as exc:
        return str(exc)
    return None


# Test modules import the session fixtures that call made_once(), which makes pytest hold one
# fixture per module; this cache makes each store once per session all the same.
_MADE_ONCE: dict[str, Any] = {}


def made_once(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, name: str,
              make: Any) -> Any:
    """``make(folder)``'s result (which has a ``store``) made once per session, its store closed at the end."""
    if name not in _MADE_ONCE:
        if os.environ.get("PEACH_TASKS_DATABASE_URL"):
            pytest.fail("unset PEACH_TASKS_DATABASE_URL: these tests make their own store")
        made = make(tmp_path_factory.mktemp(name))
        _MADE_ONCE[name] = made
        request.config.add_cleanup(made.store.close)
    return _MADE_ONCE[name]


POSTGRES_ENV = "PEACH_TASKS_TEST_POSTGRES"  # e.g. postgresql+psycopg://user@host:5432/test
POSTGRES_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def postgres_admin_url() -> str:
    return os.environ.get(POSTGRES_ENV, POSTGRES_DEFAULT)


def postgres_missing() -> str | None:
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(postgres_admin_url())
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
    except Exception as exc:  # any failure to connect means: no server here
        return f"PostgreSQL is not reachable at {postgres_admin_url()} ({type(exc).__name__}); set {POSTGRES_ENV}"
    return None


@pytest.fixture
def postgres_url():
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import uuid

    import sqlalchemy as sa

    require_service(postgres_missing())
    name = f"peach_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_admin_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(postgres_admin_url()).set(database=name)
    yield url.render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sa.text(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store contract runs on both databases."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'peach.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory: pytest.TempPathFactory):
    from spark_cluster import missing_reason, start_cluster

    require_service(missing_reason())
    cluster = start_cluster(tmp_path_factory.mktemp("spark-cluster"))
    yield cluster
    cluster.stop()


def git(repo: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t.invalid",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t.invalid")
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True, env=env).stdout.strip()


class Repo:
    """A real git working copy on branch master; the scheduler fetches from it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        git(path, "init", "--quiet", "--initial-branch=master")

    def write(self, rel: str, text: str) -> Path:
        target = self.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        return target

    def notebook(self, rel: str, *cells: str | tuple[str, str]) -> Path:
        pairs = [c if isinstance(c, tuple) else ("code", c) for c in cells]
        return self.write(rel, notebook_json(pairs))

    def commit(self, message: str = "change") -> str:
        git(self.path, "add", "-A")
        git(self.path, "commit", "--quiet", "--allow-empty", "-m", message)
        return git(self.path, "rev-parse", "HEAD")

    def short(self, rev: str = "HEAD") -> str:
        return git(self.path, "rev-parse", "--short", rev)


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path / "algos")


def write_settings(tmp_path: Path, repos: list[dict[str, Any]], **extra: Any) -> Path:
    # check_local_database: this machine's PostgreSQL trusts loopback (as CI's), which every sync
    # would report; tests/test_store_exposure.py covers that check.
    data: dict[str, Any] = {"state_dir": "state", "repositories": repos,
                            "timeouts": {"task": 60, "metadata": 30, "kill_grace": 1},
                            "loop": {"min_iteration_seconds": 0, "sync_interval_seconds": 1},
                            "check_local_database": False}
    data.update(extra)
    path = tmp_path / "scheduler.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def task_yaml(codops: str, tasks: dict[str, dict[str, Any]], dependencies: list[str] | None = None) -> str:
    doc: dict[str, Any] = {"codops": codops}
    if dependencies is not None:
        doc["dependencies"] = dependencies
    doc["tasks"] = tasks
    return yaml.safe_dump(doc, sort_keys=False)


def py_task(notebook: str, method: str, **extra: Any) -> dict[str, Any]:
    return {"executor": "python", "notebook": notebook, "method": method, **extra}
