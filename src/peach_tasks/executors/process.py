"""Start one task process, stream its output line by line, and kill all it started.

A task may start children, grandchildren, daemons that call ``setsid``; none of them
may outlive the run. Every process of a run is found in three ways, because each alone
misses some: the process group (the task gets its own session), the tree of
descendants (gathered while the task still lives, as orphans lose their parent), and
a marker variable put into the task's environment, which every process it starts
inherits even after it changed session and was reparented to init.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import signal as _signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import psutil

from .base import CancelEvent, LogSink
from .cgroups import RunGroup, Usage
from .disk_watch import EVERY_SECONDS, DiskWatch, watch_for
from .output import MAX_LINE_BYTES, READ_BYTES, Reader, utc_stamp  # noqa: F401 - re-exported
from .spawn import MARKER_ENV, ProcessSpec, _feed, _feed_now, child_env  # noqa: F401 - re-exported
from .warm import WarmSandbox

_CANCEL_POLL = 0.05  # how late a plain Event's cancel may be noticed (a CancelEvent: at once)
_KILL_WAIT = 2.0  # how long a SIGKILLed process may take to disappear
_MAX_ROUNDS = 20  # a fork loop could refill the marker scan forever
_PROC = Path("/proc")

log = logging.getLogger(__name__)


_PR_SET_PDEATHSIG = 1
_prctl = None
if sys.platform.startswith("linux"):
    import ctypes

    # Resolved here, before any fork: the child may only make the bare system call.
    _prctl = ctypes.CDLL(None, use_errno=True).prctl


def _die_with_parent() -> None:
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(_signal.SIGKILL), 0, 0, 0)


@dataclass(frozen=True)
class ProcessResult:
    """How the process ended. ``exit_code`` is set when it exited, ``signal`` when a
    signal ended it; ``leftovers_killed`` counts the other processes that had to be
    killed (descendants on a timeout, background processes after a normal exit)."""

    exit_code: int | None
    signal: int | None
    timed_out: bool
    cancelled: bool
    pid: int
    leftovers_killed: int
    usage: Usage | None = None  # what the run's cgroup measured (sandboxed runs)
    warm: bool = False  # it ran in a sandbox started ahead (warm.py)
    over_disk: str | None = None  # why it was ended for what it put on the scheduler's disk (disk_watch.py)


def run_process(spec: ProcessSpec, sink: LogSink, cancel: threading.Event | None = None,
                warm: WarmSandbox | None = None, on_started: Callable[[], None] | None = None) -> ProcessResult:
    """Run ``spec`` to its end, every output line to ``sink``; kill all it left behind.

    The timeout is enforced here, never trusted to the child. On a timeout or when
    ``cancel`` is set, the task and every process it started get SIGTERM, then SIGKILL
    after ``spec.grace`` seconds. Raises ``OSError`` when the process cannot start.

    ``warm``: a sandbox started ahead (``warm.py``). It runs the request if it was started
    exactly as ``spec`` would be and takes it; otherwise it is ended and ``spec`` starts
    cold. It is this call's either way. ``on_started`` runs once the task has its request.
    """
    deadline = time.monotonic() + max(spec.timeout, 0.0)
    group: RunGroup | None = None
    proc: subprocess.Popen[bytes] | None = None
    writer = None
    took = False
    if warm is not None:
        if spec.sandbox is not None and spec.stdin_data is not None and warm.matches(spec):
            try:
                how, writer = warm.hand_over(spec.stdin_data, deadline, cancel, on_started,
                                             spec.plan.group_name if spec.plan is not None else None)
            except BaseException:
                warm.end()  # our own failure (KeyboardInterrupt, say): never leave it running
                raise
            on_started = None  # it ran, whatever the sandbox did next
            if how == "ended":
                sink(f"{utc_stamp()} peach-tasks: the sandbox started ahead for this run ended before it took "
                     "the request (none of the task ran there); starting a new one")
            else:
                proc, group, took = warm.proc, warm.group, True
        else:
            warm.discard()  # another plan (settings, definitions or the task changed): never used
    if proc is None:
        proc, group = _start(spec)
        if spec.stdin_data is not None:
            assert proc.stdin is not None
            rest = _feed_now(proc.stdin, spec.stdin_data)
            if rest:
                # A thread, so a child that never reads its stdin cannot block the timeout.
                writer = threading.Thread(target=_feed, args=(proc.stdin, rest), daemon=True)
                writer.start()
    assert proc.stdout is not None
    reader = Reader(proc.stdout.fileno(), sink)
    reader.start()
    if on_started is not None:
        on_started()

    def marker_scan() -> list[psutil.Process]:
        return find_marked(spec.marker, exact=True)

    def sandbox_scan() -> list[psutil.Process]:
        # Everything in the run's cgroup but bubblewrap's outer process: killing that one
        # first would end the sandbox at once, without the task's grace period.
        assert group is not None
        return _processes(group.pids() - {proc.pid})

    disk = watch_for(spec.plan)
    try:
        how = _wait_for_exit(proc, deadline - time.monotonic(), cancel, disk, group)
        killed = 0
        if how != "exited":
            why = {"timeout": f"timed out after {spec.timeout:g} s", "disk": disk and disk.reason}.get(
                how, "the scheduler is stopping")
            sink(f"{utc_stamp()} peach-tasks: {why}; stopping the task and every process it started")
            # Past its disk bound a run gets no grace: it could go on writing through it.
            grace = 0.0 if how == "disk" else spec.grace
            if group is not None:
                killed = _terminate(sandbox_scan, grace)
            else:
                tree = _tree(proc.pid)  # before any signal: orphans lose their parent link
                killed = _terminate(marker_scan, grace, extra=tree, pgid=proc.pid, skip=proc.pid)
        returncode = proc.wait()  # reaping only now kept the group id from being reused
        if group is not None:
            # The kernel ends the sandbox's processes with its PID namespace; the group
            # catches anything that still stands after that.
            leftovers = _drain(group)
        else:
            # Whatever still runs (a background child, or one started during the kill)
            # carries the marker, or sits in the task's group if it dropped the marker.
            leftovers = _terminate(lambda: marker_scan() + _group_members(proc.pid), spec.grace)
    except BaseException:
        # Our own failure (a sink that raised, KeyboardInterrupt): never leave the task.
        if group is not None:
            group.kill()
        else:
            _terminate(marker_scan, 0, extra=_tree(proc.pid), pgid=proc.pid)
        proc.wait()
        raise
    finally:
        usage = group.usage() if group is not None else None
        if group is not None:
            group.remove()
    if leftovers and how == "exited":
        counted = "1 process" if leftovers == 1 else f"{leftovers} processes"
        sink(f"{utc_stamp()} peach-tasks: killed {counted} the task left running")
    _finish(reader, writer, proc, sink, wait=max(1.0, spec.grace))
    exit_code, signal = (returncode, None) if returncode >= 0 else (None, -returncode)
    if group is not None and returncode > 128 and returncode - 128 in _SIGNALS:
        # bubblewrap exits with 128 + N when the task was killed by signal N.
        exit_code, signal = None, returncode - 128
    return ProcessResult(
        exit_code=exit_code,
        signal=signal,
        timed_out=how == "timeout",
        cancelled=how == "cancelled",
        pid=proc.pid,
        leftovers_killed=killed + leftovers,
        usage=usage,
        warm=took,
        # Looked at once more after its end: a task that wrote it all between two looks.
        over_disk=disk.reason if disk is not None and (how == "disk" or how == "exited" and disk.over()) else None,
    )


def _start(spec: ProcessSpec) -> tuple[subprocess.Popen[bytes], RunGroup | None]:
    """Start ``spec``'s process (in its sandbox and new cgroup, if it has one)."""
    group: RunGroup | None = None
    argv = spec.argv
    if spec.sandbox is not None and spec.plan is not None:
        group = spec.sandbox.create_group(spec.plan)  # CgroupError is an OSError: the run cannot start
        argv = spec.sandbox.command(spec.plan, spec.argv, spec.cwd, group, copy_beside=spec.copy_beside)
    try:
        proc = subprocess.Popen(
            argv,
            cwd=spec.cwd,
            env=child_env(spec.marker, spec.env),
            stdin=subprocess.DEVNULL if spec.stdin_data is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # one pipe keeps stdout and stderr in order
            start_new_session=True,
            # Costs about a millisecond per start, so only where another replica may take the
            # loop over: then a task must not outlive a scheduler killed with SIGKILL. (A
            # sandbox dies with the scheduler anyway: bubblewrap's --die-with-parent.)
            preexec_fn=_die_with_parent if spec.die_with_parent and group is None else None,
        )
    except BaseException:
        if group is not None:
            group.remove()
        raise
    return proc, group


