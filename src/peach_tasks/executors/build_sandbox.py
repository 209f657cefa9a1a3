"""Environment builds in the runs' sandbox (``sandbox.py``): an organisation's requirements
are untrusted code (a source distribution's build backend, a package's ``.pth`` file runs at
every start of the environment's interpreter), so every build step runs in bubblewrap, as the
task's user when the scheduler is root, seeing the system read-only, the base interpreter and
uv read-only, the folder being built and the organisation's own uv cache writable, a private
``/tmp`` and ``HOME``, the network (the package index) and nothing else of ``state_dir``.

Afterwards the scheduler takes the folder back (``reclaim``: root's again) before it writes
anything there, and writes only through ``write_inside``/``read_inside``, which never follow
a symbolic link the build left (one to ``/etc/shadow`` where a font list is expected).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..trees import remove_tree, walk_tree
from .cgroups import Limits
from .sandbox import Sandbox, SandboxPlan, interpreter_home


def build_command(sandbox: Sandbox, argv: list[str], folder: Path, cache: Path,
                  read_only: tuple[Path, ...]) -> list[str]:
    """``argv`` run in ``folder`` inside a sandbox where ``folder`` and ``cache`` are writable
    at their own paths (a ``--relocatable`` environment keeps working when it is moved, and
    its paths inside are those outside) and ``read_only`` (uv, the base interpreter) is seen."""
    plan = SandboxPlan("build", Limits(), network=True, read_only=read_only,
                       writable=((folder, folder), (cache, cache)))
    return sandbox.command(plan, argv, folder, None)


def shown_for_build(uv: str, python: str) -> tuple[Path, ...]:
    """What a build must see read-only: uv's binary and the base interpreter's installation."""
    return (Path(os.path.realpath(uv)), interpreter_home(Path(python)))


def give_tree(sandbox: Sandbox, folder: Path) -> None:
    """``folder`` (made by the scheduler, or the organisation's cache) writable by the build's
    user. The cache is walked only the first time (what a build adds there is its user's)."""
    if sandbox.run_as is None:
        return
    if os.lstat(folder).st_uid != sandbox.run_as[0]:
        sandbox.give(folder)


def reclaim(sandbox: Sandbox | None, folder: Path) -> None:
    """``folder`` and all in it root's again (never following a link), once every process of
    the build is gone: the scheduler reads and rewrites it next, and tasks see it read-only."""
    if sandbox is None or sandbox.run_as is None:
        return
    uid, gid = os.getuid(), os.getgid()
    os.chown(folder, uid, gid, follow_symlinks=False)
    for here, dirs, files in walk_tree(folder):  # any depth; a linked folder is not entered
        for name in dirs + files:
            os.chown(os.path.join(here, name), uid, gid, follow_symlinks=False)


def _check_folders(root: Path, relative: Path) -> Path:
    """``root / relative`` after checking that each folder on the way is a real folder."""
    path = root
    for part in relative.parent.parts:
        path = path / part
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            raise OSError(f"{path} is not a folder (a build left something else there)")
    return root / relative


def folder_inside(root: Path, relative: Path) -> Path:
    """``root / relative``, checked to be a real folder with no link on the way."""
    _check_folders(root, relative / "_")
    return root / relative


def remove_inside(root: Path, relative: Path) -> None:
    """Remove ``root / relative`` whatever it is, following no link on the way or there;
    nothing to remove when a folder on the way is not one."""
    try:
        path = _check_folders(root, relative)
        if stat.S_ISDIR(os.lstat(path).st_mode):
            remove_tree(path)  # any depth, never following a link
        else:
            os.unlink(path)
    except OSError:
        pass  # gone, or a link or a file where a folder was expected: nothing of ours to remove


def read_inside(root: Path, relative: Path) -> str:
    """A file the build made, read without following any link on the way."""
    path = _check_folders(root, relative)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, encoding="utf-8") as file:
        return file.read()


def write_inside(root: Path, relative: Path | str, text: str) -> None:
    """Write ``root / relative``, replacing whatever the build left at that name (a link is
    removed, never followed)."""
    path = _check_folders(root, Path(relative))
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            os.unlink(path)  # a link (a folder there fails here: the caller's best effort)
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
