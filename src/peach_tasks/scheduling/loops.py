"""A loop runs its tasks one after another; ``Loop.tick()`` is one iteration.

The steps of one run, in order (each a method below): start the run in the store,
extract the notebook's code, find the organisation's environment, hand a ``Job`` to the
executor (``loop_jobs.py`` builds it), and end the run through ``Store.finish_run``
whatever happened. An exception anywhere in those steps ends that run as a FAILURE and
the loop goes on. ``loop_warm.py`` starts the next task's sandbox ahead.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..durations import format_duration
from ..executors.base import LogSink, TaskExecutor
from ..executors.process import utc_stamp
from ..executors.sandbox import Sandbox
from ..executors.warm import Slot, WarmSandbox
from ..model import BASE_ENV, Executor, Outcome, RunStatus, TaskSpec, TaskState, loop_limit, run_limit
from ..observability.metrics import record_loop_iteration
from ..sources.notebook import NotebookError, extract_code
from ..trees import remove_tree
from .loop_jobs import RunJobs
from .loop_warm import RUNS_ROOT, TRIGGER_ROOT, WarmStarts
from .registry import RegisteredTask, Snapshot
from .triggers import Trigger, TriggerQueue, collect_run_requests

if TYPE_CHECKING:
    from ..executors.environments import EnvironmentManager
    from ..executors.org_redis import OrganisationRedis
    from ..settings import Settings
    from ..store import Store
    from ..store.logs import LogWriter

log = logging.getLogger(__name__)

# Outcomes a task's ``retries`` run again (an ABANDONED run was stopped by us, not by it).
RETRIED = (RunStatus.FAILURE, RunStatus.TIMEOUT)
# A wait between attempts looks at the loop's handover this often (a stop wakes it at once).
RETRY_WAIT_STEP = 1.0

# Waits between attempts to store a run's end (about half a minute in all).
FINISH_RETRY_SECONDS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)

# How often a loop looks for triggers between its tasks: a trigger waits at most this
# (or the running task) before it runs, and a loop of very short tasks does not ask
# the database before every one of them.
TRIGGER_CHECK_SECONDS = 1.0
# A loop's pause keeps no sandbox started ahead, but for its last seconds: the next iteration's
# first task's sandbox starts then, in time to import its modules (executors/preload.py).
PAUSE_LEAD_SECONDS = 5.0


def retry_wait(spec: TaskSpec, attempt: int) -> float:
    """Seconds to wait after attempt ``attempt`` (1: the first run) failed: ``retry_delay``,
    doubled after each attempt."""
    return spec.retry_delay * 2 ** (attempt - 1)


def retry_waits(spec: TaskSpec) -> list[float]:
    """The waits before each of the task's retries, in order (none without ``retries``)."""
    return [retry_wait(spec, attempt) for attempt in range(1, spec.retries + 1)]


@dataclass(frozen=True)
class RunEvent:
    """What a finished run looks like to a console watcher (the demo prints these)."""

    run_id: int
    codops: str
    task: str
    version: str
    outcome: Outcome
    duration_s: float