def find_marked(marker_prefix: str, *, exact: bool = False) -> list[psutil.Process]:
    """Processes whose ``MARKER_ENV`` starts with ``marker_prefix`` (equals it if ``exact``).

    Never this process itself. Processes whose environment cannot be read (other
    users', zombies, gone meanwhile) are skipped.
    """
    needle = f"\0{MARKER_ENV}={marker_prefix}".encode()
    if exact:
        needle += b"\0"
    found = []
    for pid in sorted(set(_candidate_pids(needle)) - {os.getpid()}):
        try:
            proc = psutil.Process(pid)
            # Check again through the object: it pins the process's start time, so a
            # pid reused since the scan cannot be mistaken for the task's process.
            value = proc.environ().get(MARKER_ENV)
        except psutil.Error:
            continue
        if value is not None and (value == marker_prefix if exact else value.startswith(marker_prefix)):
            found.append(proc)
    return found


def kill_marked(marker_prefix: str, grace: float, extra: Iterable[psutil.Process] = ()) -> int:
    """Kill ``extra`` and every process ``find_marked(marker_prefix)`` finds.

    SIGTERM first, SIGKILL after ``grace`` seconds for survivors, then scan again and
    SIGKILL until nothing is left. Returns how many processes were signalled.
    """
    return _terminate(lambda: find_marked(marker_prefix), grace, extra=list(extra))



