"""Plain frozen data shared by every part: what a task is, how a run ends."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

METADATA_LOOP = "metadata"

# The environment every task uses unless its `py_env` names another, and that every other inherits.
BASE_ENV = "base"


def loop_limit(loop: str, task_loops: float, metadata_loop: float) -> float:
    """The time limit of the runs of ``loop``: the metadata loop's, or the organisation loops'."""
    return metadata_loop if loop == METADATA_LOOP else task_loops


def run_limit(declared: float | None, limit: float) -> float:
    """A run's time limit: the task's own ``timeout`` may shorten its loop's ``limit``, never
    lengthen it (the loops apply it; the API shows it)."""
    return min(declared or limit, limit)


class TaskState(str, enum.Enum):
    """Where a task is within the current iteration of its loop."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"


class RunStatus(str, enum.Enum):
    """How a run ended. ``RUNNING`` exists only while the run is under way."""

    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    TIMEOUT = "TIMEOUT"
    ABANDONED = "ABANDONED"


class Executor(str, enum.Enum):
    SPARK = "spark"
    PYTHON = "python"


@dataclass(frozen=True)
class TaskSpec:
    """One task as defined in a repository, normalised once at load.

    ``notebook`` is relative to the repository root (POSIX separators);
    ``source_file`` is relative to the repository root too, ``source_line`` is
    the line of the task's key in that file.
    """

    codops: str
    name: str
    notebook: str
    method: str | None
    full_notebook: bool = False
    executor: Executor = Executor.SPARK
    loop: str | None = None  # None: the organisation's own loop
    dependencies: tuple[str, ...] = ()
    timeout: float | None = None
    # A FAILURE or TIMEOUT runs again up to ``retries`` times before the loop moves on,
    # waiting ``retry_delay`` seconds, doubled after each attempt (see loops.retry_waits).
    retries: int = 0
    retry_delay: float = 30.0
    # Seconds a success stays fresh (``freshness: 2h``); None: the loop's default from
    # scheduler.yaml; 0: explicitly none (``freshness: false``), whatever the default.
    freshness: float | None = None
    repo: str = ""
    source_file: str = ""
    source_line: int | None = None
    environment: str = BASE_ENV  # its `py_env`: the organisation's named Python environment
    env_line: int | None = None  # the line of its `py_env`, when it has one

    @property
    def key(self) -> tuple[str, str]:
        return (self.codops, self.name)

    @property
    def loop_name(self) -> str:
        return self.loop or self.codops


@dataclass(frozen=True)
class RunOutput:
    """One thing a run showed (``display()``, a matplotlib figure), or the scheduler's note
    of what it did not keep. ``data`` is in ``mime_type``; ``text`` is its text/plain."""

    seq: int
    kind: str  # "display", "figure" or "note"
    mime_type: str
    data: bytes
    text: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What an executor reports when a run has ended; the loop stores it."""

    status: RunStatus
    exit_code: int | None = None
    signal: int | None = None
    error: str | None = None
    result: Any = None
    details: dict[str, Any] = field(default_factory=dict)
    # What the run's processes used, measured by the kernel (the run's cgroup); None
    # where no cgroup could be made (isolation: none, or a host without cgroups).
    peak_memory_bytes: int | None = None
    cpu_seconds: float | None = None
    # What the run showed, in order, within the run's bounds (executors/run_outputs.py).
    outputs: tuple[RunOutput, ...] = ()
