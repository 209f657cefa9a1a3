"""One cgroup per run: the kernel enforces the organisation's limits, measures what the run
used, and holds every process the run started, whatever it did with sessions, process
groups or its environment.

Both cgroup layouts are handled, because hosts differ: the unified v2 hierarchy (most
production hosts today) and the v1 controllers ``memory``, ``pids``, ``cpu``/``cpuacct``
(older hosts, and hosts that mount v2 empty beside v1). Run groups are made under the
scheduler's own cgroup, so whatever limits the host put on the scheduler's service hold
for its tasks too.

The launcher (a shell, before it execs the sandbox) writes ``0`` (itself) into
``procs_files()``; everything it starts is then born inside the group.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

CGROUP_MOUNTS = Path("/proc/self/mountinfo")
OWN_CGROUPS = Path("/proc/self/cgroup")
CPU_PERIOD_US = 100_000
_V1_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct")
_KILL_ROUNDS = 50


class CgroupError(OSError):
    """No run group can be made here; the message says why and what to do. An ``OSError``,
    so an executor reports it as a run that could not start."""


@dataclass(frozen=True)
class Limits:
    """What one run may use; ``None`` is unlimited."""

    memory_bytes: int | None = None
    cpus: float | None = None
    pids: int | None = None
    # Not the cgroup's: what the run's folders on the scheduler's disk may hold, which
    # run_process watches (SandboxPlan.watched).
    disk_bytes: int | None = None


@dataclass(frozen=True)
class Usage:
    """What a run used: peak memory (bytes), CPU time (seconds), and how many of its
    processes the kernel killed for want of memory."""

    peak_memory_bytes: int | None
    cpu_seconds: float | None
    oom_kills: int


class RunGroup(Protocol):
    name: str
    limits: Limits

    def procs_files(self) -> list[Path]:
        """Where a single-threaded process writes ``0`` (itself) to join the group, one per
        hierarchy."""
        ...

    def pids(self) -> set[int]:
        """Every process in the group, as seen from the scheduler's pid namespace."""
        ...

    def kill(self) -> int:
        """SIGKILL every process in the group until none is left; returns how many."""
        ...

    def usage(self) -> Usage:
        ...

    def set_limits(self, limits: Limits) -> None:
        """Put ``limits`` in force (a sandbox started ahead gets its run's limits this way)."""
        ...

    def limits_in_force(self) -> Limits:
        """The limits as the kernel holds them (read back from the group's files)."""
        ...

    def rename(self, name: str) -> None:
        """Give the group another name under the same parent; its processes stay in it."""
        ...

    def remove(self) -> None:
        """Delete the (emptied) group; a group still busy is left for the next start."""
        ...


class Cgroups(Protocol):
    """Makes run groups on one host layout."""

    version: str

    def create(self, name: str, limits: Limits) -> RunGroup:
        ...

    def existing(self, prefix: str) -> list[RunGroup]:
        """Run groups whose name starts with ``prefix`` (left by a scheduler that died)."""
        ...


# -- reading the host's layout ------------------------------------------------------------
def _mounts() -> list[tuple[str, Path, str, set[str]]]:
    """(mount root, mount point, fs type, super options) of every cgroup mount."""
    found = []
    for line in CGROUP_MOUNTS.read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        found.append((fields[3], Path(fields[4].replace("\\040", " ")), tail[0], set(tail[2].split(","))))
    return found


def _own_paths() -> dict[str, str]:
    """Controller (or ``""`` for v2) -> this process's cgroup path in that hierarchy."""
    own = {}
    for line in OWN_CGROUPS.read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            own[controller] = path
    return own


def _under(mount_root: str, point: Path, path: str) -> Path:
    """A cgroup path of /proc/self/cgroup as a folder under its mount point."""
    if mount_root != "/" and path.startswith(mount_root):
        path = path[len(mount_root):]
    return point / path.lstrip("/")


