"""The scheduler: syncs repositories into snapshots and drives one thread per loop.

``sync()`` is the only writer of the snapshot (repos -> definitions -> registry ->
environments); loops only read it. A sync runs on its own thread in ``serve`` so that
fetching or building an environment never waits for, nor delays, a running task.
"""

from __future__ import annotations

import dataclasses
import fcntl
import gc
import hashlib
import json
import logging
import os
import socket
import threading
import time
from typing import Callable, Iterable

from ..errors import PeachError, Problem
from ..executors.base import CancelEvent, TaskExecutor
from ..executors.environments import EnvironmentManager
from ..executors.org_redis import PROBLEM_KIND as REDIS_PROBLEMS
from ..executors.org_redis import OrganisationRedis
from ..executors.process import kill_marked
from ..executors.python import PythonExecutor
from ..executors.run_outputs import output_bounds
from ..executors.sandbox import Sandbox, SandboxUnavailable, make_sandbox
from ..executors.spark import SparkExecutor
from ..executors.spark_check import spark_missing, spark_problems, spark_tasks
from ..executors.spark_cluster import end_orphans
from ..model import METADATA_LOOP, Executor
from ..observability.metrics import record_sync_failure
from ..settings import Settings
from ..sources.definitions import RepoDefinitions, load_definitions
from ..sources.discovery import Discovery
from ..sources.notebook_problems import notebook_problems
from ..sources.py_environments import env_label
from ..sources.repos import Checkout, Repository
from ..store import Store
from ..store.exposure import PROBLEM_KIND as STORE_PROBLEMS
from ..store.exposure import PROBLEM_SCOPE as STORE_SCOPE
from ..store.exposure import exposure_problems
from ..store.leases import LeaseStore
from ..store.store import TaskRegistration
from .alert_dispatcher import AlertDispatcher
from .alert_policy import alert_rules_allowed
from .loop_warm import remove_warm_leftovers
from .loops import Loop, RunEvent
from .problem_log import ProblemLog
from .registry import Snapshot, build_snapshot
from .replica import TAKEOVER_REASON, LeasedLoops
from .retention import Pruner
from .triggers import TriggerQueue

log = logging.getLogger(__name__)

ABANDON_REASON = "the scheduler stopped while the task ran; it was ended and will run again in the next iteration"
# `peach-tasks sync` beside a running `serve` never touches what serve uses: it leaves this
# file in state_dir, serve's sync thread (which looks for it every REQUEST_POLL seconds)
# syncs at once and records each finished sync in LAST_SYNC.
SYNC_REQUEST = "sync-request"
LAST_SYNC = "last-sync.json"
REQUEST_POLL = 1.0
SERVE_ROLE = "serve"


