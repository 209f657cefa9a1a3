"""The contract between a loop and an executor."""

from __future__ import annotations

import os
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from ..model import Outcome
from .sandbox import Sandbox, SandboxPlan
from .warm import WarmSandbox

# A sink receives one captured log line at a time, already stamped with its UTC time
# ("2026-11-24T22:30:01.123Z text"), without the trailing newline. It must be cheap
# and thread-safe: the process layer calls it from its reader thread. A sink whose
# ``takes_blocks`` attribute is true (the store's LogWriter.write) also takes several such
# lines in one call, joined by "\n": the reader then hands it each read's lines at once.
LogSink = Callable[[str], None]


class CancelEvent(threading.Event):
    """A ``threading.Event`` that a process wait can poll beside the child's pidfd.

    ``set()`` also makes ``fileno()`` readable, so a waiting executor wakes the moment a
    task is cancelled instead of looking at the event in short slices: with hundreds of
    loops in one replica those slices were thousands of wake-ups a second, each fighting
    for the interpreter lock with the thread that renews the leases.
    """

    def __init__(self) -> None:
        super().__init__()
        self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        weakref.finalize(self, os.close, self._fd)

    def fileno(self) -> int:
        return self._fd

    def set(self) -> None:
        super().set()
        os.eventfd_write(self._fd, 1)

    def clear(self) -> None:
        super().clear()
        try:
            os.eventfd_read(self._fd)
        except BlockingIOError:
            pass  # it was not set


@dataclass(frozen=True)
class Job:
    """Everything an executor needs to run one task once.

    ``code`` is the already extracted Python source (entry cell or whole notebook, as
    one piece; ``program`` holds its cells as they run); ``method`` is the entry function
    to call after executing it (None: executing the code is the whole task). ``interpreter`` is the organisation's
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
    # The notebook's cells as the task process runs them (notebook.ExtractedCode.request());
    # None: ``code`` is run as one piece.
    program: dict[str, Any] | None = None
    # The run's sandbox and what it shows (the loop's part); None: a plain process.
    sandbox: Sandbox | None = None
    plan: SandboxPlan | None = None
    # A sandbox started ahead for this run (the executor uses or ends it) and what to call
    # once the task has its request (the loop starts the next one then); see warm.py.
    warm: "WarmSandbox | None" = None
    on_started: Callable[[], None] | None = None

    def sandbox_plan(self, work_dir: Path, read_only: tuple[Path, ...] = ()) -> SandboxPlan | None:
        """The loop's plan plus what every executor needs: the interpreter's installation,
        peach-tasks' own bootstrap, and ``work_dir`` (request and result files) writable."""
        if self.sandbox is None or self.plan is None:
            return None
        from .sandbox import PACKAGE_DIR, interpreter_home

        self.sandbox.give(work_dir, self.plan.user)
        return self.plan.with_paths(read_only=(interpreter_home(self.interpreter), PACKAGE_DIR, *read_only),
                                    writable=(work_dir,), watched=(work_dir,))


class TaskExecutor(Protocol):
    def run(self, job: Job, sink: LogSink, cancel: threading.Event) -> Outcome:
        """Run ``job`` to its end; on ``cancel`` end it as on a timeout (ABANDONED)."""
        ...
