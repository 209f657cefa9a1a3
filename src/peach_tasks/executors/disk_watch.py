"""How much a running task has put in its folders on the scheduler's disk.

A sandboxed run can write in two folders of the scheduler's ``state_dir``: its run folder
(request, result, outputs) and its trigger folder. Everything else it may write is in
memory (its working folder's copy, ``/tmp``, ``HOME``: counted against its memory limit)
or a mount the operator chose. Left unbounded, one organisation's task could fill the disk
the store and every other organisation's runs share. ``run_process`` asks ``over()`` every
``EVERY_SECONDS`` while the task runs, and once after it; past the limit the run is killed at
once (no kill grace, through which it could go on writing). Between two looks a task can
still write what the disk takes in that time.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from ..trees import tree_usage

if TYPE_CHECKING:
    from .sandbox import SandboxPlan

EVERY_SECONDS = 0.25
# More entries than a run's own files ever make (its outputs are at most 10,000): the walk
# that counts them stays short, and past this the run is ended too.
MAX_ENTRIES = 20_000


class DiskWatch:
    """``folders`` may hold at most ``limit`` bytes and ``MAX_ENTRIES`` entries together:
    what their names show, and the files of their disk the run's processes hold open or
    mapped after removing them (or made nameless, ``O_TMPFILE``), which take the disk as long
    as they are held and no name shows (the third hostile pass wrote 3 GiB that way)."""

    def __init__(self, folders: tuple[Path, ...], limit: int) -> None:
        self.folders, self.limit = folders, limit
        self.reason: str | None = None  # why the run was ended, once over() said so
        self.devices = set()
        for folder in folders:
            try:
                self.devices.add(os.stat(folder).st_dev)
            except OSError:
                continue

    def over(self, pids: Iterable[int] = ()) -> bool:
        """Whether the folders (and what ``pids``, the run's processes, hold of their disk
        without a name) are past the bounds; then ``reason`` says which."""
        used = entries = 0
        for folder in self.folders:
            size, count = tree_usage(folder, MAX_ENTRIES - entries)
            used, entries = used + size, entries + count
            if used > self.limit or entries > MAX_ENTRIES:
                break
        if used <= self.limit and entries <= MAX_ENTRIES and self.devices:
            used += held_without_name(pids, self.devices)
        where = "its run and trigger folders on the scheduler's disk"
        if used > self.limit:
            self.reason = (f"the run held more than {size_text(self.limit)} in {where} (python.disk in scheduler.yaml, "
                           "per organisation under organisations.<codops>.python.disk); write data to the "
                           "working folder, /tmp or a mount instead")
        elif entries > MAX_ENTRIES:
            self.reason = f"the run made more than {MAX_ENTRIES:,} files and folders in {where}"
        return self.reason is not None


MAX_HELD_LOOKS = 50_000  # open files and mappings looked at per look: a flood of them stops the count


def held_without_name(pids: Iterable[int], devices: set[int]) -> int:
    """Bytes of regular files on ``devices`` that no folder names any more (removed while
    open, or made with ``O_TMPFILE``) and that ``pids`` still hold: as open files
    (``/proc/PID/fd``) or mappings (``/proc/PID/maps``, read through ``map_files``, which only
    root may). Each file once. Never raises."""
    used, seen, looks = 0, set(), 0
    for pid in pids:
        held: list[str] = []
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                looks += 1
                if looks > MAX_HELD_LOOKS:
                    return used
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}").endswith(" (deleted)"):
                        held.append(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
            with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as maps:
                for line in maps:
                    looks += 1
                    if looks > MAX_HELD_LOOKS:
                        return used
                    if line.rstrip("\n").endswith(" (deleted)"):
                        held.append(f"/proc/{pid}/map_files/{line.split(' ', 1)[0]}")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        for path in held:
            try:
                found = os.stat(path)  # the file itself, through the process's link to it
            except OSError:
                continue
            key = (found.st_dev, found.st_ino)
            if found.st_dev in devices and found.st_nlink == 0 and stat.S_ISREG(found.st_mode) and key not in seen:
                seen.add(key)
                used += found.st_blocks * 512
    return used


def watch_for(plan: SandboxPlan | None) -> DiskWatch | None:
    """The watch of a run's plan; None: not sandboxed, nothing to watch, or no limit."""
    if plan is None or plan.limits.disk_bytes is None or not plan.watched:
        return None
    return DiskWatch(plan.watched, plan.limits.disk_bytes)


def size_text(count: int) -> str:
    """``4G``, ``512M``: a limit as scheduler.yaml writes it, in messages."""
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if count >= 1 << shift and count % (1 << shift) == 0:
            return f"{count >> shift}{unit}"
    return f"{count} bytes"