class Scheduler:
    def __init__(self, settings: Settings, store: Store, *, progress: Callable[[str], None] | None = None,
                 on_run: Callable[[RunEvent], None] | None = None,
                 executors: dict[Executor, TaskExecutor] | None = None) -> None:
        self.settings, self.store, self.on_run = settings, store, on_run
        # State changes are journalled for alerts only when some rule may want them.
        store.alerting = settings.alerts.enabled
        self.state_dir = settings.state_path
        # Made for the scheduler's user only: it holds the store (SQLite), every organisation's
        # checkouts and logs, and the Redis secret; another user of the host (a database
        # server's, which a task may reach: store/exposure.py) must not read it.
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        state_hash = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:12]
        # The replica's identity: the same after a restart on the same state_dir, so a
        # restarted scheduler recognises (and ends) the runs its previous process left.
        self.owner = settings.replica.name or f"{socket.gethostname()}:{state_hash[:8]}"
        # Every task process carries this prefix in its environment, so processes left
        # by a crashed scheduler of the same state_dir can be found and killed at start.
        self.marker_prefix = state_hash + ":"
        self.repos = [Repository(settings.repository_name(r), settings.repository_url(r), r.branch, self.state_dir)
                      for r in settings.repositories]
        self.allowed = {settings.repository_name(r): r.codops for r in settings.repositories}
        # Repositories found on GitLab by topic join these at each sync (discovery.py).
        self._configured = list(self.repos)
        self.discovery = Discovery(settings.gitlab, self.state_dir)
        if self.discovery.sources:
            self.repos, _ = self.discovery.merge(self._configured, refresh=False)
            self.allowed.update(self.discovery.allowed)
        self.stop_event = CancelEvent()  # loops' tasks and environment builds wake on it at once
        # A build carries this state_dir's marker (as tasks do), so recover() finds what a
        # killed scheduler's build left running.
        self.envs = EnvironmentManager(self.state_dir, progress=progress, cancel=self.stop_event,
                                       marker=self.marker_prefix + "build")
        self.executors = executors if executors is not None else {
            Executor.PYTHON: PythonExecutor(outputs=output_bounds(settings)),
            Executor.SPARK: SparkExecutor(settings.spark, settings.organisations, self.envs,
                                          outputs=output_bounds(settings)),
        }
        # Each organisation's user on the platform's Redis (redis: in the settings), else None.
        self.redis = OrganisationRedis(settings.redis, self.state_dir) if settings.redis is not None else None
        # Set by start_isolation() (serve, run-once): None runs tasks as plain processes.
        self.sandbox: Sandbox | None = None
        self._unsandboxed: str | None = None  # why runs cannot be sandboxed here, if they cannot
        self._warned_unsandboxed = False
        self._snapshot = Snapshot()
        self._definitions: dict[str, tuple[str, RepoDefinitions]] = {}
        self._leased: LeasedLoops | None = None
        self._alerts: AlertDispatcher | None = None
        self._pruner: Pruner | None = None
        self._sync_lock = threading.Lock()
        self._problem_log = ProblemLog()  # serve logs problems as they come and go

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- start-up ---------------------------------------------------------------
    def lock_state_dir(self, role: str = SERVE_ROLE) -> None:
        """Only one scheduler may use a state_dir: recovery would end the other's runs."""
        holder = self.try_lock_state_dir(role)
        if holder is not None:
            raise PeachError(f"{self.state_dir / 'scheduler.lock'}: another scheduler ({holder}) is using this "
                             "state_dir; stop it first, or give this one its own state_dir")

    def try_lock_state_dir(self, role: str) -> str | None:
        """Take the state_dir's lock for ``role`` (serve, run-once, sync) and return None,
        or return who holds it (``<owner> pid <pid> (<role>)``) and leave it to them."""
        path = self.state_dir / "scheduler.lock"
        lock = getattr(self, "_lock_file", None)
        if lock is None or lock.closed:  # else this scheduler holds it already (run_once again)
            lock = open(path, "a+")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.seek(0)
                holder = lock.read().strip() or "another process"
                lock.close()
                return holder
            self._lock_file = lock
        lock.truncate(0)
        lock.write(f"{self.owner} pid {os.getpid()} ({role})")
        lock.flush()
        return None

    def request_sync(self, timeout: float) -> bool:
        """Ask the ``serve`` holding this state_dir to sync now; True once it has finished a
        sync that started after the request, False if none has within ``timeout`` seconds."""
        asked = time.time()
        request = self.state_dir / SYNC_REQUEST
        tmp = request.with_name(f".{SYNC_REQUEST}-{os.getpid()}")
        tmp.write_text(f"pid {os.getpid()} at {asked}\n")
        os.replace(tmp, request)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if json.loads((self.state_dir / LAST_SYNC).read_text())["started"] >= asked:
                    return True
            except (OSError, ValueError, KeyError, TypeError):
                pass  # none yet, or being replaced
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)

    def _take_sync_request(self) -> bool:
        try:
            (self.state_dir / SYNC_REQUEST).unlink()
            return True
        except FileNotFoundError:
            return False

    def _record_sync(self, started: float) -> None:
        path = self.state_dir / LAST_SYNC
        tmp = path.with_name(f".{LAST_SYNC}-{os.getpid()}")
        try:
            tmp.write_text(json.dumps({"started": started, "finished": time.time(), "pid": os.getpid()}))
            os.replace(tmp, path)
        except OSError as exc:  # only `peach-tasks sync` beside serve reads it
            log.warning("cannot record the sync in %s: %s", path, exc)

    def start_isolation(self) -> None:
        """Find this host's sandbox (``isolation: sandbox``, the default). Where there is none,
        runs go unsandboxed only while one organisation has tasks (``check_isolation``)."""
        if self.settings.isolation == "none" or self.sandbox is not None:
            return
        try:
            self.sandbox = make_sandbox()
        except SandboxUnavailable as exc:
            self._unsandboxed = str(exc)

    def check_isolation(self, snapshot: Snapshot) -> None:
        """Refuse to run tasks of several organisations without a sandbox unless the settings
        say ``isolation: none``; with one organisation, warn once."""
        if self._unsandboxed is None:
            return
        orgs = sorted({codops for codops, _ in snapshot.tasks})
        if len(orgs) > 1:
            raise PeachError(f"runs cannot be sandboxed on this host: {self._unsandboxed}. Refusing to run tasks "
                             f"of {len(orgs)} organisations ({', '.join(orgs)}) unsandboxed, where one could "
                             "read, change or stop another's; set 'isolation: none' in scheduler.yaml to "
                             "accept that")
        if orgs and not self._warned_unsandboxed:
            self._warned_unsandboxed = True
            log.warning("runs are NOT sandboxed (only organisation %s has tasks): %s", orgs[0], self._unsandboxed)

    def recover(self, role: str = SERVE_ROLE) -> None:
        """End what a crashed scheduler left: RUNNING runs and their processes."""
        self.lock_state_dir(role)
        self.start_isolation()
        if self.sandbox is not None:  # its sandboxes' cgroups, whatever their processes did to hide
            for group in self.sandbox.cgroups.existing(self.marker_prefix.rstrip(":") + "-"):
                if group.kill():
                    log.warning("killed the processes left in cgroup %s by a previous scheduler", group.name)
                group.remove()
        killed = kill_marked(self.marker_prefix, self.settings.timeouts.kill_grace)
        if killed:
            log.warning("killed %d task and build processes left by a previous scheduler", killed)
        remove_warm_leftovers(self.settings.state_path)
        self.envs.remove_leftovers()  # half-built environments of a scheduler that was killed
        # Only this replica's own runs: others' runs are ended by whoever takes their loop.
        abandoned = self.end_left_runs(ABANDON_REASON, owner=self.owner)
        TriggerQueue(self.store).release_orphans()  # a triggered run cut short runs again
        if abandoned:
            log.warning("marked %d runs left RUNNING as ABANDONED: %s", len(abandoned), abandoned)

    def end_left_runs(self, reason: str, owner: str | None = None, loop: str | None = None) -> list[int]:
        """Mark the RUNNING runs of ``owner`` and/or ``loop`` ABANDONED and kill their Spark
        applications on a real cluster (their processes are gone or killed already).
        Used at start, by run-once and by a replica taking a loop over; returns the run ids."""
        abandoned = self.store.abandon_running(reason, owner=owner, loop=loop)
        spark = self.settings.spark
        if abandoned and Executor.SPARK in self.executors and not spark.master.startswith("local"):
            end_orphans(spark.master, spark.master_web_url, abandoned)
        return abandoned

    # -- sync -------------------------------------------------------------------
    def sync(self) -> Snapshot:
        """Fetch every repository, reload definitions, rebuild environments, publish."""
        with self._sync_lock:
            started = time.time()
            in_use = self._leased.in_use() if self._leased is not None else set()
            if self.discovery.sources:
                self.repos, dropped = self.discovery.merge(self._configured, self.store)
                self.allowed = {**{k: v for k, v in self.allowed.items() if k not in dropped},
                                **self.discovery.allowed}
                for name in dropped:
                    self._definitions.pop(name, None)
            found: list[tuple[str, Checkout | None, RepoDefinitions | None]] = []
            for repo in self.repos:
                try:
                    found.append(self._sync_repo(repo, in_use))
                except Exception as exc:  # one bad repository never stops the others
                    log.exception("sync of %s failed", repo.name)
                    record_sync_failure(repo.name)
                    self.store.set_problems("sync", repo.name, [Problem("sync", repo.name, f"sync failed: {exc!r}")])
                    found.append((repo.name, None, None))
            snapshot = alert_rules_allowed(build_snapshot(found), self.settings.alerts.organisations)
            self.check_isolation(snapshot)  # before anything of it is published or run
            spark = self._spark_problems(snapshot)
            # One transaction for all repositories, one for all organisations' environments.
            self.store.set_problems_many([("config", name, [*found_here, *spark.get(name, [])], None)
                                          for name, found_here in snapshot.problems.items()])
            env_problems = []
            # Builds run in the runs' sandbox (none with isolation: none or where there is none).
            self.envs.sandbox = self.sandbox
            for (codops, env), requirements in sorted(snapshot.environments.items()):
                _, problem = self.envs.ensure(codops, requirements, env)
                if self.stop_event.is_set():  # stopping: builds were ended, nothing half-done is published
                    return self._snapshot
                env_problems.append(("environment", env_label(codops, env), [problem] if problem else [], codops))
            self.store.set_problems_many(env_problems)
            # Every organisation's Redis user, rotated with its period; without redis: no problem
            # of a Redis configured before stays.
            self.store.set_problems(REDIS_PROBLEMS, "redis", self.redis.sync({codops for codops, _ in snapshot.tasks})
                                    if self.redis is not None else [])
            # A store tasks could log into over loopback, without a password (store/exposure.py).
            network_on = any(self.settings.limits_for(codops).network for codops, _ in snapshot.tasks)
            self.store.set_problems(STORE_PROBLEMS, STORE_SCOPE, exposure_problems(
                self.settings.database_url, network_on, self.state_dir, self.settings.check_local_database))
            # Problems of repositories no longer configured nor discovered, of GitLab sources
            # removed from the settings and of organisations without tasks go with them.
            names = {repo.name for repo in self.repos}
            self.store.keep_problems_of({"sync": names | {source.scope for source in self.discovery.sources},
                                         "config": names,
                                         "environment": {env_label(*key) for key in snapshot.environments}})
            self.store.register_tasks([TaskRegistration(t.spec, t.version, self.settings.freshness_for(t.spec))
                                       for t in snapshot.tasks.values()])
            queue = TriggerQueue(self.store)
            queue.drop_missing(set(snapshot.tasks))
            queue.release_orphans()  # e.g. runs another replica ended when it took their loop over
            self._snapshot = snapshot
            self._record_sync(started)
            return snapshot

    def _spark_problems(self, snapshot: Snapshot) -> dict[str, list[Problem]]:
        """A problem at each Spark task's definition when this scheduler has no Spark."""
        if not isinstance(self.executors.get(Executor.SPARK), SparkExecutor):
            return {}  # tests give executors of their own
        specs = [task.spec for task in snapshot.tasks.values()]
        reason = spark_missing(self.settings.spark.submit) if spark_tasks(specs) else None
        return spark_problems(specs, reason) if reason else {}

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
        # A task whose notebook cannot run is a problem here as in 'validate' (same code);
        # it stays registered, so its failed runs show too. Once per commit: cached below.
        found = [dataclasses.replace(p, kind="config", scope=repo.name)  # stored and cleared with the rest
                 for p in notebook_problems(checkout.path, defs.tasks)]
        if found:
            defs = dataclasses.replace(defs, problems=(*defs.problems, *found))
        self._definitions[repo.name] = (checkout.commit, defs)
        return repo.name, checkout, defs

    # -- loops ------------------------------------------------------------------
    def make_loop(self, name: str, keep: Callable[[tuple[str, str]], bool] = lambda key: True,
                  stop: threading.Event | None = None) -> Loop:
        return Loop(name, settings=self.settings, store=self.store, envs=self.envs, executors=self.executors,
                    snapshot=lambda: self._snapshot, stop=stop or self.stop_event, owner=self.owner,
                    marker_prefix=self.marker_prefix, keep=keep, on_run=self.on_run, sandbox=self.sandbox,
                    redis=self.redis)

    def run_once(self, orgs: Iterable[str] = (), loops: Iterable[str] = ()) -> dict[str, int]:
        """Sync, then one iteration of each selected loop, concurrently. Returns runs per loop."""
        self.recover("run-once")
        snapshot = self.sync()
        orgs, wanted = set(orgs), set(loops)
        names = [n for n in snapshot.loop_names() if (not wanted or n in wanted)
                 and (not orgs or n == METADATA_LOOP or n in orgs)]
        keep = (lambda key: key[0] in orgs) if orgs else (lambda key: True)
        counts: dict[str, int] = {}
        leases = LeaseStore(self.store.engine)
        lease_seconds = self.settings.replica.lease_seconds
        held: set[str] = set()
        done = threading.Event()

        def renew() -> None:  # keep the leases while the iteration runs
            while not done.wait(lease_seconds / 4):
                try:
                    leases.renew(self.owner, set(held), leases.now(), lease_seconds)
                except Exception as exc:  # the next try may work; the tasks go on meanwhile
                    log.warning("lease renewal failed: %s", exc)

        def one(name: str) -> None:
            # Like a replica: the loop's lease first, so run-once never runs a loop that a
            # serving replica runs at the same time.
            lease = leases.try_acquire(name, self.owner, leases.now(), lease_seconds)
            if lease is None:
                log.warning("loop %s is run by another replica right now; skipped", name)
                counts[name] = 0
                return
            held.add(name)
            try:
                abandoned = self.end_left_runs(TAKEOVER_REASON.format(replica=self.owner), loop=name)
                if abandoned:
                    log.warning("loop %s: marked runs %s ABANDONED", name, abandoned)
                counts[name] = self.make_loop(name, keep).tick()
            finally:
                held.discard(name)
                leases.release(self.owner, [name])

        renewer = threading.Thread(target=renew, name="leases", daemon=True)
        renewer.start()
        threads = [threading.Thread(target=one, args=(n,), name=f"loop-{n}") for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        done.set()
        if self.settings.alerts.enabled:  # what this iteration changed is announced now (retries: by serve)
            dispatcher = AlertDispatcher(self.settings, self.store, lambda: self._snapshot, self.owner)
            try:
                dispatcher.round()
            except Exception:
                log.exception("alerts: sending failed; 'serve' sends them later")
            finally:
                dispatcher.stop()
        return counts

    def serve(self, duration: float | None = None, on_ready: Callable[[], None] | None = None) -> None:
        """Run every loop until ``stop()`` (or ``duration`` seconds, for the demo and tests).

        ``on_ready`` runs once this scheduler holds the state_dir (``serve`` starts the web server there).
        """
        self.recover()
        settle_heap()
        if on_ready is not None:
            on_ready()
        self.sync()  # a stop during it ends its environment builds at once
        self._report_problems()
        sync_thread = None
        if not self.stop_event.is_set():
            self._leased = LeasedLoops(self)
            self._leased.start()
            if self.settings.alerts.enabled:  # a side job of its own: never in a loop's way
                self._alerts = AlertDispatcher(self.settings, self.store, lambda: self._snapshot, self.owner)
                self._alerts.start()
            if self.settings.retention is not None:  # another side job: old runs and logs go in small batches
                self._pruner = Pruner(self.settings.retention, self.store, self.owner)
                self._pruner.start()
            sync_thread = threading.Thread(target=self._sync_forever, name="sync", daemon=True)
            sync_thread.start()
            _wait_in_main_thread(self.stop_event, duration)
        self.stop()
        if sync_thread is not None:
            sync_thread.join(timeout=30)

    def _sync_forever(self) -> None:
        """Sync every ``sync_interval_seconds``, and at once when `peach-tasks sync` asks."""
        interval = max(self.settings.loop.sync_interval_seconds, 1.0)
        due = time.monotonic() + interval
        while not self.stop_event.wait(max(0.0, min(REQUEST_POLL, due - time.monotonic()))):
            if not self._take_sync_request() and time.monotonic() < due:
                continue
            try:
                self.sync()
                self._report_problems()
                if self._leased is not None:
                    self._leased.round()  # a new organisation's loop starts now, not at the next round
            except Exception:  # e.g. the database briefly gone: report and retry next time
                log.exception("sync failed; retrying in %.0fs", interval)
            due = time.monotonic() + interval

    def _report_problems(self) -> None:
        """serve's console: one line per problem that appeared or cleared since the last sync."""
        try:
            self._problem_log.report(self.store.problems())
        except Exception:  # the console line is a courtesy; the store keeps the problems
            log.debug("could not read the problems to report them", exc_info=True)

    def stop(self, timeout: float | None = None) -> None:
        """Stop every loop; running tasks are killed and recorded as ABANDONED."""
        self.stop_event.set()
        if self._pruner is not None:
            self._pruner.stop_event.set()  # it ends after its current batch
        # Anything still marked RUNNING by us (a loop that did not finish in time) is ended,
        # then the loops are handed over without waiting for their leases to expire.
        if self._leased is not None:
            self._leased.stop(timeout or self.settings.timeouts.kill_grace + 30)
        self.store.abandon_running(ABANDON_REASON, owner=self.owner)
        if self._pruner is not None:  # between two batches: at once
            self._pruner.stop()
        if self._alerts is not None:  # after the runs' ends: their alerts are journalled, sent at the next start
            self._alerts.stop()
        if self._leased is not None:
            self._leased.coordinator.release_all()
            self._leased.close()

    def close(self) -> None:
        """Release the state_dir for the next scheduler."""
        if self.redis is not None:
            self.redis.close()
        lock = getattr(self, "_lock_file", None)
        if lock is not None and not lock.closed:
            lock.close()


def _wait_in_main_thread(event: threading.Event, duration: float | None) -> None:
    """Wait for ``event`` (set by serve's SIGTERM handler) or ``duration`` seconds, a second at a time.

    Python runs signal handlers in the main thread only. When the kernel delivers SIGTERM to
    another thread, nothing wakes a main thread blocked in a wait without a timeout, and the
    handler that would set ``event`` never runs; a wait that returns every second lets it run.
    """
    end = None if duration is None else time.monotonic() + duration
    while not event.is_set():
        left = 1.0 if end is None else min(1.0, end - time.monotonic())
        if left <= 0 or event.wait(left):
            return


def settle_heap() -> None:
    """Collect once, then freeze what the start-up made (imports, settings, the web app,
    the store's engine): out of the cyclic collector's sight for good (``gc.freeze``).

    A full collection stops every thread while it walks every object: about 30-40 ms for a
    scheduler's start-up heap, which a loop's store call or a run's end then waits for at
    random moments. Afterwards a full collection walks only what serve made since. What the
    start-up made lives as long as the process anyway."""
    gc.collect()
    gc.freeze()
