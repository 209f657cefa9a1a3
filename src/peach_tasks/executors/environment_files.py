"""What a build adds to an organisation's environment besides its packages, and keeps
current: matplotlib's font list and the task process's compiled files.

Both save every run work it would otherwise redo (matplotlib scanning the system's fonts
in a new, empty ``HOME``; the interpreter compiling bootstrap.py and its helpers). Both are
best effort: without them a run does that work itself, as before. ``EnvironmentManager``
(environments.py) mixes this in; the steps run as its other build steps do (``_boxed``,
``_run``), in the build sandbox.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..trees import remove_tree
from .build_sandbox import folder_inside, give_tree, read_inside, reclaim, remove_inside, write_inside
from .bytecode import CACHE_DIR as BYTECODE_DIR
from .bytecode import DIGEST_FILE as BYTECODE_DIGEST
from .bytecode import compile_command, sources_digest

if TYPE_CHECKING:
    from .sandbox import Sandbox

# matplotlib's font list, built with the environment (``_seed_matplotlib``); the path is
# known to executors/displays.py, which copies it into a run's matplotlib cache.
MATPLOTLIB_SEED = Path("share") / "peach-tasks" / "matplotlib"


class Environment(Protocol):
    """What these steps read of an ``environments.Environment`` (that module imports this one)."""

    @property
    def codops(self) -> str: ...

    @property
    def path(self) -> Path: ...

    @property
    def digest(self) -> str: ...

    @property
    def label(self) -> str: ...


class EnvironmentFiles:
    """The part of ``EnvironmentManager`` that builds and refreshes these files; what it
    reads is the manager's."""

    sandbox: Sandbox | None
    progress: Callable[[str], None]
    _task_files_checked: set[Path]

    def _run(self, cmd: list[str], env: dict[str, str]) -> tuple[bool, str]:
        raise NotImplementedError

    def _boxed(self, cmd: list[str], folder: Path, env: dict[str, str],
               also: tuple[Path, ...] = ()) -> list[str]:
        raise NotImplementedError

    def _step_env(self, codops: str, home: Path) -> dict[str, str]:
        raise NotImplementedError

    def _seed_matplotlib(self, tmp: Path, env: dict[str, str], label: str) -> bool:
        """Build matplotlib's font list once, into the environment (``MATPLOTLIB_SEED``);
        True when it ran (``_finish_seed`` then keeps only the list).

        A sandboxed run has a new, empty ``HOME``, so matplotlib would scan the system's fonts
        again in every run (about half a second); the task process copies this list into its
        cache instead (``executors/displays.py``). Best effort: without it matplotlib builds
        its own list, as before. matplotlib makes the folder itself (the scheduler makes
        nothing in a folder the build may still change)."""
        if not any(tmp.glob("lib/python*/site-packages/matplotlib/__init__.py")):
            return False
        seed = tmp / MATPLOTLIB_SEED
        cmd = [str(tmp / "bin" / "python"), "-I", "-c", "import matplotlib.font_manager"]
        try:
            failed, output = self._run(self._boxed(cmd, tmp, env), dict(env, MPLCONFIGDIR=str(seed)))
        except OSError as exc:
            failed, output = True, str(exc)
        if failed:
            self.progress(f"environment {label}: matplotlib's font list was not built ahead "
                          f"(each run builds its own): {output.strip()[-300:]}")
        return not failed

    def _finish_seed(self, tmp: Path, target: Path, label: str) -> None:
        """Keep only the font list (matplotlib's lock files and the like go), its paths
        rewritten from ``tmp``'s to ``target``'s, where the environment is used. Reads and
        writes follow no link the build left."""
        kept = 0
        try:
            for entry in os.scandir(folder_inside(tmp, MATPLOTLIB_SEED)):
                relative = MATPLOTLIB_SEED / entry.name
                if entry.name.startswith("fontlist-") and entry.name.endswith(".json") \
                        and entry.is_file(follow_symlinks=False):
                    write_inside(tmp, relative, read_inside(tmp, relative).replace(str(tmp), str(target)))
                    kept += 1
                elif entry.is_dir(follow_symlinks=False):
                    remove_tree(entry.path)
                else:
                    os.unlink(entry.path)
            if not kept:
                raise OSError("matplotlib wrote no font list")
        except (OSError, UnicodeDecodeError) as exc:
            remove_inside(tmp, MATPLOTLIB_SEED)
            self.progress(f"environment {label}: matplotlib's font list was not built ahead "
                          f"(each run builds its own): {exc}")

    def _compile_task_files(self, prefix: Path, folder: Path, env: dict[str, str], label: str,
                            also: tuple[Path, ...] = ()) -> bool:
        """The task process's own files compiled by this environment's interpreter, so that
        no run compiles them again (``executors/bytecode.py``); ``folder`` is what the step
        may write. True when it worked (``_record_task_files`` then records it). Best effort:
        without them each run compiles them, as before."""
        try:
            cmd = compile_command(prefix / "bin" / "python", prefix)
            failed, output = self._run(self._boxed(cmd, folder, env, also), env)
        except OSError as exc:
            failed, output = True, str(exc)
        if failed:
            remove_inside(prefix, BYTECODE_DIR)
            self.progress(f"environment {label}: the task process's files were not compiled ahead "
                          f"(each run compiles them): {output.strip()[-300:]}")
        return not failed

    def _record_task_files(self, prefix: Path, label: str) -> None:
        try:
            write_inside(prefix, BYTECODE_DIGEST, sources_digest())
        except OSError as exc:
            remove_inside(prefix, BYTECODE_DIR)
            self.progress(f"environment {label}: the task process's compiled files were not kept: {exc}")

    def _refresh_task_files(self, env: Environment) -> None:
        """An environment built before this scheduler (an older one, or one installed
        elsewhere) gets records of this scheduler's files: once per environment and process."""
        if env.path in self._task_files_checked:
            return
        self._task_files_checked.add(env.path)
        try:
            made = (env.path / BYTECODE_DIGEST).read_text() == sources_digest()
        except OSError:
            made = False  # none yet
        if not made:
            home = env.path.with_name(f".home-{env.digest}-{os.getpid()}")
            try:
                self._refresh_in(env, home)
            finally:
                remove_tree(home)

    def _refresh_in(self, env: Environment, home: Path) -> None:
        """In the sandbox only the records' folder is writable; the environment in use is
        seen read-only and stays the scheduler's."""
        records = env.path / BYTECODE_DIR
        try:
            remove_inside(env.path, BYTECODE_DIR)
            records.mkdir(parents=True)
        except OSError as exc:
            self.progress(f"environment {env.label}: the task process's files were not compiled ahead: {exc}")
            return
        step_env = self._step_env(env.codops, home)
        if self.sandbox is not None:
            give_tree(self.sandbox, records)
        compiled = self._compile_task_files(env.path, records, step_env, env.label, also=(env.path,))
        reclaim(self.sandbox, records)
        if compiled:
            self._record_task_files(env.path, env.label)