def detect(base_name: str) -> Cgroups:
    """This host's cgroups, with run groups under ``<own cgroup>/<base_name>``.

    Pure v2 (``cgroup.controllers`` at the top of /sys/fs/cgroup) uses v2; otherwise the v1
    controllers. Raises ``CgroupError`` when neither can hold a run's limits.
    """
    mounts = _mounts()
    own = _own_paths()
    v2 = [m for m in mounts if m[2] == "cgroup2"]
    v1 = {c: m for m in mounts if m[2] == "cgroup" for c in _V1_CONTROLLERS if c in m[3]}
    if v2 and not v1:
        root, point, _, _ = v2[0]
        return CgroupsV2(_under(root, point, own.get("", "/")) / base_name)
    if "memory" in v1 and "pids" in v1:
        dirs = {c: _under(m[0], m[1], own.get(c, "/")) / base_name for c, m in v1.items()}
        return CgroupsV1(dirs)
    raise CgroupError("no cgroup hierarchy with the memory and pids controllers is mounted; "
                      "limits need cgroups (v2, or v1 memory + pids)")


def _write(path: Path, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _keyed(path: Path) -> dict[str, int]:
    """A ``key value`` per line file (memory.events, cpu.stat, memory.oom_control)."""
    try:
        pairs = (line.split() for line in path.read_text().splitlines())
        return {p[0]: int(p[1]) for p in pairs if len(p) == 2 and p[1].lstrip("-").isdigit()}
    except OSError:
        return {}


def _procs(folder: Path) -> set[int]:
    """Pids in ``folder`` and every group below it."""
    found: set[int] = set()
    for here, _, _ in os.walk(folder):
        try:
            found.update(int(p) for p in Path(here, "cgroup.procs").read_text().split())
        except (OSError, ValueError):
            continue
    return found


def _kill_until_empty(group: RunGroup) -> int:
    killed: set[int] = set()
    for _ in range(_KILL_ROUNDS):
        members = group.pids()
        if not members:
            break
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.01)
    return len(killed)


def _rmdir_tree(folder: Path) -> bool:
    """Remove a group and the groups below it, deepest first; False if one stays busy."""
    if not folder.exists():
        return True
    for attempt in range(50):
        try:
            for here, subdirs, _ in sorted(os.walk(folder), key=lambda w: -len(w[0])):
                for sub in subdirs:
                    Path(here, sub).rmdir()
            folder.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            time.sleep(0.01 * (attempt + 1))  # the last killed processes are still exiting
    return False


# -- v2 -----------------------------------------------------------------------------------
class CgroupsV2:
    version = "v2"

    def __init__(self, base: Path) -> None:
        self.base = base
        self._ready = False
        self.enabled: set[str] = set()

    def _prepare(self) -> None:
        """Make the base group and hand it the controllers the host lets us use.

        v2 forbids controllers on a group that holds processes (but the root): if the
        scheduler's own group holds it, the scheduler moves into a leaf of its own first,
        as a service with a delegated cgroup does.
        """
        if self._ready:
            return
        parent = self.base.parent
        wanted = set((parent / "cgroup.controllers").read_text().split()) & {"memory", "pids", "cpu"}
        try:
            self._enable(parent, wanted)
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise CgroupError(f"cannot use cgroup {parent}: {exc.strerror}") from None
            leaf = parent / "peach-scheduler"
            leaf.mkdir(exist_ok=True)
            _write(leaf / "cgroup.procs", "0")  # this process, every thread with it
            self._enable(parent, wanted)
        self.base.mkdir(exist_ok=True)
        self._enable(self.base, wanted)
        self.enabled = wanted
        self._ready = True

    @staticmethod
    def _enable(folder: Path, controllers: set[str]) -> None:
        if controllers:
            _write(folder / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(controllers)))

    def create(self, name: str, limits: Limits) -> "RunGroupV2":
        try:
            self._prepare()
            folder = self.base / name
            folder.mkdir(exist_ok=True)
        except OSError as exc:
            raise CgroupError(f"cannot make cgroup {self.base / name}: {exc.strerror or exc}") from None
        group = RunGroupV2(name, limits, folder, self.enabled)
        group.apply()
        return group

    def existing(self, prefix: str) -> list[RunGroup]:
        if not self.base.is_dir():
            return []
        return [RunGroupV2(p.name, Limits(), p) for p in self.base.iterdir()
                if p.is_dir() and p.name.startswith(prefix)]


