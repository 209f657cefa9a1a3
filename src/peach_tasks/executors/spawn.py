"""What starting one task process takes, below the process layer: its spec, its
environment (the run's marker), and writing its request to its stdin.

A module of its own so that a sandbox started ahead (``warm.py``) can use these without
importing ``process.py``, which imports ``warm.py``.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from .sandbox import Sandbox, SandboxPlan

MARKER_ENV = "PEACH_TASKS_RUN"


@dataclass(frozen=True)
class ProcessSpec:
    """One process to run: ``timeout`` and ``grace`` are seconds, ``marker`` is unique
    to the run and lands in ``MARKER_ENV``; ``stdin_data`` is written then closed."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    timeout: float
    grace: float
    marker: str
    stdin_data: bytes | None = None
    die_with_parent: bool = False  # SIGKILL the process when the thread that started it dies
    # Run it inside this sandbox (its own namespaces and cgroup); None: a plain process.
    sandbox: Sandbox | None = None
    plan: SandboxPlan | None = None
    # In a sandbox with a private copy: the program waits for the copy (``Sandbox.command``).
    copy_beside: bool = False


def child_env(marker: str, env: dict[str, str]) -> dict[str, str]:
    """The environment a task process is started with: ``env``, its run's marker, unbuffered."""
    return {**env, MARKER_ENV: marker, "PYTHONUNBUFFERED": "1"}


def _feed_now(pipe: IO[bytes], data: bytes) -> bytes:
    """Write what the pipe takes without waiting and return the rest, for ``_feed`` in a
    thread; all of it written (a request fits the pipe's 64 KiB), the pipe is closed. This
    spares most runs a thread's start, which the child's own start made cost a millisecond."""
    fd = pipe.fileno()
    try:
        os.set_blocking(fd, False)
        written = os.write(fd, data)
    except BlockingIOError:
        written = 0
    except OSError:  # the child ended or closed its stdin early: its exit status tells
        written = len(data)
    if written < len(data):
        os.set_blocking(fd, True)
        return data[written:]
    with contextlib.suppress(OSError):
        pipe.close()
    return b""


def _feed(pipe: IO[bytes], data: bytes) -> None:
    # A child that ended or closed its stdin early: its exit status tells what happened.
    with contextlib.suppress(OSError), pipe:
        pipe.write(data)
