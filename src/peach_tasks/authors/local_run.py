"""``peach-tasks run DIR TASK``: one task from a working copy, as the scheduler runs it.

The run goes through the loop's own ``_execute`` (extraction, environment lookup,
``Job``, executor, timeout, process-tree kill, log lines stamped by the process
layer); only the surroundings differ: the working copy stands in for the checkout,
the log goes to the terminal instead of the store, and nothing is recorded.

The environment is the organisation's, built by the same ``EnvironmentManager`` from
this repository's dependencies and cached by hash under ``~/.cache/peach-tasks`` (a
second run with the same dependencies starts at once); ``current_python`` uses the
running interpreter instead, for quick iterations.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ..errors import PeachError, Problem
from ..executors.base import LogSink
from ..executors.environments import Environment, EnvironmentManager
from ..executors.process import utc_stamp
from ..executors.python import PythonExecutor
from ..executors.run_outputs import output_bounds
from ..executors.sandbox import Sandbox, SandboxUnavailable, make_sandbox
from ..model import Executor, Outcome, TaskSpec
from ..scheduling.loops import Loop
from ..scheduling.registry import RegisteredTask, Snapshot
from ..settings import Settings
from ..sources.definitions import load_definitions
from ..sources.py_environments import environment_sets, unknown_environment
from ..sources.repos import Checkout
from ..store import Store

LOCAL_RUN_ID = 0


class LocalRunError(PeachError):
    """The task cannot be run at all (not defined, definition broken, no environment)."""

    def __init__(self, message: str, problems: tuple[Problem, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems


@dataclass
class LocalResult:
    """How the run ended, and the trigger requests it made (not sent anywhere)."""

    spec: TaskSpec
    outcome: Outcome
    requested_triggers: list[dict[str, Any]] = field(default_factory=list)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "peach-tasks"


def find_task(root: Path, name: str, settings: Settings) -> tuple[TaskSpec, Any]:
    """The task called ``name`` (``TASK`` or ``CODOPS/TASK``) and the repository's definitions."""
    timeouts = (settings.timeouts.task, settings.timeouts.metadata)
    defs = load_definitions(root, root.resolve().name, None, timeouts)
    codops, _, task = name.rpartition("/")
    matches = [t for t in defs.tasks if t.name == task and (not codops or t.codops == codops)]
    if len(matches) == 1:
        return matches[0], defs
    if len(matches) > 1:
        names = ", ".join(f"{t.codops}/{t.name}" for t in matches)
        raise LocalRunError(f"'{name}' is defined for several organisations ({names}); give CODOPS/TASK")
    known = ", ".join(f"{t.codops}/{t.name}" for t in defs.tasks) or "none"
    raise LocalRunError(f"no runnable task '{name}' in {root} (tasks: {known}); "
                        "'peach-tasks validate' shows what is wrong with the definitions", defs.problems)


class _CurrentPython(Environment):
    """The running interpreter standing in for the organisation's environment."""

    @property
    def python(self) -> Path:
        return Path(sys.executable)


class _LocalEnvs:
    """What the loop asks of an ``EnvironmentManager``: the current one of an organisation."""

    def __init__(self, env: Environment) -> None:
        self.env = env

    def current(self, codops: str, name: str = "") -> Environment | None:
        return self.env


class _LocalLoop(Loop):
    """The scheduler's loop; the task sees ``PEACH_RUN_ID=local`` (no run is recorded)."""

    def task_environment(self, env_path: Path, run_id: int, task: RegisteredTask,
                         triggers: Path | None = None, bridge: Path | None = None) -> dict[str, str]:
        env = super().task_environment(env_path, run_id, task, triggers, bridge)
        env["PEACH_RUN_ID"] = "local"
        return env


def prepare_environment(spec: TaskSpec, defs: Any, *, current_python: bool,
                        manager: EnvironmentManager) -> Environment:
    """The task's environment (its ``py_env``, else ``base``) for this repository's
    dependencies, built if needed."""
    unknown = unknown_environment(spec, defs.environments)
    if unknown is not None:
        raise LocalRunError(unknown.message, (unknown,))
    if current_python:
        return _CurrentPython(spec.codops, "current-python", Path(sys.prefix), (), spec.environment)
    sets = environment_sets(defs.environments, [spec])
    if sets.problems:
        raise LocalRunError("conflicting pins; fix them first", sets.problems)
    requirements = sets.sets[(spec.codops, spec.environment)]
    env, problem = manager.ensure(spec.codops, requirements, spec.environment)
    if problem is not None or env is None or tuple(env.requirements) != tuple(requirements):
        message = problem.message if problem else "the environment could not be built"
        raise LocalRunError(message)
    return env