@dataclass
class RunGroupV2:
    name: str
    limits: Limits
    folder: Path
    enabled: set[str] = field(default_factory=set)

    def apply(self) -> None:
        enabled = self.enabled
        missing = []
        if self.limits.memory_bytes is not None:
            if "memory" in enabled:
                _write(self.folder / "memory.max", str(self.limits.memory_bytes))
                if (self.folder / "memory.swap.max").exists():
                    _write(self.folder / "memory.swap.max", "0")  # the limit is the run's, not swap's
            else:
                missing.append("memory")
        if self.limits.pids is not None:
            if "pids" in enabled:
                _write(self.folder / "pids.max", str(self.limits.pids))
            else:
                missing.append("pids")
        if self.limits.cpus is not None:
            if "cpu" in enabled:
                _write(self.folder / "cpu.max", f"{int(self.limits.cpus * CPU_PERIOD_US)} {CPU_PERIOD_US}")
            else:
                missing.append("cpu")
        if missing:
            raise CgroupError(f"the cgroup v2 controllers {', '.join(missing)} are not available to "
                              f"{self.folder.parent}; the host must delegate them (systemd: Delegate=yes)")

    def procs_files(self) -> list[Path]:
        return [self.folder / "cgroup.procs"]

    def pids(self) -> set[int]:
        return _procs(self.folder)

    def kill(self) -> int:
        members = self.pids()
        if members and (self.folder / "cgroup.kill").exists():
            _write(self.folder / "cgroup.kill", "1")  # atomic: a fork loop cannot outrun it
        return max(len(members), _kill_until_empty(self))

    def set_limits(self, limits: Limits) -> None:
        self.limits = limits
        self.apply()

    def rename(self, name: str) -> None:
        target = self.folder.with_name(name)
        os.rename(self.folder, target)
        self.name, self.folder = name, target

    def limits_in_force(self) -> Limits:
        quota = (self.folder / "cpu.max").read_text().split() if (self.folder / "cpu.max").exists() else []
        cpus = int(quota[0]) / int(quota[1]) if len(quota) == 2 and quota[0] != "max" else None
        return Limits(memory_bytes=_read_int(self.folder / "memory.max"), cpus=cpus,
                      pids=_read_int(self.folder / "pids.max"))

    def usage(self) -> Usage:
        cpu = _keyed(self.folder / "cpu.stat").get("usage_usec")
        return Usage(peak_memory_bytes=_read_int(self.folder / "memory.peak"),
                     cpu_seconds=None if cpu is None else cpu / 1e6,
                     oom_kills=_keyed(self.folder / "memory.events").get("oom_kill", 0))

    def remove(self) -> None:
        if not _rmdir_tree(self.folder):
            log.warning("cgroup %s is still busy; it is removed at the next start", self.folder)


# -- v1 -----------------------------------------------------------------------------------
class CgroupsV1:
    version = "v1"

    def __init__(self, bases: dict[str, Path]) -> None:
        self.bases = bases  # controller -> base folder (cpu and cpuacct may share one)

    def create(self, name: str, limits: Limits) -> "RunGroupV1":
        folders = {c: base / name for c, base in self.bases.items()}
        try:
            for folder in set(folders.values()):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CgroupError(f"cannot make cgroup {name} under {self.bases['memory']}: "
                              f"{exc.strerror or exc}") from None
        group = RunGroupV1(name, limits, folders)
        group.apply()
        return group

    def existing(self, prefix: str) -> list[RunGroup]:
        # Every hierarchy: one may have lost its group with a parent (a memory group removed
        # with the session that held it) while the others keep theirs.
        names = {p.name for base in set(self.bases.values()) if base.is_dir()
                 for p in base.iterdir() if p.is_dir() and p.name.startswith(prefix)}
        return [RunGroupV1(name, Limits(), {c: b / name for c, b in self.bases.items()}) for name in sorted(names)]


