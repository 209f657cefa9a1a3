"""How much a running task has put in its folders on the scheduler's disk.

A sandboxed run can write in two folders of the scheduler's ``state_dir``: its run folder
(request, result, outputs) and its trigger folder. Everything else it may write is in
memory (its working folder's copy, ``/tmp``, ``HOME``: counted against its memory limit)
or a mount the operator chose. Left unbounded, one organisation's task could fill the disk
the store and every other organisation's runs share. ``run_process`` asks ``over()`` every
``EVERY_SECONDS`` while the task runs, and once after it; past the limit the run is ended as
on a timeout. Between two looks a task can still write what the disk takes in that time.
"""

from __future__ import annotations

from pathlib import Path

from ..trees import tree_usage

EVERY_SECONDS = 0.25
# More entries than a run's own files ever make (its outputs are at most 10,000): the walk
# that counts them stays short, and past this the run is ended too.
MAX_ENTRIES = 20_000


class DiskWatch:
    """``folders`` may hold at most ``limit`` bytes and ``MAX_ENTRIES`` entries together."""

    def __init__(self, folders: tuple[Path, ...], limit: int) -> None:
        self.folders, self.limit = folders, limit
        self.reason: str | None = None  # why the run was ended, once over() said so

    def over(self) -> bool:
        used = entries = 0
        for folder in self.folders:
            size, count = tree_usage(folder, MAX_ENTRIES - entries)
            used, entries = used + size, entries + count
            if used > self.limit or entries > MAX_ENTRIES:
                break
        where = "its run and trigger folders on the scheduler's disk"
        if used > self.limit:
            self.reason = (f"the run held more than {size_text(self.limit)} in {where} (python.disk in scheduler.yaml, "
                           "per organisation under organisations.<codops>.python.disk); write data to the "
                           "working folder, /tmp or a mount instead")
        elif entries > MAX_ENTRIES:
            self.reason = f"the run made more than {MAX_ENTRIES:,} files and folders in {where}"
        return self.reason is not None


def watch_for(plan: object) -> DiskWatch | None:
    """The watch of a run's ``SandboxPlan``; None: nothing to watch, or no limit."""
    limits = getattr(plan, "limits", None)
    limit = getattr(limits, "disk_bytes", None)
    folders = getattr(plan, "watched", ())
    return DiskWatch(tuple(folders), limit) if limit is not None and folders else None


def size_text(count: int) -> str:
    """``4G``, ``512M``: a limit as scheduler.yaml writes it, in messages."""
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if count >= 1 << shift and count % (1 << shift) == 0:
            return f"{count >> shift}{unit}"
    return f"{count} bytes"