def run_local(root: Path, name: str, settings: Settings, *, sink: LogSink, cancel: threading.Event,
              current_python: bool = False, payload: Any = None, cache_dir: Path | None = None,
              extra_env: dict[str, str] | None = None,
              progress: Callable[[str], None] = lambda text: None) -> LocalResult:
    """Run task ``name`` of the working copy at ``root`` once; log lines go to ``sink``.

    Raises ``LocalRunError`` when the task cannot start; anything the task does ends
    up in the returned outcome instead.
    """
    root = Path(root).resolve()
    spec, defs = find_task(root, name, settings)
    cache_dir = cache_dir or default_cache_dir()
    manager = EnvironmentManager(cache_dir, progress=progress)
    env = prepare_environment(spec, defs, current_python=current_python, manager=manager)
    executors = _executors(spec, settings, manager, sink)
    checkout = Checkout(root.name, str(root), "", "working-copy", root, root / ".git")
    task = RegisteredTask(spec, checkout, _version(root, spec.notebook))
    if extra_env:
        settings = settings.model_copy(update={"task_env": {**settings.task_env, **extra_env}})
    with tempfile.TemporaryDirectory(prefix="peach-run-") as tmp:
        # A store the loop's code can hold; only its dialect is read (no run is recorded,
        # so it needs no schema).
        store = Store(sa.create_engine("sqlite://"))
        try:
            loop = _LocalLoop(spec.loop_name, settings=settings, store=store,
                              envs=_LocalEnvs(env),  # type: ignore[arg-type]
                              executors=executors, snapshot=Snapshot, stop=cancel, owner="local",
                              marker_prefix=f"local-{os.getpid()}:", sandbox=_sandbox(settings, sink))
            loop.trigger_root = Path(tmp) / "triggers"
            loop.runs_root = Path(tmp) / "runs"
            outcome = loop._execute(task, LOCAL_RUN_ID, sink, loop.timeout_for(spec), payload)
            requested = _requested(loop.trigger_root / str(LOCAL_RUN_ID))
        finally:
            store.close()
    return LocalResult(spec, outcome, requested)


def _sandbox(settings: Settings, sink: LogSink) -> Sandbox | None:
    """The scheduler's sandbox where this machine has one; an author's laptop may not (no
    bubblewrap, no cgroup of one's own): then the task runs as a plain process, with a note."""
    if settings.isolation == "none":
        return None
    try:
        return make_sandbox()
    except SandboxUnavailable as exc:
        sink(f"{utc_stamp()} peach-tasks: running without the scheduler's sandbox here: {exc}")
        return None


def _executors(spec: TaskSpec, settings: Settings, envs: EnvironmentManager, sink: LogSink) -> dict[Executor, Any]:
    """The scheduler's executors; Spark as configured (``local[*]`` unless ``--config`` says otherwise)."""
    executors: dict[Executor, Any] = {Executor.PYTHON: PythonExecutor(outputs=output_bounds(settings))}
    if spec.executor == Executor.SPARK:
        try:
            from ..executors.spark import SparkExecutor

            executors[Executor.SPARK] = SparkExecutor(settings.spark, settings.organisations, envs,
                                                      outputs=output_bounds(settings))
        except Exception as exc:  # noqa: BLE001 - no Spark here: say so, the loop reports the failure
            sink(f"peach-tasks: the spark executor is not available here ({exc}); "
                 "set `executor: python` to try the task without Spark")
    return executors


def _requested(folder: Path) -> list[dict[str, Any]]:
    import json

    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            out.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return out


def _version(root: Path, notebook: str) -> str:
    """The notebook's last commit, like the scheduler's version, marked when it has changes."""
    try:
        last = subprocess.run(["git", "-C", str(root), "log", "-1", "--format=%h", "--", notebook],
                              capture_output=True, text=True, timeout=30)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", notebook],
                               capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "working-copy"
    if last.returncode != 0 or not last.stdout.strip():
        return "uncommitted"
    version = last.stdout.strip()
    return f"{version}+changes" if dirty.returncode == 0 and dirty.stdout.strip() else version