@dataclass
class RunGroupV1:
    name: str
    limits: Limits
    folders: dict[str, Path]

    def apply(self) -> None:
        memory = self.folders["memory"]
        if self.limits.memory_bytes is not None:
            value = str(self.limits.memory_bytes)
            if (memory / "memory.memsw.limit_in_bytes").exists():  # swap accounting on: no swap either
                # The kernel keeps memory <= memory+swap at every write: raise the pair
                # outer limit first, lower it inner limit first.
                now = _read_int(memory / "memory.limit_in_bytes")
                order = ("memory.memsw.limit_in_bytes", "memory.limit_in_bytes")
                for name in order if now is not None and self.limits.memory_bytes > now else order[::-1]:
                    _write(memory / name, value)
            else:
                _write(memory / "memory.limit_in_bytes", value)
        if self.limits.pids is not None:
            _write(self.folders["pids"] / "pids.max", str(self.limits.pids))
        if self.limits.cpus is not None:
            cpu = self.folders.get("cpu")
            if cpu is None:
                raise CgroupError("no cgroup v1 'cpu' controller is mounted; the cpus limit needs it "
                                  "(or set python.cpus to null)")
            _write(cpu / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(cpu / "cpu.cfs_quota_us", str(int(self.limits.cpus * CPU_PERIOD_US)))

    def procs_files(self) -> list[Path]:
        # ``tasks``, not ``cgroup.procs``: the launcher has one thread, and a recent kernel
        # moves the writing thread alone without its global write lock on every thread
        # group, whose price is RCU grace periods: 10 to 25 ms per run on a 2-core host.
        # (v2 has no such file for a domain group: it keeps cgroup.procs.)
        return [folder / "tasks" for folder in sorted(set(self.folders.values()))]

    def pids(self) -> set[int]:
        return _procs(self.folders["pids"])

    def kill(self) -> int:
        return _kill_until_empty(self)

    def set_limits(self, limits: Limits) -> None:
        self.limits = limits
        self.apply()

    def rename(self, name: str) -> None:
        moved: dict[Path, Path] = {}
        try:
            for folder in sorted(set(self.folders.values())):
                moved[folder] = folder.with_name(name)
                os.rename(folder, moved[folder])
        except OSError:
            for old, new in moved.items():  # all hierarchies keep one name
                with contextlib.suppress(OSError):
                    os.rename(new, old)
            raise
        self.name = name
        self.folders = {c: moved[f] for c, f in self.folders.items()}

    def limits_in_force(self) -> Limits:
        cpu = self.folders.get("cpu")
        quota = _read_int(cpu / "cpu.cfs_quota_us") if cpu is not None else None
        period = _read_int(cpu / "cpu.cfs_period_us") if cpu is not None else None
        return Limits(memory_bytes=_read_int(self.folders["memory"] / "memory.limit_in_bytes"),
                      cpus=quota / period if quota and quota > 0 and period else None,
                      pids=_read_int(self.folders["pids"] / "pids.max"))

    def usage(self) -> Usage:
        memory = self.folders["memory"]
        cpu_ns = _read_int(self.folders["cpuacct"] / "cpuacct.usage") if "cpuacct" in self.folders else None
        return Usage(peak_memory_bytes=_read_int(memory / "memory.max_usage_in_bytes"),
                     cpu_seconds=None if cpu_ns is None else cpu_ns / 1e9,
                     oom_kills=_keyed(memory / "memory.oom_control").get("oom_kill", 0))

    def remove(self) -> None:
        for folder in sorted(set(self.folders.values())):
            if not _rmdir_tree(folder):
                log.warning("cgroup %s is still busy; it is removed at the next start", folder)
