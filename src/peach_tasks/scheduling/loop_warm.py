"""A loop's next task's sandbox, started ahead while the current task runs (executors/warm.py).

Once a run's task has its request, the loop starts the sandbox of the task that runs next;
the next run takes it over, or it is ended with its folders (``drop_warm``) when nothing
will: a stop, a handover, a pause, a wait before a retry, the end of an iteration.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..executors.base import TaskExecutor
from ..executors.preload import preload_names
from ..executors.sandbox import Sandbox
from ..executors.warm import Slot, WarmSandbox
from ..model import Executor
from ..sources.notebook import NotebookError, extract_code
from ..trees import remove_tree
from .registry import RegisteredTask, Snapshot

if TYPE_CHECKING:
    from ..executors.environments import EnvironmentManager
    from ..settings import Settings

log = logging.getLogger(__name__)

# Names of sandboxes started ahead (their cgroups and folders), unique in this process.
_WARM_IDS = itertools.count(1)
WARM_PREFIX = "warm-"
TRIGGER_ROOT, RUNS_ROOT = "trigger-requests", "runs"  # under state_dir: the runs' own folders


class WarmStarts:
    """The part of ``Loop`` that starts the next task's sandbox ahead, and ends it unused.

    What it reads is the loop's (set by ``Loop.__init__``); it builds the job with the
    loop's ``_job`` and ``timeout_for``.
    """

    name: str
    settings: Settings
    sandbox: Sandbox | None
    executors: dict[Executor, TaskExecutor]
    envs: EnvironmentManager
    snapshot: Callable[[], Snapshot]
    stop: threading.Event
    handover: threading.Event
    keep: Callable[[tuple[str, str]], bool]
    marker_prefix: str
    trigger_root: Path
    runs_root: Path
    start_ahead: bool
    _warm: tuple[WarmSandbox, Slot] | None
    _upcoming: list[tuple[str, str]]
    _carry: bool

    def _prepare_next(self) -> None:
        """Start the sandbox of this iteration's next task, to wait for its request while the
        current task runs. Never fails the current run: the next one then starts cold."""
        if (not self.start_ahead or self.sandbox is None or self._warm is not None or self.stop.is_set()
                or self.handover.is_set()):
            return
        slot = None
        try:
            task = self._next_task()
            executor = self.executors.get(task.spec.executor) if task is not None else None
            env = self.envs.current(task.spec.codops, task.spec.environment) if task is not None else None
            if task is None or env is None or not hasattr(executor, "prepare"):
                return
            name = f"{WARM_PREFIX}{os.getpid()}-{next(_WARM_IDS)}"
            slot = Slot(self.trigger_root / name, self.runs_root / name)
            job = self._job(task, 0, env.path, env.python, slot, self.timeout_for(task.spec), "", None,
                            f"{self.marker_prefix}{name}")
            preload, shell = self._preload(task, job.cwd)
            warm = executor.prepare(job, f"{self.marker_prefix.rstrip(':')}-{name}",  # type: ignore[union-attr]
                                    preload=preload, shell=shell)
            if warm is not None:
                self._warm, slot = (warm, slot), None
        except Exception:
            log.exception("loop %s: starting the next task's sandbox ahead failed; it starts when it runs", self.name)
        finally:
            if slot is not None:
                remove_slot(slot)

    def _preload(self, task: RegisteredTask, cwd: Path) -> tuple[tuple[str, ...], bool]:
        """What the sandbox started ahead imports while it waits (``executors/preload.py``),
        and whether the notebook has the magics' shell (what those imports may ask IPython for)."""
        if not self.settings.loop.preload_imports:
            return (), False
        spec = task.spec
        return _imports_ahead(task.checkout.path / spec.notebook, spec.notebook, spec.method, spec.full_notebook, cwd)

    def _next_task(self) -> RegisteredTask | None:
        snapshot = self.snapshot()
        upcoming = self._upcoming
        if not upcoming and self._carry:  # the last of the iteration: the next one's first
            upcoming = list(snapshot.loops.get(self.name, ()))
        for key in upcoming:
            task = snapshot.tasks.get(key)
            if task is not None and task.spec.loop_name == self.name and self.keep(key):
                return task
        return None

    def drop_warm(self) -> None:
        """End the sandbox started ahead, if there is one, with its folders."""
        if self._warm is not None:
            (warm, slot), self._warm = self._warm, None
            try:
                warm.discard()
            finally:
                remove_slot(slot)


@functools.lru_cache(maxsize=1024)
def _imports_ahead(notebook: Path, name: str, method: str | None, full_notebook: bool,
                   cwd: Path) -> tuple[tuple[str, ...], bool]:
    """A task's modules to import ahead, and whether it has the magics' shell, read once per
    checkout: a checkout never changes (one per commit), so the notebook is not extracted
    again for every run the loop starts ahead."""
    try:
        code = extract_code(notebook, method, full_notebook, display_name=name)
    except NotebookError:
        return (), False  # its run reports it
    return preload_names(code.source, code.request(), cwd, method), code.shell


def remove_warm_leftovers(state_path: Path) -> int:
    """Remove the folders of sandboxes started ahead by a scheduler that died (their
    processes died with it, their cgroups go with the runs'); returns how many."""
    found = [p for root in (TRIGGER_ROOT, RUNS_ROOT) if (state_path / root).is_dir()
             for p in (state_path / root).iterdir() if p.name.startswith(WARM_PREFIX)]
    for path in found:
        remove_tree(path)
    return len(found)


def remove_slot(slot: Slot) -> None:
    for folder in (slot.triggers, slot.work):
        remove_tree(folder)
