"""A sandbox started ahead for a loop's next run, waiting for its request.

Starting a sandbox (bubblewrap, its namespaces and mounts, the chain of processes that
keeps a run's protections, the private copy of the checkout, the interpreter) costs about
ten milliseconds, most of a short task's overhead. A loop runs one task at a time, so while
one runs it starts the sandbox of the next (``Loop``), and that run only sends its request.

What makes that safe:

- **Exact match.** A sandbox started ahead serves a run only if the run's own command line
  (bubblewrap's options, every folder shown, the interpreter and its arguments), its limits
  and its environment, but for the ``PEACH_*`` variables, are those it was started with;
  otherwise it is ended and the run starts cold. The command line names no run (the run's
  folders are the sandbox's own "slot" folders, the working directory comes in the request),
  so a loop's sandbox serves whichever task of the same organisation and checkout comes next.
- **Fresh, and used once.** It is started for one run, after the loop's previous run has
  its own sandbox, and ended with that run; nothing of another run is in it (its own
  private copy, ``/tmp``, ``HOME``, folders and cgroup).
- **Its own, small limits while it waits.** It waits in a cgroup of its own with only what an
  idle interpreter and the private copy need (``waiting_limits``). The organisation's limits
  are put in force by the kernel when it takes its request, which is after the previous
  run's group is gone: an organisation never holds twice its memory limit.
- **Modules imported ahead, of its own environment only** (``preload.py``): while it waits
  it imports the next task's own imports that its standard library or site-packages hold
  (never a name of the run's folder, nor anything when the notebook writes or ``%run``s
  files), so a notebook's numpy or matplotlib is loaded before its run starts. Importing
  more than the standard library, it waits with half the run's memory and cpus instead of
  the small share.
- **It must say it took the request.** ``bootstrap.py`` writes one byte on a pipe of its own
  after it read the request and before any of the task's code runs. A sandbox that ended
  without it (killed, out of memory while waiting, a failed copy) never fails the run: the
  run starts cold. None of the task's code can have run in it.

``PEACH_*`` variables (the run id, task, version, trigger folder, the run's marker) and the
working directory are sent in the request; bootstrap.py puts them in place before the task.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..trees import walk_tree
from .cgroups import Limits, RunGroup

if TYPE_CHECKING:
    from .sandbox import Sandbox
    from .spawn import ProcessSpec

log = logging.getLogger(__name__)

# What a waiting sandbox may use besides its private copy: bubblewrap, two shells, setpriv
# and an interpreter that imported bootstrap.py (about 15 MiB measured), with room to spare.
WAITING_MEMORY_BYTES = 64 << 20
WAITING_PIDS = 32  # launcher/bubblewrap x2, init, setpriv->shell->interpreter, the copy's shell and cp
REQUEST_ENV_PREFIX = "PEACH_"  # per-run variables (and the run's marker): sent with the request


def waiting_limits(full: Limits, copy_bytes: int, preloading: bool = False) -> Limits | None:
    """A waiting sandbox's limits: enough for an idle interpreter and the private copy, and
    at most half the run's memory, so the organisation's run and its next sandbox together
    hold at most 1.5 times its limit. None: the checkout is too large to start ahead.

    ``preloading``: it imports the next task's modules of its environment while the run
    works (``preload.py``): half the run's memory and half its cpus, so that together they
    still hold at most 1.5 times the organisation's limits."""
    memory, cpus = None, full.cpus
    if full.memory_bytes is not None:
        memory = WAITING_MEMORY_BYTES + copy_bytes
        if memory > full.memory_bytes // 2:
            return None
        if preloading:
            memory = full.memory_bytes // 2
    if preloading and cpus is not None:
        cpus = cpus / 2
    pids = WAITING_PIDS if full.pids is None else min(full.pids, WAITING_PIDS)
    return Limits(memory_bytes=memory, cpus=cpus, pids=pids)


