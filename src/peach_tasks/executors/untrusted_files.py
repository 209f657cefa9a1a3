"""Reading files a task wrote into a folder it controls (its result, its trigger requests).

The task owns those folders, so a name may be a link to a file only the scheduler can read,
a FIFO that would block the loop forever, or a file of any size: only a regular file of a
bounded size is read, opened without following links and without blocking, then checked on
the open descriptor (a check before the open could be raced).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def read_task_file(path: Path | str, max_bytes: int, dir_fd: int | None = None) -> bytes | None:
    """The bytes of ``path`` if it is a regular file of at most ``max_bytes``; None otherwise
    (absent, a link, a FIFO, a device, a folder, too large). ``dir_fd``: ``path`` is a name
    in that open folder (see ``open_task_folder``)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > max_bytes:
            return None
        return handle.read(max_bytes + 1)[:max_bytes]


def open_task_folder(path: Path) -> int | None:
    """An open descriptor of the folder ``path`` if it is one (not a link to one elsewhere);
    None otherwise. Names read through it (``dir_fd``) stay inside that folder."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
