"""Run groups on this host's real cgroups: v1 controllers and the v2 hierarchy, where each exists.

This kind of machine mounts v1 ``memory``, ``pids`` and ``cpu``/``cpuacct`` and an empty v2
hierarchy beside them (no controllers: grouping and killing only); most production hosts
have v2 alone, with controllers. Each test runs on what the host has and says what it skips.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from peach_tasks.executors.cgroups import CgroupError, CgroupsV1, CgroupsV2, Limits, RunGroup, detect
from peach_tasks.executors.sandbox import LAUNCH

V2_MOUNTS = [Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")]


def v2_root() -> Path | None:
    for path in V2_MOUNTS:
        if (path / "cgroup.controllers").exists() and os.access(path, os.W_OK):
            return path
    return None


def join_and_run(group: RunGroup, code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -c code`` started inside ``group`` by the sandbox's own launcher."""
    files = [str(f) for f in group.procs_files()]
    return subprocess.run(["/bin/sh", "-c", LAUNCH, "t", "", str(len(files)), *files, sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=timeout)


def test_detect_uses_what_the_host_has() -> None:
    try:
        cgroups = detect(f"peach-test-{uuid.uuid4().hex[:6]}")
    except CgroupError as exc:
        pytest.skip(f"no usable cgroups here: {exc}")
    pure_v2 = (Path("/sys/fs/cgroup") / "cgroup.controllers").exists()
    assert cgroups.version == ("v2" if pure_v2 else "v1")


@pytest.fixture
def v1() -> Iterator[CgroupsV1]:
    cgroups = detect("peach-test")
    if not isinstance(cgroups, CgroupsV1):
        pytest.skip("this host has cgroup v2 only (its v2 tests run instead)")
    yield cgroups
    for base in set(cgroups.bases.values()):
        with contextlib.suppress(OSError):
            base.rmdir()


def test_v1_limits_usage_and_oom(v1: CgroupsV1) -> None:
    group = v1.create(f"mem-{uuid.uuid4().hex[:8]}", Limits(memory_bytes=128 << 20, cpus=0.5, pids=32))
    try:
        memory, pids, cpu = group.folders["memory"], group.folders["pids"], group.folders["cpu"]
        assert int((memory / "memory.limit_in_bytes").read_text()) == 128 << 20
        assert (pids / "pids.max").read_text().strip() == "32"
        assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "50000"
        done = join_and_run(group, "x = bytearray(300 << 20); print('survived')")
        assert done.returncode == -9 and "survived" not in done.stdout  # the kernel's OOM killer
        usage = group.usage()
        assert usage.oom_kills >= 1 and usage.peak_memory_bytes is not None
        assert 100 << 20 < usage.peak_memory_bytes <= 128 << 20
        assert usage.cpu_seconds is not None and usage.cpu_seconds > 0
    finally:
        group.kill()
        group.remove()
    assert not group.folders["memory"].exists()


def test_v1_pids_limit_stops_a_fork_loop_and_kill_ends_all(v1: CgroupsV1) -> None:
    group = v1.create(f"pids-{uuid.uuid4().hex[:8]}", Limits(pids=16))
    code = ("import subprocess, sys\n"
            "kids = []\n"
            "try:\n"
            "    for _ in range(100):\n"
            "        kids.append(subprocess.Popen(['sleep', '60'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))\n"
            "except OSError:\n"
            "    pass\n"
            "print(len(kids), flush=True)\n"
            "import os; os._exit(0)\n")  # leave them running
    try:
        done = join_and_run(group, code)
        started = int(done.stdout.strip())
        assert 0 < started < 16
        assert len(group.pids()) == started  # the leftovers, all still in the group
        assert group.kill() == started and group.pids() == set()
    finally:
        group.kill()
        group.remove()


def test_v2_groups_and_kills_and_says_when_controllers_are_missing() -> None:
    root = v2_root()
    if root is None:
        pytest.skip("no writable cgroup v2 hierarchy on this host")
    own = next(line.split(":", 2)[2] for line in Path("/proc/self/cgroup").read_text().splitlines()
               if line.startswith("0::"))
    cgroups = CgroupsV2(root / own.lstrip("/") / f"peach-test-{uuid.uuid4().hex[:6]}")
    group = cgroups.create("run-1", Limits())
    try:
        proc = subprocess.Popen(["/bin/sh", "-c", LAUNCH, "t", "", "1", str(group.procs_files()[0]),
                                 "/bin/sh", "-c", "sleep 60 & sleep 60 & wait"])
        deadline = time.monotonic() + 10
        while len(group.pids()) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(group.pids()) == 3 and proc.pid in group.pids()
        assert group.kill() == 3
        assert proc.wait(timeout=10) == -9 and group.pids() == set()
        assert group.usage().cpu_seconds is not None  # cpu.stat exists on every v2 group
        available = set((cgroups.base.parent / "cgroup.controllers").read_text().split())
        if "memory" in available:
            limited = cgroups.create("run-2", Limits(memory_bytes=64 << 20, pids=16, cpus=1))
            assert (limited.folder / "memory.max").read_text().strip() == str(64 << 20)
            assert (limited.folder / "pids.max").read_text().strip() == "16"
            limited.remove()
        else:
            with pytest.raises(CgroupError, match="memory.*not available.*Delegate=yes"):
                cgroups.create("run-2", Limits(memory_bytes=64 << 20))
    finally:
        group.kill()
        for sub in ("run-1", "run-2"):
            (cgroups.base / sub).exists() and (cgroups.base / sub).rmdir()
        cgroups.base.rmdir()


def test_v1_leftovers_are_found_in_every_hierarchy(v1: CgroupsV1) -> None:
    """A group that lost its memory folder (removed with a parent) is still found and removed."""
    prefix = f"left-{uuid.uuid4().hex[:6]}-"
    group = v1.create(prefix + "1", Limits(pids=16))
    group.folders["memory"].rmdir()
    found = v1.existing(prefix)
    assert [g.name for g in found] == [prefix + "1"]
    found[0].kill()
    found[0].remove()
    assert not any(folder.exists() for folder in group.folders.values())


def test_v1_limits_raised_and_lowered_in_place_as_the_kernel_reads_them(v1: CgroupsV1) -> None:
    """A sandbox started ahead waits in small limits and gets its run's in place (warm.py):
    with swap accounting the kernel keeps memory <= memory+swap at every write, so raising
    and lowering must each write the pair in the right order."""
    small, full = Limits(memory_bytes=64 << 20, cpus=0.5, pids=16), Limits(memory_bytes=512 << 20, cpus=2, pids=100)
    group = v1.create(f"raise-{uuid.uuid4().hex[:8]}", small)
    try:
        assert group.limits_in_force() == small
        group.set_limits(full)
        assert group.limits_in_force() == full
        memsw = group.folders["memory"] / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            assert int(memsw.read_text()) == 512 << 20  # no swap on top, raised with it
        done = join_and_run(group, "x = bytearray(200 << 20); print('fits now')")
        assert done.returncode == 0 and "fits now" in done.stdout  # the kernel holds the new limit
        group.set_limits(small)
        assert group.limits_in_force() == small
    finally:
        group.kill()
        group.remove()


def test_v1_group_renamed_keeps_its_processes_in_every_hierarchy(v1: CgroupsV1) -> None:
    """A sandbox started ahead takes its run's name once it took the request (warm.py)."""
    group = v1.create(f"warm-{uuid.uuid4().hex[:8]}", Limits(memory_bytes=64 << 20, pids=16))
    proc = subprocess.Popen(["/bin/sh", "-c", LAUNCH, "t", "", str(len(group.procs_files())),
                             *map(str, group.procs_files()), "/bin/sleep", "60"])
    try:
        deadline = time.monotonic() + 10
        while proc.pid not in group.pids() and time.monotonic() < deadline:
            time.sleep(0.01)
        new_name = f"run-{uuid.uuid4().hex[:8]}"
        group.rename(new_name)
        assert group.name == new_name and all(f.name == new_name for f in group.folders.values())
        assert group.pids() == {proc.pid}
        for line in Path(f"/proc/{proc.pid}/cgroup").read_text().splitlines():
            if any(c in line.split(":")[1].split(",") for c in ("memory", "pids")):
                assert line.endswith("/" + new_name), line
        assert group.limits_in_force().memory_bytes == 64 << 20
    finally:
        group.kill()
        proc.wait()
        group.remove()
