"""The scheduler: syncs repositories into snapshots and drives one thread per loop.

``sync()`` is the only writer of the snapshot (repos -> definitions -> registry ->
environments); loops only read it. A sync runs on its own thread in ``serve`` so that
fetching or building an environment never waits for, nor delays, a running task.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import socket
import threading
import time
from typing import Callable, Iterable

from .definitions import RepoDefinitions, load_definitions
from .environments import EnvironmentManager
from .errors import PeachError, Problem
from .executors.base import TaskExecutor
from .executors.process import kill_marked
from .executors.python import PythonExecutor
from .executors.spark import SparkExecutor
from .executors.spark_cluster import end_orphans
from .loops import Loop, RunEvent
from .model import METADATA_LOOP, Executor
from .registry import Snapshot, build_snapshot
from .repos import Checkout, Repository
from .settings import Settings
from .store import Store
from .store.store import TaskRegistration

log = logging.getLogger(__name__)

ABANDON_REASON = "the scheduler stopped while the task ran; it was ended and will run again in the next iteration"


class Scheduler:
    def __init__(self, settings: Settings, store: Store, *, progress: Callable[[str], None] | None = None,
                 on_run: Callable[[RunEvent], None] | None = None,
                 executors: dict[Executor, TaskExecutor] | None = None) -> None:
        self.settings, self.store, self.on_run = settings, store, on_run
        self.state_dir = settings.state_path
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        # Every task process carries this prefix in its environment, so processes left
        # by a crashed scheduler of the same state_dir can be found and killed at start.
        self.marker_prefix = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:12] + ":"
        self.repos = [Repository(settings.repository_name(r), settings.repository_url(r), r.branch, self.state_dir)
                      for r in settings.repositories]
        self.allowed = {settings.repository_name(r): r.codops for r in settings.repositories}
        self.envs = EnvironmentManager(self.state_dir, progress=progress)
        self.executors = executors if executors is not None else {
            Executor.PYTHON: PythonExecutor(),
            Executor.SPARK: SparkExecutor(settings.spark, settings.organisations, self.envs),
        }
        self.stop_event = threading.Event()
        self._snapshot = Snapshot()
        self._definitions: dict[str, tuple[str, RepoDefinitions]] = {}
        self._loops: dict[str, Loop] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._sync_lock = threading.Lock()

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- start-up ---------------------------------------------------------------
    def lock_state_dir(self) -> None:
        """Only one scheduler may use a state_dir: recovery would end the other's runs."""
        path = self.state_dir / "scheduler.lock"
        self._lock_file = open(path, "a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.seek(0)
            holder = self._lock_file.read().strip() or "another process"
            self._lock_file.close()
            raise PeachError(f"{path}: another scheduler ({holder}) is using this state_dir; "
                             "stop it first, or give this one its own state_dir") from None
        self._lock_file.truncate(0)
        self._lock_file.write(self.owner)
        self._lock_file.flush()

    def recover(self) -> None:
        """End what a crashed scheduler left: RUNNING runs and their processes."""
        self.lock_state_dir()
        killed = kill_marked(self.marker_prefix, self.settings.timeouts.kill_grace)
        if killed:
            log.warning("killed %d task processes left by a previous scheduler", killed)
        abandoned = self.store.abandon_running(ABANDON_REASON)
        if abandoned:
            log.warning("marked %d runs left RUNNING as ABANDONED: %s", len(abandoned), abandoned)
            if Executor.SPARK in self.executors and not self.settings.spark.master.startswith("local"):
                end_orphans(self.settings.spark.master, self.settings.spark.master_web_url, abandoned)

    # -- sync -------------------------------------------------------------------
    def sync(self) -> Snapshot:
        """Fetch every repository, reload definitions, rebuild environments, publish."""
        with self._sync_lock:
            in_use = set().union(*(loop.in_use for loop in self._loops.values())) if self._loops else set()
            found: list[tuple[str, Checkout | None, RepoDefinitions | None]] = []
            for repo in self.repos:
                try:
                    found.append(self._sync_repo(repo, in_use))
                except Exception as exc:  # one bad repository never stops the others
                    log.exception("sync of %s failed", repo.name)
                    self.store.set_problems("sync", repo.name, [Problem("sync", repo.name, f"sync failed: {exc!r}")])
                    found.append((repo.name, None, None))
            snapshot = build_snapshot(found)
            for repo_name, problems in snapshot.problems.items():
                self.store.set_problems("config", repo_name, problems)
            for codops, requirements in sorted(snapshot.requirements.items()):
                _, problem = self.envs.ensure(codops, requirements)
                self.store.set_problems("environment", codops, [problem] if problem else [], codops=codops)
            self.store.register_tasks([TaskRegistration(t.spec, t.version) for t in snapshot.tasks.values()])
            self._snapshot = snapshot
            return snapshot

    def _sync_repo(self, repo: Repository, in_use: set) -> tuple[str, Checkout | None, RepoDefinitions | None]:
        result = repo.sync(in_use)
        self.store.set_problems("sync", repo.name, result.problems)
        checkout = result.checkout
        if checkout is None:
            return repo.name, None, None
        cached = self._definitions.get(repo.name)
        if cached and cached[0] == checkout.commit:
            return repo.name, checkout, cached[1]
        allowed = self.allowed.get(repo.name)
        defs = load_definitions(checkout.path, repo.name, allowed,
                                (self.settings.timeouts.task, self.settings.timeouts.metadata))
        self._definitions[repo.name] = (checkout.commit, defs)
        return repo.name, checkout, defs

    # -- loops ------------------------------------------------------------------
    def make_loop(self, name: str, keep: Callable[[tuple[str, str]], bool] = lambda key: True) -> Loop:
        return Loop(name, settings=self.settings, store=self.store, envs=self.envs, executors=self.executors,
                    snapshot=lambda: self._snapshot, stop=self.stop_event, owner=self.owner,
                    marker_prefix=self.marker_prefix, keep=keep, on_run=self.on_run)

    def run_once(self, orgs: Iterable[str] = (), loops: Iterable[str] = ()) -> dict[str, int]:
        """Sync, then one iteration of each selected loop, concurrently. Returns runs per loop."""
        self.recover()
        snapshot = self.sync()
        orgs, wanted = set(orgs), set(loops)
        names = [n for n in snapshot.loop_names() if (not wanted or n in wanted)
                 and (not orgs or n == METADATA_LOOP or n in orgs)]
        keep = (lambda key: key[0] in orgs) if orgs else (lambda key: True)
        counts: dict[str, int] = {}

        def one(name: str) -> None:
            counts[name] = self.make_loop(name, keep).tick()

        threads = [threading.Thread(target=one, args=(n,), name=f"loop-{n}") for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return counts

    def serve(self, duration: float | None = None) -> None:
        """Run every loop until ``stop()`` (or ``duration`` seconds, for the demo and tests)."""
        self.recover()
        self.sync()
        self._start_loops()
        sync_thread = threading.Thread(target=self._sync_forever, name="sync", daemon=True)
        sync_thread.start()
        self.stop_event.wait(duration)
        self.stop()
        sync_thread.join(timeout=30)

    def _sync_forever(self) -> None:
        interval = max(self.settings.loop.sync_interval_seconds, 1.0)
        while not self.stop_event.wait(interval):
            try:
                self.sync()
                self._start_loops()
            except Exception:  # e.g. the database briefly gone: report and retry next time
                log.exception("sync failed; retrying in %.0fs", interval)

    def _start_loops(self) -> None:
        for name in self._snapshot.loop_names():
            if name not in self._threads and not self.stop_event.is_set():
                loop = self._loops[name] = self.make_loop(name)
                thread = threading.Thread(target=loop.run_forever, name=f"loop-{name}", daemon=True)
                self._threads[name] = thread
                thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop every loop; running tasks are killed and recorded as ABANDONED."""
        self.stop_event.set()
        deadline = time.monotonic() + (timeout or self.settings.timeouts.kill_grace + 30)
        for thread in list(self._threads.values()):
            thread.join(timeout=max(deadline - time.monotonic(), 0.1))
        # Anything still marked RUNNING by us (a loop that did not finish in time) is ended.
        self.store.abandon_running(ABANDON_REASON, owner=self.owner)

    def close(self) -> None:
        """Release the state_dir for the next scheduler."""
        lock = getattr(self, "_lock_file", None)
        if lock is not None and not lock.closed:
            lock.close()