class Loop(RunJobs, WarmStarts):
    """One organisation's loop, or the shared metadata loop.

    A run's ``Job`` is built by ``RunJobs`` (loop_jobs.py), the next task's sandbox started
    ahead by ``WarmStarts`` (loop_warm.py); the iteration, the runs and their retries are here.
    """

    def __init__(self, name: str, *, settings: "Settings", store: "Store", envs: "EnvironmentManager",
                 executors: dict[Executor, TaskExecutor], snapshot: Callable[[], Snapshot],
                 stop: threading.Event, owner: str, marker_prefix: str,
                 keep: Callable[[tuple[str, str]], bool] = lambda key: True,
                 on_run: Callable[[RunEvent], None] | None = None, sandbox: Sandbox | None = None,
                 redis: "OrganisationRedis | None" = None) -> None:
        self.name = name
        self.redis = redis  # each organisation's Redis user (org_redis.py), when the settings have one
        self.sandbox = sandbox  # None: tasks run as plain processes (isolation: none)
        self.settings, self.store, self.envs, self.executors = settings, store, envs, executors
        self.snapshot, self.stop, self.owner = snapshot, stop, owner
        self.marker_prefix, self.keep, self.on_run = marker_prefix, keep, on_run
        self.limit = loop_limit(name, settings.timeouts.task, settings.timeouts.metadata)
        self.in_use: set[Path] = set()  # checkouts a running task uses (not to be pruned)
        # Set when this replica gives the loop to another one: stop after the current task.
        self.handover = threading.Event()
        # A loop taken over from another replica goes on after the task that ran last.
        self.resume_after: tuple[str, str] | None = None
        self.triggers = TriggerQueue(store)
        self._triggers_checked = float("-inf")
        # Tasks that ran by trigger in this iteration: each may do so once per iteration, so
        # a task that triggers itself cannot push the loop's other tasks back.
        self._triggered: set[tuple[str, str]] = set()
        # Each run's private folder where trigger_task() drops requests (see triggers.py).
        self.trigger_root = settings.state_path / TRIGGER_ROOT
        # A sandboxed run's files for its executor (request, result), removed when it ends.
        self.runs_root = settings.state_path / RUNS_ROOT
        # The sandbox started ahead for the next task (warm.py) with its folders, and the
        # tasks this iteration still runs, in order (the next one is the first that exists).
        self._warm: tuple[WarmSandbox, Slot] | None = None
        self.start_ahead = True  # False: every sandbox starts when its run does (the benchmark's baseline)
        self._upcoming: list[tuple[str, str]] = []
        self._carry = False  # the iteration's last run starts the next iteration's first task ahead

    # -- one iteration ----------------------------------------------------------
    def tick(self, carry: bool = False) -> int:
        """Run every task of the loop once, in order; returns how many ran.

        ``carry``: the next iteration follows at once (``run_forever``), so the last task's
        run starts the sandbox of the next iteration's first task ahead, and it is left for
        the caller to use or end (``drop_warm``). Otherwise none outlives the iteration."""
        keys = [key for key in self.snapshot().loops.get(self.name, ()) if self.keep(key)]
        if self.resume_after is not None:
            resume, self.resume_after = self.resume_after, None
            keys = [key for key in keys if key > resume] or keys
        self.store.set_states(keys, TaskState.PENDING)
        self._triggered.clear()
        ran = 0
        try:
            self._upcoming, self._carry = list(keys), carry
            for index, key in enumerate(keys):
                if self.stop.is_set() or self.handover.is_set():
                    # This iteration ends here: the tasks it did not reach wait for no one now.
                    self.store.set_states(keys[index:], TaskState.FINISHED)
                    break
                ran += self.run_triggered()  # a trigger goes ahead of the normal order
                # Always the newest definition: a commit to master during the iteration counts.
                task = self.snapshot().tasks.get(key)
                self._upcoming = keys[index + 1:]
                if task is None or task.spec.loop_name != self.name:
                    continue  # removed or moved since the iteration began
                self.run_task(task)
                ran += 1
            self._upcoming = []
            return ran + self.run_triggered()
        finally:
            self._upcoming, self._carry = [], False
            if not carry or self.stop.is_set() or self.handover.is_set():
                self.drop_warm()  # a sandbox started ahead never outlives its iteration

    def run_triggered(self) -> int:
        """Run, once each, the pending triggers of this loop's tasks; returns how many ran.

        Only triggers queued before the call are taken, and a task runs by trigger at most
        once per iteration (the others wait for the next), so a task that triggers itself
        cannot keep the loop from its other tasks.
        """
        if time.monotonic() - self._triggers_checked < TRIGGER_CHECK_SECONDS:
            return 0
        self._triggers_checked = time.monotonic()
        ran = 0
        for trigger in self.triggers.pending():  # a list read now: later triggers wait for the next call
            if self.stop.is_set():
                break
            task = self.snapshot().tasks.get(trigger.key)
            if task is None or task.spec.loop_name != self.name or not self.keep(trigger.key):
                continue  # another loop's, or not known yet: it stays pending
            if trigger.key in self._triggered:
                continue  # it ran by trigger in this iteration already: this one waits
            if self.triggers.claim(trigger):
                self._triggered.add(trigger.key)
                self.run_task(task, trigger)
                ran += 1
        return ran

    def run_forever(self) -> None:
        try:
            self._run_forever()
        finally:
            self.drop_warm()

    def _run_forever(self) -> None:
        pace = self.settings.loop.min_iteration_seconds
        while not self.stop.is_set() and not self.handover.is_set():
            started = time.monotonic()
            try:
                ran = self.tick(carry=True)
            except Exception:  # the store may be briefly unreachable: report, wait, go on
                log.exception("loop %s: iteration failed; retrying", self.name)
                ran = 0
            if ran:
                record_loop_iteration(self.name, time.monotonic() - started)
            wait = max(pace - (time.monotonic() - started), 0.0 if ran else 1.0)
            if wait > PAUSE_LEAD_SECONDS:
                self.drop_warm()  # nothing waits in a sandbox through a long pause...
            # Wait in short steps: a trigger should not wait for a slow pace to pass.
            deadline, prepared = time.monotonic() + wait, not ran
            while not self.stop.wait(min(max(deadline - time.monotonic(), 0.0), 1.0)):
                if time.monotonic() >= deadline or self.handover.is_set():
                    break
                if not prepared and deadline - time.monotonic() <= PAUSE_LEAD_SECONDS:
                    prepared = True
                    self._prepare_first()  # ...but the next iteration's first one starts near its end
                try:
                    self.run_triggered()
                except Exception:  # the store may be briefly unreachable; the next step retries
                    log.exception("loop %s: checking triggers failed", self.name)

    def _prepare_first(self) -> None:
        """In a pause: start the sandbox of the next iteration's first task ahead (once)."""
        if self._warm is None:
            self._upcoming, self._carry = [], True
            try:
                self._prepare_next()
            finally:
                self._carry = False

    # -- one run, and its retries --------------------------------------------------
    def run_task(self, task: RegisteredTask, trigger: Trigger | None = None) -> Outcome:
        """Run the task; a FAILURE or TIMEOUT runs again (its ``retries``) before the loop
        moves on, each attempt its own run linked to the first. A stop or a handover ends
        the wait between attempts at once."""
        outcome, first = self.run_attempt(task, trigger)
        for attempt, wait in enumerate(retry_waits(task.spec), start=2):
            if outcome.status not in RETRIED:
                break
            self.drop_warm()  # the wait may be long: nothing waits in a sandbox meanwhile
            if not self._wait_before_retry(task.spec, wait):
                break
            newest = self.snapshot().tasks.get(task.spec.key)  # a fix committed meanwhile counts
            if newest is None or newest.spec.loop_name != self.name:
                break  # removed or moved while it waited
            task = newest
            outcome, _ = self.run_attempt(task, trigger, retry_of=first, attempt=attempt, waited=wait)
        return outcome

    def _wait_before_retry(self, spec: TaskSpec, seconds: float) -> bool:
        """Wait ``seconds`` (the task PENDING meanwhile); False when a stop or a handover
        came first, at once."""
        self.store.set_states([spec.key], TaskState.PENDING)
        deadline = time.monotonic() + seconds
        while not self.handover.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            if self.stop.wait(min(left, RETRY_WAIT_STEP)):
                break
        self.store.set_states([spec.key], TaskState.FINISHED)
        return False

    def run_attempt(self, task: RegisteredTask, trigger: Trigger | None = None, *, retry_of: int | None = None,
                    attempt: int = 1, waited: float = 0.0) -> tuple[Outcome, int]:
        """One run of the task; returns its outcome and its run id. A retry (``retry_of``)
        carries the trigger's payload but does not claim or settle the trigger again."""
        spec = task.spec
        timeout = self.timeout_for(spec)
        try:
            run_id = self.store.start_run(spec, task.version, task.checkout.commit, self.owner, trigger=trigger,
                                          retry_of=retry_of, attempt=attempt)
        except Exception:
            if trigger is not None and retry_of is None:  # no run was recorded: the trigger waits for the next try
                self.triggers.settle(trigger, None, RunStatus.ABANDONED)
            raise
        writer = self.store.log_writer(run_id)
        # The folders of the sandbox started ahead (made for it, never used), else the run's own.
        warm, slot = self._warm if self._warm is not None else (None, self._cold_slot(run_id))
        self._warm = None
        started = time.monotonic()
        self.in_use.add(task.checkout.path)
        outcome = Outcome(RunStatus.FAILURE, error="internal scheduler error")
        try:
            if trigger is not None:
                writer.write(f"{utc_stamp()} peach-tasks: triggered by {trigger.requested_by} "
                             f"(trigger {trigger.id}{', with a payload' if trigger.payload_json else ''})")
            if retry_of is not None:
                writer.write(f"{utc_stamp()} peach-tasks: attempt {attempt} of {spec.retries + 1}, a retry of "
                             f"run {retry_of}, after waiting {format_duration(waited)}")
            payload = trigger.payload if trigger is not None else None
            if warm is None:
                # Whatever sits in this run's trigger folder before it starts is not its request.
                remove_tree(slot.triggers)
            outcome = self._execute(task, run_id, writer.write, timeout, payload, slot, warm)
            if outcome.status in RETRIED and attempt <= spec.retries:
                writer.write(f"{utc_stamp()} peach-tasks: {outcome.status.value}; it runs again in "
                             f"{format_duration(retry_wait(spec, attempt))} (attempt {attempt + 1} of "
                             f"{spec.retries + 1})")
        except Exception as exc:  # a bug of ours must not end the loop
            log.exception("run %s of %s/%s failed inside the scheduler", run_id, spec.codops, spec.name)
            writer.write(f"{utc_stamp()} peach-tasks: internal error: {traceback.format_exc()}")
            outcome = Outcome(RunStatus.FAILURE, error=f"internal scheduler error: {exc!r}")
        finally:
            self.in_use.discard(task.checkout.path)
            self._collect_requests(slot.triggers, run_id, spec.codops, spec.name, writer.write)
            if trigger is not None and retry_of is None:
                try:
                    self.triggers.settle(trigger, run_id, outcome.status)
                except Exception:  # the run's end still counts; the sync releases the trigger
                    log.exception("run %s: settling trigger %s failed", run_id, trigger.id)
        # A failed attempt that runs again is not yet the task's failure (freshness, alerts).
        retried = outcome.status in RETRIED and attempt <= spec.retries
        self._record_end(run_id, outcome, started, writer, retried)
        if self.on_run:
            self.on_run(RunEvent(run_id, spec.codops, spec.name, task.version, outcome,
                                 time.monotonic() - started))
        return outcome, run_id

    def timeout_for(self, spec: TaskSpec) -> float:
        """A task's limit: its own ``timeout`` may shorten the loop's, never lengthen it."""
        return run_limit(spec.timeout, self.limit)

    def _record_end(self, run_id: int, outcome: Outcome, started: float, writer: "LogWriter",
                    retried: bool = False) -> None:
        """Store the run's end and the rest of its log, retrying: a store out of reach for
        a moment (a busy connection pool, a database restart) must not leave it RUNNING."""
        for attempt, delay in enumerate((*FINISH_RETRY_SECONDS, None)):
            try:
                self.store.finish_run(run_id, outcome, started, log=writer, retried=retried)
                return
            except Exception as exc:
                if delay is None or (self.stop.is_set() and attempt > 0):  # a stopping loop tries twice
                    log.error("run %s: its end could not be stored; it stays RUNNING until this replica's "
                              "next start or a takeover marks it ABANDONED", run_id)
                    raise
                log.warning("run %s: storing its end failed (%s); retrying in %gs", run_id, exc, delay)
                time.sleep(delay)

    def _collect_requests(self, folder: Path, run_id: int, codops: str, name: str, sink: LogSink) -> None:
        try:
            if collect_run_requests(self.store, folder, codops, name, run_id,
                                    lambda text: sink(f"{utc_stamp()} peach-tasks: {text}")):
                self._triggers_checked = float("-inf")  # what this run triggered may be ours: look now
        except Exception:  # the store briefly gone: the run's own outcome still counts
            log.exception("run %s: queueing the triggers it requested failed", run_id)

    def _execute(self, task: RegisteredTask, run_id: int, sink: LogSink, timeout: float,
                 payload: object = None, slot: Slot | None = None, warm: WarmSandbox | None = None) -> Outcome:
        """Run ``task`` as run ``run_id`` in ``slot``'s folders (default: the run's own).
        ``warm``, a sandbox started ahead, is offered to the executor, or ended here."""
        try:
            return self._execute_in(task, run_id, sink, timeout, payload, slot or self._cold_slot(run_id), warm)
        finally:
            if warm is not None:
                warm.discard()  # a no-op once a run took it

    def _execute_in(self, task: RegisteredTask, run_id: int, sink: LogSink, timeout: float,
                    payload: object, slot: Slot, warm: WarmSandbox | None) -> Outcome:
        spec = task.spec
        note = lambda text: sink(f"{utc_stamp()} peach-tasks: {text}")  # noqa: E731
        note(f"run {run_id} of {spec.codops}/{spec.name}, version {task.version} "
             f"(commit {task.checkout.commit[:12]}), executor {spec.executor.value}, timeout {timeout:g}s")
        executor = self.executors.get(spec.executor)
        if executor is None:
            error = (f"executor '{spec.executor.value}' is not available on this scheduler; "
                     f"set 'executor: python' in {spec.source_file} or enable the {spec.executor.value} executor")
            note(error)
            return Outcome(RunStatus.FAILURE, error=error)
        notebook = task.checkout.path / spec.notebook
        try:
            code = extract_code(notebook, spec.method, spec.full_notebook, display_name=spec.notebook)
        except NotebookError as exc:
            note(str(exc))
            return Outcome(RunStatus.FAILURE, error=str(exc))
        for text in code.notes:
            note(text)
        env = self.envs.current(spec.codops, spec.environment)
        if env is None:
            which = "" if spec.environment == BASE_ENV else f" '{spec.environment}'"
            error = (f"organisation '{spec.codops}' has no Python environment{which} yet (its build failed); "
                     "see 'peach-tasks tasks' for the installer's error")
            note(error)
            return Outcome(RunStatus.FAILURE, error=error)
        job = self._job(task, run_id, env.path, env.python, slot, timeout, code.source, payload,
                        f"{self.marker_prefix}{run_id}", program=code.request())
        if job.sandbox is not None and hasattr(executor, "prepare"):
            # The executor starts the next task's sandbox once this one runs (warm.py).
            job = dataclasses.replace(job, warm=warm, on_started=self._prepare_next)
        try:
            return executor.run(job, sink, self.stop)
        finally:
            if job.work_dir is not None:
                remove_tree(job.work_dir)
