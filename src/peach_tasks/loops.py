"""A loop runs its tasks one after another; ``Loop.tick()`` is one iteration.

The steps of one run, in order (each a method below): start the run in the store,
extract the notebook's code, find the organisation's environment, hand a ``Job`` to the
executor, and end the run through ``Store.finish_run`` whatever happened. An exception
anywhere in those steps ends that run as a FAILURE and the loop goes on.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .executors.base import Job, LogSink, TaskExecutor
from .executors.process import utc_stamp
from .model import METADATA_LOOP, Executor, Outcome, RunStatus, TaskState
from .notebook import NotebookError, extract_code
from .registry import RegisteredTask, Snapshot

if TYPE_CHECKING:
    from .environments import EnvironmentManager
    from .settings import Settings
    from .store import Store

log = logging.getLogger(__name__)

# Variables a task process may inherit from the scheduler's own environment. Anything
# else (database URLs, tokens, cloud credentials) stays with the scheduler.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "USER", "LOGNAME", "SHELL", "TERM")


@dataclass(frozen=True)
class RunEvent:
    """What a finished run looks like to a console watcher (the demo prints these)."""

    run_id: int
    codops: str
    task: str
    version: str
    outcome: Outcome
    duration_s: float


class Loop:
    """One organisation's loop, or the shared metadata loop."""

    def __init__(self, name: str, *, settings: "Settings", store: "Store", envs: "EnvironmentManager",
                 executors: dict[Executor, TaskExecutor], snapshot: Callable[[], Snapshot],
                 stop: threading.Event, owner: str, marker_prefix: str,
                 keep: Callable[[tuple[str, str]], bool] = lambda key: True,
                 on_run: Callable[[RunEvent], None] | None = None) -> None:
        self.name = name
        self.settings, self.store, self.envs, self.executors = settings, store, envs, executors
        self.snapshot, self.stop, self.owner = snapshot, stop, owner
        self.marker_prefix, self.keep, self.on_run = marker_prefix, keep, on_run
        self.limit = settings.timeouts.metadata if name == METADATA_LOOP else settings.timeouts.task
        self.in_use: set[Path] = set()  # checkouts a running task uses (not to be pruned)

    # -- one iteration ----------------------------------------------------------
    def tick(self) -> int:
        """Run every task of the loop once, in order; returns how many ran."""
        keys = [key for key in self.snapshot().loops.get(self.name, ()) if self.keep(key)]
        self.store.set_states(keys, TaskState.PENDING)
        ran = 0
        for key in keys:
            if self.stop.is_set():
                break
            # Always the newest definition: a commit to master during the iteration counts.
            task = self.snapshot().tasks.get(key)
            if task is None or task.spec.loop_name != self.name:
                continue  # removed or moved since the iteration began
            self.run_task(task)
            ran += 1
        return ran

    def run_forever(self) -> None:
        pace = self.settings.loop.min_iteration_seconds
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                ran = self.tick()
            except Exception:  # the store may be briefly unreachable: report, wait, go on
                log.exception("loop %s: iteration failed; retrying", self.name)
                ran = 0
            wait = max(pace - (time.monotonic() - started), 0.0 if ran else 1.0)
            if wait:
                self.stop.wait(wait)

    # -- one run ----------------------------------------------------------------
    def run_task(self, task: RegisteredTask) -> Outcome:
        spec = task.spec
        timeout = min(spec.timeout or self.limit, self.limit)
        run_id = self.store.start_run(spec, task.version, task.checkout.commit, self.owner)
        writer = self.store.log_writer(run_id)
        started = time.monotonic()
        self.in_use.add(task.checkout.path)
        try:
            outcome = self._execute(task, run_id, writer.write, timeout)
        except Exception as exc:  # a bug of ours must not end the loop
            log.exception("run %s of %s/%s failed inside the scheduler", run_id, spec.codops, spec.name)
            writer.write(f"{utc_stamp()} peach-tasks: internal error: {traceback.format_exc()}")
            outcome = Outcome(RunStatus.FAILURE, error=f"internal scheduler error: {exc!r}")
        finally:
            self.in_use.discard(task.checkout.path)
            writer.close()
        self.store.finish_run(run_id, outcome, started)
        if self.on_run:
            self.on_run(RunEvent(run_id, spec.codops, spec.name, task.version, outcome,
                                 time.monotonic() - started))
        return outcome

    def _execute(self, task: RegisteredTask, run_id: int, sink: LogSink, timeout: float) -> Outcome:
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
        env = self.envs.current(spec.codops)
        if env is None:
            error = (f"organisation '{spec.codops}' has no Python environment yet (its build failed); "
                     "see 'peach-tasks tasks' for the installer's error")
            note(error)
            return Outcome(RunStatus.FAILURE, error=error)
        job = Job(run_id=run_id, codops=spec.codops, task=spec.name, code=code.source, method=spec.method,
                  filename=spec.notebook, interpreter=env.python, cwd=notebook.parent, timeout=timeout,
                  grace=self.settings.timeouts.kill_grace, marker=f"{self.marker_prefix}{run_id}",
                  env=self.task_environment(env.path, run_id, task))
        return executor.run(job, sink, self.stop)

    def task_environment(self, env_path: Path, run_id: int, task: RegisteredTask) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in INHERITED_ENV or k.startswith("LC_")}
        env.update(self.settings.task_env)
        env["PATH"] = f"{env_path / 'bin'}{os.pathsep}{env.get('PATH', os.defpath)}"
        env["VIRTUAL_ENV"] = str(env_path)
        env.update(PEACH_CODOPS=task.spec.codops, PEACH_TASK=task.spec.name, PEACH_RUN_ID=str(run_id),
                   PEACH_VERSION=task.version, PEACH_LOOP=self.name)
        return env
