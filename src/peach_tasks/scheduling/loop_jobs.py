"""What a loop hands its executor for one run: the ``Job``, with the task process's
environment variables and, sandboxed, the run's folders and its sandbox plan.

The task inherits only a few of the scheduler's variables (``INHERITED_ENV``): database
URLs, tokens and cloud credentials stay with the scheduler.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..executors.base import Job
from ..executors.cgroups import Limits
from ..executors.sandbox import Sandbox, SandboxPlan, user_for
from ..executors.warm import Slot
from ..trigger_client import TRIGGER_DIR_ENV
from .registry import RegisteredTask

if TYPE_CHECKING:
    from ..executors.org_redis import OrganisationRedis
    from ..settings import Settings
    from ..store import Store

log = logging.getLogger(__name__)

# Variables a task process may inherit from the scheduler's own environment. Anything
# else (database URLs, tokens, cloud credentials) stays with the scheduler.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "USER", "LOGNAME", "SHELL", "TERM")


class RunJobs:
    """The part of ``Loop`` that builds a run's ``Job``; what it reads is the loop's."""

    name: str
    settings: Settings
    store: Store
    sandbox: Sandbox | None
    redis: OrganisationRedis | None
    trigger_root: Path
    runs_root: Path

    def _job(self, task: RegisteredTask, run_id: int, env_path: Path, python: Path, slot: Slot, timeout: float,
             code: str, payload: object, marker: str, program: dict[str, Any] | None = None) -> Job:
        spec = task.spec
        bridge = self._redis_bridge(spec.codops)  # once per run: the sandbox's mounts and the credentials
        return Job(run_id=run_id, codops=spec.codops, task=spec.name, code=code, program=program, method=spec.method,
                   filename=spec.notebook, interpreter=python, cwd=(task.checkout.path / spec.notebook).parent,
                   timeout=timeout, grace=self.settings.timeouts.kill_grace, marker=marker,
                   env=self.task_environment(env_path, run_id, task, slot.triggers, bridge),
                   payload=payload,
                   # With a shared database another replica takes the loop over when this
                   # one dies: the task must die with it (SQLite: one scheduler, which ends
                   # its leftovers itself at restart).
                   die_with_scheduler=self.store.engine.dialect.name != "sqlite",
                   **self._sandboxed(task, run_id, env_path, slot, bridge=bridge))

    def _cold_slot(self, run_id: int) -> Slot:
        return Slot(self.trigger_root / str(run_id), self.runs_root / str(run_id))

    def _sandboxed(self, task: RegisteredTask, run_id: int, env_path: Path, slot: Slot | None = None, *,
                   bridge: Path | None) -> dict[str, object]:
        """The Job fields that put this run into its sandbox (nothing with isolation: none):
        its organisation's limits, its environment read-only, its checkout in a private
        copy, its own trigger folder, a folder for the executor's files and ``bridge``, the
        run's Redis bridge (``_redis_bridge``)."""
        if self.sandbox is None:
            return {}
        codops = task.spec.codops
        limits = self.settings.limits_for(codops)
        slot = slot or self._cold_slot(run_id)
        triggers, work_dir = slot.triggers, slot.work
        user = user_for(codops) if self.settings.python.user_per_organisation else None
        for folder in (triggers, work_dir):
            folder.mkdir(parents=True, exist_ok=True)
            self.sandbox.give(folder, user)
        mounts = {Path(path): mode for path, mode in limits.mounts.items()}
        for path in [p for p in mounts if not p.exists()]:
            log.warning("mount %s of %s does not exist on this host; the run goes without it", path, codops)
            del mounts[path]
        plan = SandboxPlan(group_name=f"{self.marker_prefix.rstrip(':')}-{run_id}",
                           limits=Limits(limits.memory_bytes, limits.cpus, limits.pids, limits.disk_bytes),
                           network=limits.network,
                           read_only=(env_path, *[p for p, mode in mounts.items() if mode == "ro"]),
                           writable=((triggers, triggers), *[(p, p) for p, mode in mounts.items() if mode == "rw"],
                                     *([(bridge, bridge)] if bridge is not None else [])),
                           private_copy=task.checkout.path, watched=(triggers,), user=user)
        return {"sandbox": self.sandbox, "plan": plan, "work_dir": work_dir}

    def _redis_bridge(self, codops: str) -> Path | None:
        """The socket through which a sandboxed run without a network reaches the platform's
        Redis (redis_bridge.py), or None: no Redis, no sandbox, or the run has the network."""
        if self.redis is None or self.sandbox is None or self.settings.limits_for(codops).network:
            return None
        try:
            return self.redis.bridge(codops)
        except Exception as exc:  # e.g. rediss://: the run goes without Redis, as when it is down
            log.warning("%s: runs without a network cannot reach Redis: %s", codops, exc)
            return None

    def task_environment(self, env_path: Path, run_id: int, task: RegisteredTask,
                         triggers: Path | None = None, bridge: Path | None = None) -> dict[str, str]:
        """The task process's variables; with Redis, its credentials reach it through
        ``bridge`` (the run's ``_redis_bridge``), else over the network."""
        env = {k: v for k, v in os.environ.items() if k in INHERITED_ENV or k.startswith("LC_")}
        env.update(self.settings.task_env)
        env["PATH"] = f"{env_path / 'bin'}{os.pathsep}{env.get('PATH', os.defpath)}"
        env["VIRTUAL_ENV"] = str(env_path)
        env.update(PEACH_CODOPS=task.spec.codops, PEACH_TASK=task.spec.name, PEACH_RUN_ID=str(run_id),
                   PEACH_VERSION=task.version, PEACH_LOOP=self.name,
                   PEACH_PY_ENV=task.spec.environment)
        if self.redis is not None:  # the organisation's own user and namespace, never the admin's
            try:
                env.update(self.redis.credentials(task.spec.codops, bridge).env())
            except Exception as exc:  # Redis down: the run goes on without it (its code says what it misses)
                log.warning("run %s: no Redis credentials for %s (%s)", run_id, task.spec.codops, exc)
        env[TRIGGER_DIR_ENV] = str(triggers or self.trigger_root / str(run_id))
        return env