@functools.lru_cache(maxsize=256)
def copy_bytes(checkout: Path | None) -> int:
    """What the private copy of ``checkout`` takes on its tmpfs: whole pages per file.
    Checkouts never change (one per commit), so each is measured once."""
    if checkout is None:
        return 0
    total = 0
    for here, dirs, files in walk_tree(checkout):  # a repository's folders may go 1,500 deep
        for name in dirs + files:
            with contextlib.suppress(OSError):
                total += -(-os.lstat(os.path.join(here, name)).st_size // 4096) * 4096
    return total


def key(sandbox: "Sandbox", spec: "ProcessSpec") -> tuple:
    """What must be equal for a run to use a sandbox started with ``spec``."""
    assert spec.plan is not None
    base = tuple(sorted((k, v) for k, v in spec.env.items() if not k.startswith(REQUEST_ENV_PREFIX)))
    line = sandbox.command(spec.plan, spec.argv, spec.cwd, None, copy_beside=spec.copy_beside)
    return tuple(line), spec.plan.limits, base


class WarmSandbox:
    """One sandbox started ahead: ``start``, then either ``hand_over`` (once) or ``discard``."""

    def __init__(self, sandbox: "Sandbox", key: tuple, full: Limits, group: RunGroup,
                 proc: subprocess.Popen[bytes], ack_fd: int) -> None:
        self.sandbox, self.key, self.full = sandbox, key, full
        self.group, self.proc, self.ack_fd = group, proc, ack_fd
        self.state = "waiting"  # -> "taken" (the run owns it) or "ended"

    @classmethod
    def start(cls, sandbox: "Sandbox", spec: "ProcessSpec", group_name: str,
              preload: tuple[str, ...] = (), shell: bool = False) -> "WarmSandbox | None":
        """Start ``spec`` (its ``PEACH_*`` variables are not used: the run sends its own) in
        a new group ``group_name`` with ``waiting_limits``; None when it cannot wait that way.
        It imports the modules ``preload`` names while it waits (``preload.py``); ``shell``:
        one that asks IPython for the shell gets it, as it would in the run (the notebook
        uses magics). Raises ``OSError`` when the sandbox cannot start."""
        from .spawn import child_env

        assert spec.plan is not None and spec.copy_beside
        full = spec.plan.limits
        # The standard library's modules fit in the small limits; an environment's may not.
        heavy = any(name.partition(".")[0] not in sys.stdlib_module_names for name in preload)
        waiting = waiting_limits(full, copy_bytes(spec.plan.private_copy), preloading=heavy)
        if waiting is None:
            return None
        group = sandbox.cgroups.create(group_name, waiting)
        ack_read, ack_write = os.pipe2(os.O_CLOEXEC)
        try:
            base = {k: v for k, v in spec.env.items() if not k.startswith(REQUEST_ENV_PREFIX)}
            env = child_env(spec.marker, base)
            ahead = [*(["--shell"] if shell else []), "--preload", ",".join(preload)] if preload else []
            argv = sandbox.command(spec.plan, [*spec.argv, "--ack", str(ack_write), *ahead], spec.cwd, group,
                                   copy_beside=True)
            # Started by the loop's thread: bubblewrap's --die-with-parent follows that thread.
            proc = subprocess.Popen(argv, cwd=spec.cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True, pass_fds=(ack_write,))
        except BaseException:
            os.close(ack_read)
            group.remove()
            raise
        finally:
            os.close(ack_write)
        return cls(sandbox, key(sandbox, spec), full, group, proc, ack_read)

    def matches(self, spec: "ProcessSpec") -> bool:
        return self.state == "waiting" and spec.plan is not None and key(self.sandbox, spec) == self.key

    def hand_over(self, request: bytes, deadline: float, cancel: threading.Event | None,
                  then: Callable[[], None] | None = None,
                  run_group_name: str | None = None) -> tuple[str, threading.Thread | None]:
        """Give the run's limits, then its request; wait until the sandbox says it took it.

        Its cgroup takes the run's name (``run_group_name``), as a cold run's has.
        Returns ``("accepted" | "ended" | "timeout" | "cancelled", stdin writer thread)``.
        "ended": it ended without taking the request (nothing of the task ran); it is
        cleaned up and the run must start cold. Otherwise the sandbox is the run's, whatever
        else happens: ``then`` runs once the request is written (the loop starts the next
        sandbox there, beside this one reading its request).
        """
        from .spawn import _feed, _feed_now

        assert self.state == "waiting"
        self.state = "taken"
        writer = None
        try:
            self.group.set_limits(self.full)
        except OSError as exc:  # its group is gone: it cannot be this run's
            log.warning("sandbox started ahead in %s cannot get its run's limits: %s", self.group.name, exc)
            self.end()
            return "ended", None
        assert self.proc.stdin is not None
        rest = _feed_now(self.proc.stdin, request)
        if rest:
            writer = threading.Thread(target=_feed, args=(self.proc.stdin, rest), daemon=True)
            writer.start()
        if then is not None:
            try:
                then()
            except Exception:  # the next run's business: it starts cold; this one goes on
                log.exception("starting the next sandbox ahead failed")
        how = self._wait_ack(deadline, cancel)
        if how == "accepted" and run_group_name:
            # Named by its run from now on, as a run's own group is. Only now: until its
            # launcher joined the group (which the acknowledgement implies) it writes to the
            # group's files by their old path.
            try:
                self.group.rename(run_group_name)
            except OSError as exc:  # a name in use (a group left busy): it keeps its own
                log.warning("cannot rename cgroup %s to %s: %s", self.group.name, run_group_name, exc)
        if how == "ended":
            self.end()
            if writer is not None:
                writer.join(1.0)
            return how, None
        return how, writer

    def _wait_ack(self, deadline: float, cancel: threading.Event | None) -> str:
        poller = select.poll()
        poller.register(self.ack_fd, select.POLLIN)
        cancel_fd = cancel.fileno() if cancel is not None and hasattr(cancel, "fileno") else None
        if cancel_fd is not None:
            poller.register(cancel_fd, select.POLLIN)
        try:
            while True:
                if cancel is not None and cancel.is_set():
                    return "cancelled"
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return "timeout"
                wait = remaining if cancel is None or cancel_fd is not None else min(remaining, 0.05)
                for fd, _ in poller.poll(max(1, int(wait * 1000))):
                    if fd == self.ack_fd:
                        # A byte: it took the request. End of file: every holder of the pipe
                        # (the sandbox's processes) has ended without writing it.
                        return "accepted" if os.read(self.ack_fd, 1) else "ended"
        finally:
            os.close(self.ack_fd)
            self.ack_fd = -1

    def discard(self) -> None:
        """End it, unless a run took it (then the run ends it); safe to call more than once."""
        if self.state == "waiting":
            self.end()

    def end(self) -> None:
        """Kill it and remove its group, whatever its state."""
        self.state = "ended"
        self.group.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # not in its group any more: cannot happen, but never hang
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        if self.ack_fd >= 0:
            os.close(self.ack_fd)
            self.ack_fd = -1
        self.group.remove()


@dataclass(frozen=True)
class Slot:
    """A run's own folders: its trigger folder and its executor's work folder."""

    triggers: Path
    work: Path