def _wait_for_exit(proc: subprocess.Popen[bytes], timeout: float, cancel: threading.Event | None,
                   disk: DiskWatch | None = None, group: RunGroup | None = None) -> str:
    """``exited``, ``timeout``, ``cancelled`` or ``disk`` (``disk.over()``, asked every
    ``EVERY_SECONDS``); the child is left unreaped if possible.

    A pidfd wakes us the moment the child exits (Popen.wait with a timeout polls with
    growing sleeps, which adds tens of ms to every short task). A ``CancelEvent`` is
    polled with it, so a cancel wakes us too; a plain Event can only be looked at, so
    then the wait is cut in short slices.
    """
    deadline = time.monotonic() + max(timeout, 0.0)
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        pidfd = None
    cancel_fd = cancel.fileno() if isinstance(cancel, CancelEvent) else None
    try:
        while True:
            if cancel is not None and cancel.is_set():
                return "exited" if _exited(proc, pidfd, 0) else "cancelled"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "exited" if _exited(proc, pidfd, 0) else "timeout"
            slice_ = _CANCEL_POLL if cancel is not None and (cancel_fd is None or pidfd is None) else 3600.0
            if disk is not None:
                slice_ = min(slice_, EVERY_SECONDS)
            if _exited(proc, pidfd, min(remaining, slice_), cancel_fd):
                return "exited"
            if disk is not None and disk.over(group.pids() if group is not None else ()):
                return "exited" if _exited(proc, pidfd, 0) else "disk"
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _exited(proc: subprocess.Popen[bytes], pidfd: int | None, wait: float, cancel_fd: int | None = None) -> bool:
    """Whether the child exited within ``wait`` seconds; a readable ``cancel_fd`` ends the wait early."""
    if pidfd is None:
        try:
            proc.wait(timeout=wait)
            return True
        except subprocess.TimeoutExpired:
            return False
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    if cancel_fd is not None:
        poller.register(cancel_fd, select.POLLIN)
    return any(fd == pidfd for fd, _ in poller.poll(math.ceil(wait * 1000)))


