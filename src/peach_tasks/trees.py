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


def _empty(parent: int, name: str) -> None:
    """Empty folder ``name`` of ``parent``: down one level at a time and back up through
    ``..`` (only the names on the way are kept, and one folder is open at a time). A folder's
    files go as they are read; it is read again after each of its folders is gone."""
    fd = _open_dir(parent, name)
    names: list[str] = []  # the folders from ``name`` down to the one ``fd`` is
    try:
        while True:
            folder = _remove_files(fd)
            if folder is not None:
                below = _open_dir(fd, folder)
                os.close(fd)
                fd = below
                names.append(folder)
                continue
            if not names:  # ``name`` itself is empty
                return
            up = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = up
            os.rmdir(names.pop(), dir_fd=fd)
    finally:
        os.close(fd)


def _open_dir(parent: int, name: str) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except PermissionError:  # made unreadable by its owner, whose folders these are: ours to empty
        os.chmod(name, 0o700, dir_fd=parent)
        return os.open(name, _DIR_FLAGS, dir_fd=parent)


def _remove_files(fd: int) -> str | None:
    """Remove what the folder ``fd`` holds but folders, as it is read; return one of its
    folders, or None when it holds none (it is then empty)."""
    folder = None
    with os.scandir(fd) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                folder = folder or entry.name
                continue
            try:
                os.unlink(entry.name, dir_fd=fd)
            except FileNotFoundError:
                pass
    return folder


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
