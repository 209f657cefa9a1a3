"""Folders a task or a repository filled, walked and removed whatever they hold.

A run's folders, its trigger folder and a repository's checkout hold what untrusted code
made: a folder 5,000 levels deep, a million files in one folder, folders it made
unreadable. ``shutil.rmtree`` and Python 3.11's ``os.walk`` recurse once per level (a
``RecursionError`` past about a thousand, which ``ignore_errors`` does not catch: the
scheduler's clean-up failed, and a leftover stopped its next start) and list a whole folder
at once (a million names in memory). Here both go level by level with a loop, relative to an
open folder (a path 5,000 levels deep is longer than the system takes), reading a folder's
entries a few at a time, and never follow a link.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def remove_tree(path: Path | str) -> bool:
    """Remove ``path`` and everything in it (a link is removed, never followed; a file, a
    lone link). True when it is gone; False when something stayed (it says nothing more:
    clean-up is best effort and must never stop the caller). Never raises."""
    try:
        return _remove(os.fspath(path))
    except Exception:  # noqa: BLE001 - whatever a task made, the caller goes on
        return not os.path.lexists(path)


def _remove(path: str) -> bool:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return True
    if not stat.S_ISDIR(mode):
        os.unlink(path)
        return True
    parent_path, name = os.path.split(os.path.abspath(path))
    parent = os.open(parent_path, _DIR_FLAGS)
    try:
        _empty(parent, name)
        os.rmdir(name, dir_fd=parent)
    except OSError:
        return not os.path.lexists(path)
    finally:
        os.close(parent)
    return True


_PENDING_BUDGET = 65_536  # folder names held at once over all levels: a folder deep and wide is bounded too
_BATCH = 4096  # folders of one level taken per reading of it


def _empty(parent: int, name: str) -> None:
    """Empty folder ``name`` of ``parent``: down one level at a time and back up through
    ``..`` (one folder open at a time). A folder's files go as it is read; its folders are
    taken a batch at a time (each emptied and removed), then it is read again for the next
    batch: a folder of 100,000 folders is read 25 times, not 100,000 (the hostile pass
    measured six minutes for 30,000 read once per folder)."""
    fd = _open_dir(parent, name)
    levels: list[tuple[str, list[str]]] = [(name, [])]  # each open level: its name, its folders still to do
    try:
        while True:
            here, pending = levels[-1]
            if not pending:
                batch = max(1, min(_BATCH, _PENDING_BUDGET // len(levels)))
                pending.extend(_remove_files(fd, batch))
            if pending:
                below = _open_dir(fd, pending[-1])
                os.close(fd)
                fd = below
                levels.append((pending.pop(), []))
                continue
            if len(levels) == 1:  # ``name`` itself is empty
                return
            up = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = up
            levels.pop()
            os.rmdir(here, dir_fd=fd)
    finally:
        os.close(fd)


def _open_dir(parent: int, name: str) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except PermissionError:  # made unreadable by its owner, whose folders these are: ours to empty
        os.chmod(name, 0o700, dir_fd=parent)
        return os.open(name, _DIR_FLAGS, dir_fd=parent)


def _remove_files(fd: int, most: int) -> list[str]:
    """Remove what the folder ``fd`` holds but folders, as it is read; return up to ``most``
    of its folders (none: it is empty)."""
    folders: list[str] = []
    with os.scandir(fd) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if len(folders) < most:
                    folders.append(entry.name)
                continue
            try:
                os.unlink(entry.name, dir_fd=fd)
            except FileNotFoundError:
                pass
    return folders


def walk_tree(top: Path | str) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk(top)`` top-down without recursion (a checkout 1,500 levels deep): each
    folder's path, its folders and its other entries (links among them, never followed).
    A folder that cannot be read is skipped, as ``os.walk`` skips it."""
    stack = [os.fspath(top)]
    while stack:
        here = stack.pop()
        dirs: list[str] = []
        files: list[str] = []
        try:
            with os.scandir(here) as entries:
                for entry in entries:
                    (dirs if entry.is_dir(follow_symlinks=False) else files).append(entry.name)
        except OSError:
            continue
        yield here, dirs, files
        stack.extend(os.path.join(here, name) for name in reversed(dirs))


_USAGE_WALKS = 4  # walks of a tree whose folders keep moving under it


def tree_usage(top: Path | str, most_entries: int) -> tuple[int, int]:
    """What ``top`` holds on disk while its task may still be writing: the bytes its entries
    take (allocated blocks: a sparse file costs what it uses) and how many entries there are.
    It stops once it has seen more than ``most_entries`` (the count returned is then above
    it), so that a hostile folder costs a bounded walk. Level by level relative to an open
    folder, as ``_empty`` goes; a level moved away meanwhile (its task renames its folders
    as they are walked) starts the walk again, a few times, and the most counted is kept.
    Never raises: a folder that is gone or unreadable counts as what was read."""
    most = (0, 0)
    for _ in range(_USAGE_WALKS):
        used, entries, whole = _walk_usage(top, most_entries)
        most = max(most, (used, entries))
        if whole:
            break
    return most


def _walk_usage(top: Path | str, most_entries: int) -> tuple[int, int, bool]:
    """One walk of ``tree_usage``; False when a level moved while it was walked."""
    counted = [0, 0]  # bytes, entries
    try:
        fd = os.open(os.fspath(top), _DIR_FLAGS)
    except OSError:
        return 0, 0, True
    try:
        levels = [_usage_level(fd, counted, most_entries)]  # each open level: its identity, its folders to do
        while counted[1] <= most_entries:
            while not levels[-1][1]:  # this level is done: back up to the next one with work
                levels.pop()
                if not levels:
                    return counted[0], counted[1], True
                up = os.open("..", _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = up
                seen = os.fstat(fd)
                if (seen.st_dev, seen.st_ino) != levels[-1][0]:  # moved while walked
                    return counted[0], counted[1], False
            try:
                below = os.open(levels[-1][1].pop(), _DIR_FLAGS, dir_fd=fd)
            except OSError:  # gone, or unreadable: counted where it was listed
                continue
            os.close(fd)
            fd = below
            levels.append(_usage_level(fd, counted, most_entries))
    except OSError:
        pass
    finally:
        os.close(fd)
    return counted[0], counted[1], True


def _usage_level(fd: int, counted: list[int], most_entries: int) -> tuple[tuple[int, int], list[str]]:
    """Count the entries of the open folder ``fd`` into ``counted`` (up to one past
    ``most_entries``); its identity and its folders."""
    here = os.fstat(fd)
    folders: list[str] = []
    with os.scandir(fd) as listing:
        for entry in listing:
            counted[1] += 1
            if counted[1] > most_entries:
                break
            try:
                counted[0] += entry.stat(follow_symlinks=False).st_blocks * 512
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.name)
            except OSError:
                continue
    return (here.st_dev, here.st_ino), folders