def _candidate_pids(needle: bytes) -> list[int]:
    """Pids whose environment block contains ``needle`` (``\\0NAME=value...``).

    Reading /proc directly costs well under a millisecond for a few hundred
    processes; it runs after every task, so no psutil object per process.
    """
    if not _PROC.is_dir():
        return psutil.pids()  # no /proc: find_marked checks each one through psutil
    pids = []
    for name in os.listdir(_PROC):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as handle:
                block = handle.read()
        except OSError:  # other users' processes, or gone meanwhile
            continue
        # The block is NUL separated and ends with a NUL; framing it on both sides
        # lets one ``in`` test match a whole entry (or an entry's start).
        if needle in b"\0" + block:
            pids.append(int(name))
    return pids


_SIGNALS = {int(s) for s in _signal.Signals}
_DRAIN_SECONDS = 1.0


def _drain(group: RunGroup) -> int:
    """Wait for a sandbox's last processes to finish exiting (its PID namespace is being
    torn down: about a millisecond), then kill whatever still stands; returns that count."""
    deadline = time.monotonic() + _DRAIN_SECONDS
    while group.pids() and time.monotonic() < deadline:
        time.sleep(0.001)
    return group.kill()


def _processes(pids: Iterable[int]) -> list[psutil.Process]:
    found = []
    for pid in pids:
        try:
            found.append(psutil.Process(pid))
        except psutil.Error:
            continue
    return found


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _group_members(pgid: int) -> list[psutil.Process]:
    """Live processes of group ``pgid``; costs one syscall when the group is empty."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return []
    members = []
    for pid in psutil.pids():
        try:
            if pid != os.getpid() and os.getpgid(pid) == pgid:
                members.append(psutil.Process(pid))
        except (OSError, psutil.Error):
            continue
    return [p for p in members if _alive(p)]



def _terminate(
    scan: Callable[[], list[psutil.Process]],
    grace: float,
    extra: list[psutil.Process] | None = None,
    pgid: int | None = None,
    skip: int | None = None,
) -> int:
    """SIGTERM ``extra``, the group and what ``scan`` finds; SIGKILL what survives
    ``grace``; scan again until nothing is left. Returns how many processes other
    than ``skip`` were signalled."""
    targets = {p for p in [*(extra or []), *scan()] if _alive(p)}
    if not targets and pgid is None:
        return 0  # the usual case after a clean exit: nothing to wait for
    signalled: set[psutil.Process] = set()
    _signal_group(pgid, _signal.SIGTERM)
    signalled |= _send(targets, _signal.SIGTERM)
    _wait_gone(targets, grace)
    for _ in range(_MAX_ROUNDS):
        _signal_group(pgid, _signal.SIGKILL)
        survivors = {p for p in [*signalled, *scan()] if _alive(p)}
        if not survivors:
            break
        signalled |= _send(survivors, _signal.SIGKILL)
        _wait_gone(survivors, _KILL_WAIT)
    return len({p.pid for p in signalled} - {skip})


def _signal_group(pgid: int | None, sig: int) -> None:
    if pgid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)


def _send(procs: Iterable[psutil.Process], sig: int) -> set[psutil.Process]:
    sent = set()
    for proc in procs:
        try:
            proc.send_signal(sig)  # psutil refuses if the pid was reused meanwhile
            sent.add(proc)
        except psutil.Error:
            pass
    return sent


def _alive(proc: psutil.Process) -> bool:
    # A zombie is dead for our purpose: it only waits for its parent (or init) to reap.
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait_gone(procs: Iterable[psutil.Process], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = [p for p in procs if _alive(p)]
    delay = 0.002
    while pending and time.monotonic() < deadline:
        time.sleep(min(delay, max(deadline - time.monotonic(), 0)))
        delay = min(delay * 2, 0.05)
        pending = [p for p in pending if _alive(p)]



def _finish(
    reader: Reader, writer: threading.Thread | None, proc: subprocess.Popen[bytes], sink: LogSink, wait: float
) -> None:
    reader.join(wait)
    if reader.is_alive():
        # Someone outside every scan (a process that dropped the marker and left the
        # group) still holds the pipe. Stop reporting; the daemon thread ends at EOF.
        reader.detached = True
        sink(f"{utc_stamp()} peach-tasks: stopped capturing output; a process the task started still holds it")
    else:
        assert proc.stdout is not None
        proc.stdout.close()
    if writer is not None:
        writer.join(wait)
