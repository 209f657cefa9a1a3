"""The contract between a loop and an executor."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from ..model import Outcome

# A sink receives one captured log line at a time, already stamped with its UTC time
# ("2026-11-24T22:30:01.123Z text"), without the trailing newline. It must be cheap
# and thread-safe: the process layer calls it from its reader thread.
LogSink = Callable[[str], None]


@dataclass(frozen=True)
class Job:
    """Everything an executor needs to run one task once.

    ``code`` is the already extracted Python source (entry cell or whole notebook,
    magics neutralised); ``method`` is the entry function to call after executing it
    (None: executing the code is the whole task). ``interpreter`` is the organisation's
    environment's python; ``env`` the complete, already filtered environment for the
    task process (no scheduler secrets). ``marker`` is a value unique to this run that
    the process layer puts into the task's environment to find every process it started.
    """

    run_id: int
    codops: str
    task: str
    code: str
    method: str | None
    filename: str  # shown in tracebacks: the notebook path relative to its repository
    interpreter: Path
    cwd: Path
    timeout: float
    grace: float
    marker: str
    env: dict[str, str] = field(default_factory=dict)
    payload: Any = None
    work_dir: Path | None = None  # a private folder for this run's control files
    die_with_scheduler: bool = False  # replicas: the task dies if its scheduler is killed


class TaskExecutor(Protocol):
    def run(self, job: Job, sink: LogSink, cancel: threading.Event) -> Outcome:
        """Run ``job`` to its end; on ``cancel`` end it as on a timeout (ABANDONED)."""
        ...
