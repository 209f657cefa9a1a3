"""Shared by the web, metrics, dashboard and widget tests: a store filled by real runs,
a real uvicorn server on a free loopback port, and the browser's availability.

The store holds two organisations run twice by the real scheduler:
  chrts/steady   SUCCESS, SUCCESS
  chrts/flaky    SUCCESS (version 1), then FAILURE (version 2 raises)
  sesr/secret    SUCCESS, SUCCESS   (its log holds a line no chrts token may read)
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import Repo, made_once, py_task, task_yaml, write_settings

from peach_tasks.scheduling.scheduler import Scheduler
from peach_tasks.settings import Settings, load_settings, settings_from_dict
from peach_tasks.store import Store
from peach_tasks.web.server import WebServer

STEADY = "def steady():\n    print('steady says hello')\n    return 1\n"
FLAKY_V1 = "def flaky():\n    print('flaky first try')\n    return 'ok'\n"
FLAKY_V2 = "def flaky():\n    print('flaky second try')\n    raise RuntimeError('flaky broke')\n"
SECRET = "def secret():\n    print('sesr-only secret line')\n    return 2\n"

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@dataclass
class Filled:
    """A store after real runs, and what the tests need to know about it."""

    settings: Settings
    store: Store
    repo: Repo
    flaky_versions: tuple[str, str]


def need_service(reason: str) -> None:
    """Skip when a service is missing; under CI=true a missing service is a failure."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"required under CI=true: {reason}")
    pytest.skip(reason)


def fill_store(root: Path) -> Filled:
    repo = Repo(root / "algos")
    repo.notebook("steady.ipynb", STEADY)
    repo.notebook("flaky.ipynb", FLAKY_V1)
    repo.notebook("secret.ipynb", SECRET)
    # chrts in today's PEACH form: steady runs in a named environment ('reports'), flaky in base.
    repo.write("peach.conf/chrts.yaml", "py_environments:\n  reports: {}\n" + task_yaml(
        "chrts", {"steady": py_task("steady.ipynb", "steady", py_env="reports"),
                  "flaky": py_task("flaky.ipynb", "flaky")}))
    repo.write("peach.conf/sesr.yaml", task_yaml("sesr", {"secret": py_task("secret.ipynb", "secret")}))
    repo.commit("tasks")
    first = repo.short()
    settings = load_settings(write_settings(root, [{"url": str(repo.path)}]))
    store = Store.open(settings.database_url)
    scheduler = Scheduler(settings, store)
    try:
        scheduler.run_once()
        repo.notebook("flaky.ipynb", FLAKY_V2)
        repo.commit("flaky breaks")
        scheduler.run_once()
    finally:
        scheduler.close()
    return Filled(settings, store, repo, (first, repo.short()))


@dataclass
class Measured:
    """A store whose task default/heavy has a run with measured usage and a newer one without."""

    settings: Settings
    store: Store
    measured: int  # SUCCESS, 212 MiB at peak, 1.3 s of CPU
    unmeasured: int  # FAILURE with a long error, no usage (no cgroup)


def measured_store(root: Path) -> Measured:
    """Runs written through the store as a loop writes them: the executors of this machine may
    not measure usage (no cgroup), and these tests need known values."""
    from peach_tasks.model import Executor, Outcome, RunStatus, TaskSpec
    from peach_tasks.store.store import TaskRegistration

    root.mkdir(parents=True, exist_ok=True)
    settings = load_settings(write_settings(root, []))
    store = Store.open(settings.database_url)
    spec = TaskSpec("default", "heavy", "heavy.ipynb", "heavy", executor=Executor.PYTHON, repo="algos")
    store.register_tasks([TaskRegistration(spec, "v")])
    measured = store.start_run(spec, "v", "c", "test")
    store.finish_run(measured, Outcome(RunStatus.SUCCESS, peak_memory_bytes=212 * 2**20, cpu_seconds=1.3))
    unmeasured = store.start_run(spec, "v", "c", "test")
    store.finish_run(unmeasured, Outcome(RunStatus.FAILURE, error="ValueError: " + "the input table is empty " * 8))
    return Measured(settings, store, measured, unmeasured)


# The fixtures below reach every test module through conftest.py's pytest_plugins; the
# server is made once and shared through this cache (the store: made_once).
_SHARED: dict[str, Any] = {}


@pytest.fixture(scope="session")
def filled(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Filled:
    return made_once(request, tmp_path_factory, "web-store", fill_store)


def start_server(settings: Settings, store: Store, **extra: Any) -> WebServer:
    """A real uvicorn server on a free loopback port; ``extra`` adds settings (tokens...)."""
    if extra:
        data = settings.model_dump(exclude={"base_dir"})
        data.update(extra)
        settings = settings_from_dict(data, settings.base_dir)
    return WebServer(settings, store, host="127.0.0.1", port=0).start()


@pytest.fixture(scope="session")
def server(request: pytest.FixtureRequest, filled: Filled) -> WebServer:
    """The open server (no tokens) on the filled store."""
    if "server" not in _SHARED:
        web = start_server(filled.settings, filled.store)
        _SHARED["server"] = web
        request.config.add_cleanup(web.stop)  # cleanups run last-in first-out: before the store closes
    return _SHARED["server"]


def chromium_executable() -> str:
    """Debian's chromium, which Playwright drives through ``executable_path``."""
    path = os.environ.get("PEACH_TASKS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        need_service(f"Debian's chromium is not installed at {path} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        need_service("the playwright package is not installed (pip install -e '.[test]')")
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium, launched once per test module through Playwright."""
    executable = chromium_executable()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=20_000)  # waits for what the page shows, on a machine that may be busy
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()
