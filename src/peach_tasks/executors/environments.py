"""One Python environment per organisation and environment name, built with uv and
switched atomically.

``state_dir/envs/<codops>/<name>/<hash>/`` is a virtual environment for one exact set of
requirements and interpreter; ``state_dir/envs/<codops>/<name>/current`` is a symlink to
the one in use (``name`` is ``base`` unless a task's ``py_env`` names another). A new set is built beside the old one and the link is replaced in one
``rename``; a failed build leaves the link (and so every task) where it was.

A build runs uv in a process group of its own that dies with the thread that started it
(``PR_SET_PDEATHSIG``) and carries the scheduler's marker: a stop ends it at once (its
``cancel`` event), a scheduler killed with SIGKILL takes it along, and the next scheduler
removes the half-built ``.build-*`` folders it left (``remove_leftovers``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psutil

from ..errors import Problem
from ..model import BASE_ENV
from ..observability.metrics import record_environment_build
from ..sources.py_environments import env_label
from ..trees import remove_tree
from .build_sandbox import (
    build_command,
    give_tree,
    reclaim,
    remove_inside,
    shown_for_build,
    write_inside,
)
from .environment_files import MATPLOTLIB_SEED, EnvironmentFiles
from .process import MARKER_ENV, _die_with_parent, _terminate, _wait_for_exit, find_marked
from .sandbox import PACKAGE_DIR, Sandbox

log = logging.getLogger(__name__)

BUILD_TIMEOUT = 1800.0
TAIL_LINES = 25
KEEP_OLD = 1  # previous environments kept besides the current one
# A requirement set that failed is not rebuilt at every sync (each would hit the
# package index again); it is retried after this long, or at once when it changes.
RETRY_FAILED_SECONDS = 600.0


def uv_env() -> dict[str, str]:
    """The environment for running uv: none of the caller's virtualenv/conda/PYTHONPATH
    (uv would pick them up instead of the target), and no progress bars in captured output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "CONDA_", "PYTHONPATH"))}
    env["UV_NO_PROGRESS"] = "1"
    return env


# What a build (uv, and the new environment's own interpreter) gets of the scheduler's
# variables: what finding and fetching packages needs, never the rest (database URLs, the
# Redis admin password, tokens). A requirement's build step or ``.pth`` file runs code
# with these, so index credentials in UV_*/PIP_* are visible to it (docs/security.md).
BUILD_ENV = ("PATH", "LANG", "LANGUAGE", "TZ", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "PIP_CERT",
             *(name for base in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "FTP_PROXY")
               for name in (base, base.lower())))
BUILD_ENV_PREFIXES = ("LC_", "UV_", "PIP_")
UV_CACHE = "uv-cache"  # state_dir/uv-cache/<codops>: one cache per organisation


def build_env(home: Path, cache: Path) -> dict[str, str]:
    """The variables of one build step: ``BUILD_ENV``, a ``HOME`` of the build's own and
    the organisation's own uv cache (one shared cache would let one organisation's build
    put packages into another's environments)."""
    env = {k: v for k, v in os.environ.items() if k in BUILD_ENV or k.startswith(BUILD_ENV_PREFIXES)}
    env.update(HOME=str(home), UV_CACHE_DIR=str(cache), UV_NO_PROGRESS="1")
    return env


def uv_binary() -> str:
    """The uv shipped with the ``uv`` package (a dependency), else one on PATH."""
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except Exception:  # the package's finder raises when its binary is missing
        found = shutil.which("uv")
        if not found:
            raise RuntimeError("uv is not installed; run 'pip install uv'") from None
        return found


@dataclass(frozen=True)
class Environment:
    codops: str
    digest: str
    path: Path
    requirements: tuple[str, ...]
    name: str = BASE_ENV

    @property
    def label(self) -> str:
        return env_label(self.codops, self.name)

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


def environment_digest(requirements: tuple[str, ...], python: str) -> str:
    """Hash of the normalised requirement set and the exact interpreter version."""
    version = subprocess_version(python)
    text = json.dumps({"python": version, "requirements": list(requirements)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_VERSIONS: dict[str, str] = {}


def subprocess_version(python: str) -> str:
    if python == sys.executable:
        return f"{platform.python_implementation()}-{platform.python_version()}-{platform.machine()}"
    if python not in _VERSIONS:
        out = subprocess.run([python, "-c", "import platform as p;print(f'{p.python_implementation()}-"
                                            "{p.python_version()}-{p.machine()}')"],
                             capture_output=True, text=True, timeout=60)
        _VERSIONS[python] = out.stdout.strip()
    return _VERSIONS[python]


class BuildCancelled(Exception):
    """The build was ended because ``cancel`` was set (the scheduler is stopping)."""


class EnvironmentManager(EnvironmentFiles):
    """Builds and finds organisations' environments. ``ensure`` runs on the sync thread.

    ``cancel`` set (the scheduler's stop) ends a running build at once; ``marker`` is put
    into uv's environment so that a scheduler starting after a crash finds what a build
    left running (``MARKER_ENV``, as for tasks). With ``sandbox`` (the scheduler sets its
    own) every build step runs in it (``build_sandbox.py``); without, as the scheduler's user.
    """

    def __init__(self, state_dir: Path, python: str | None = None,
                 progress: Callable[[str], None] | None = None, cancel: threading.Event | None = None,
                 marker: str | None = None, sandbox: Sandbox | None = None) -> None:
        self.sandbox = sandbox
        self.root = state_dir / "envs"
        self.python = python or sys.executable
        self.progress = progress or log.info
        self.cancel = cancel if cancel is not None else threading.Event()
        self.marker = marker
        self._failed: dict[tuple[str, str], tuple[float, Problem]] = {}
        self._task_files_checked: set[Path] = set()  # environments whose records were looked at

    def remove_leftovers(self) -> int:
        """Remove what builds and switches of a scheduler that was killed left behind
        (``.build-*`` folders, ``.current-*`` links, half-written archives: every dot entry
        of an organisation's folder). Only while holding the state_dir lock; returns how many."""
        removed = 0
        try:
            orgs = [p for p in self.root.iterdir() if p.is_dir() and not p.is_symlink()]
        except OSError:
            return 0
        for org in orgs:
            for slot in [org, *[p for p in org.iterdir() if p.is_dir() and not p.is_symlink()]]:
                if not slot.is_dir():
                    continue  # an old-layout environment removed just before
                for entry in list(slot.iterdir()):
                    # The layout before named environments (envs/<codops>/<hash>, 'current',
                    # archives) is replaced by envs/<codops>/base/: its pieces go too.
                    old_layout = slot is org and (entry.is_symlink() or entry.is_file()
                                                  or (entry / "peach-env.json").exists())
                    if not entry.name.startswith(".") and not old_layout:
                        continue
                    if entry.is_dir() and not entry.is_symlink():
                        remove_tree(entry)
                    else:
                        entry.unlink(missing_ok=True)
                    removed += 1
        if removed:
            log.warning("removed %d unfinished environment builds left by a previous scheduler", removed)
        return removed

    def current(self, codops: str, name: str = BASE_ENV) -> Environment | None:
        link = self.root / codops / name / "current"
        try:
            target = link.resolve(strict=True)
            meta = json.loads((target / "peach-env.json").read_text())
        except (OSError, ValueError):
            return None
        return Environment(codops, target.name, target, tuple(meta.get("requirements", ())), name)

    def ensure(self, codops: str, requirements: tuple[str, ...],
               name: str = BASE_ENV) -> tuple[Environment | None, Problem | None]:
        """Make environment ``name``'s ``current`` match ``requirements``; on failure keep
        the last good one."""
        digest = environment_digest(requirements, self.python)
        current = self.current(codops, name)
        if current and current.digest == digest:
            self._refresh_task_files(current)
            return current, None
        env_dir = self.root / codops / name
        target = env_dir / digest
        if not (target / "peach-env.json").exists():
            failed = self._failed.get((codops, name, digest))
            if failed and time.monotonic() - failed[0] < RETRY_FAILED_SECONDS:
                return current, failed[1]
            try:
                problem = self._build(codops, name, requirements, target)
            except BuildCancelled:
                return current, None  # stopping: nothing was decided about this set
            if problem:
                self._failed[(codops, name, digest)] = (time.monotonic(), problem)
                return current, problem
            self._failed.pop((codops, name, digest), None)
        self._switch(env_dir, digest)
        self._prune(env_dir, digest)
        return self.current(codops, name), None

    def _build(self, codops: str, name: str, requirements: tuple[str, ...], target: Path) -> Problem | None:
        tmp = target.with_name(f".build-{target.name}-{os.getpid()}")
        home = target.with_name(f".home-{target.name}-{os.getpid()}")  # a dot entry: remove_leftovers
        try:
            return self._build_in(codops, name, requirements, target, tmp, home)
        finally:
            remove_tree(home)

    def _step_env(self, codops: str, home: Path) -> dict[str, str]:
        """A fresh, empty ``home`` and the variables of a build step of ``codops``."""
        remove_tree(home)
        home.mkdir(parents=True)
        cache = self.root.parent / UV_CACHE / codops
        cache.mkdir(parents=True, exist_ok=True)
        env = build_env(home, cache)
        if self.sandbox is not None:
            # The cache and the build folder are separate mounts there: uv cannot hardlink
            # (it would copy anyway, with a warning in every build's output).
            env["UV_LINK_MODE"] = "copy"
        return env

    def _build_in(self, codops: str, name: str, requirements: tuple[str, ...], target: Path, tmp: Path,
                  home: Path) -> Problem | None:
        uv = os.path.realpath(uv_binary())  # the path the sandbox shows
        remove_tree(tmp)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        shown = ", ".join(requirements) or "no packages"
        label = env_label(codops, name)
        self.progress(f"environment {label}: building ({shown})")
        started = time.monotonic()
        env = self._step_env(codops, home)
        if self.marker:
            env[MARKER_ENV] = f"{self.marker}:{label}"
        tmp.mkdir()
        if self.sandbox is not None:  # the build's user writes there, and in its cache
            give_tree(self.sandbox, tmp)
            give_tree(self.sandbox, Path(env["UV_CACHE_DIR"]))
        # In the sandbox only the base installation is shown, not a virtualenv's python.
        python = self.python if self.sandbox is None else os.path.realpath(self.python)
        steps = [[uv, "venv", "--quiet", "--relocatable", "--python", python, str(tmp)]]
        if requirements:
            # Compiled now: in its sandbox a run sees the environment read-only, so without the
            # bytecode every run would compile every module it imports again (seconds for pandas
            # or matplotlib, each run).
            steps.append([uv, "pip", "install", "--compile-bytecode", "--python", str(tmp / "bin" / "python"),
                          *requirements])
        for cmd in steps:
            try:
                failed, output = self._run(self._boxed(cmd, tmp, env), env)
            except OSError as exc:
                failed, output = True, str(exc)
            except BuildCancelled:
                remove_tree(tmp)
                self.progress(f"environment {label}: build stopped after {time.monotonic() - started:.1f}s "
                              "(the scheduler is stopping)")
                raise
            if failed:
                remove_tree(tmp)
                tail = "\n".join(output.strip().splitlines()[-TAIL_LINES:])
                keep = self.current(codops, name)
                still = f"its tasks keep using environment {keep.digest}" if keep else "its tasks cannot run until it builds"
                self.progress(f"environment {label}: FAILED after {time.monotonic() - started:.1f}s")
                record_environment_build(label, time.monotonic() - started, ok=False)
                return Problem("environment", label,
                               f"building the environment '{name}' of '{codops}' ({shown}) failed; {still}. "
                               f"Fix the dependencies in peach.yaml. Installer output:\n{tail}")
        seeded = self._seed_matplotlib(tmp, env, label)
        compiled = self._compile_task_files(tmp, tmp, env, label)
        # Every process of the build is gone (each step's sandbox ends with it): the folder is
        # taken back before the scheduler writes there, never following what the build left.
        reclaim(self.sandbox, tmp)
        if seeded:
            self._finish_seed(tmp, target, label)
        else:  # what a failed font list step left
            remove_inside(tmp, MATPLOTLIB_SEED)
        if compiled:
            self._record_task_files(tmp, label)
        meta = {"codops": codops, "name": name, "requirements": list(requirements),
                "python": subprocess_version(self.python),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "build_seconds": round(time.monotonic() - started, 3)}
        try:
            write_inside(tmp, "peach-env.json", json.dumps(meta, indent=2))
        except OSError as exc:  # the build left a folder there
            remove_tree(tmp)
            record_environment_build(label, time.monotonic() - started, ok=False)
            return Problem("environment", label, f"building the environment '{name}' of '{codops}' ({shown}) "
                                                 f"failed: its record could not be written ({exc})")
        remove_tree(target)
        os.replace(tmp, target)
        self.progress(f"environment {label}: ready in {meta['build_seconds']:.1f}s")
        record_environment_build(label, meta["build_seconds"], ok=True)
        return None

    def _boxed(self, cmd: list[str], folder: Path, env: dict[str, str],
               also: tuple[Path, ...] = ()) -> list[str]:
        """``cmd`` as a build step runs it: in the sandbox (``folder`` and the organisation's
        cache writable, ``also`` read-only), or as it is without one."""
        if self.sandbox is None:
            return cmd
        shown = (*shown_for_build(uv_binary(), self.python), PACKAGE_DIR, *also)
        return build_command(self.sandbox, cmd, folder, Path(env["UV_CACHE_DIR"]), shown)

    def _run(self, cmd: list[str], env: dict[str, str]) -> tuple[bool, str]:
        """One uv step: (failed, output). Its own process group, killed with everything in it
        on ``cancel`` (raising ``BuildCancelled``), after ``BUILD_TIMEOUT``, or when the
        caller itself is interrupted; it dies with the thread that started it."""
        with tempfile.TemporaryFile() as out:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True, preexec_fn=_die_with_parent)
            how = "interrupted"  # what the finally sees if the wait itself is interrupted
            try:
                how = _wait_for_exit(proc, BUILD_TIMEOUT, self.cancel)  # the task runs' wait, as is
            finally:
                if proc.poll() is None:
                    _end(proc, env.get(MARKER_ENV))
            if how == "cancelled":
                raise BuildCancelled()
            out.seek(0)
            output = out.read().decode("utf-8", errors="replace")
        if how == "timeout":
            return True, f"{output}\nuv did not finish within {BUILD_TIMEOUT:g} s and was killed"
        return proc.returncode != 0, output

    _pack_lock = threading.Lock()

    def pack(self, env: Environment) -> Path:
        """A ``.tar.gz`` of ``env`` for Spark's ``--archives``, made once per environment hash.

        Symlinks are kept as they are: ``bin/python`` points at the base interpreter, which
        cluster nodes must have at the same path (as with any packed virtualenv).
        """
        archive = env.path.with_name(f"{env.digest}.tar.gz")
        with self._pack_lock:  # two loops of one organisation may ask at once
            if archive.exists():
                return archive
            started = time.monotonic()
            self.progress(f"environment {env.label}: packing {env.digest} for Spark")
            tmp = archive.with_name(f".{archive.name}-{os.getpid()}")
            with tarfile.open(tmp, "w:gz", compresslevel=1) as tar:
                for child in sorted(env.path.iterdir()):
                    tar.add(child, arcname=child.name)
            os.replace(tmp, archive)
            self.progress(f"environment {env.label}: packed in {time.monotonic() - started:.1f}s "
                          f"({archive.stat().st_size >> 20} MiB)")
            return archive

    def _switch(self, env_dir: Path, digest: str) -> None:
        link = env_dir / "current"
        tmp_link = env_dir / f".current-{os.getpid()}"
        tmp_link.unlink(missing_ok=True)
        os.symlink(digest, tmp_link)
        os.replace(tmp_link, link)  # atomic: a reader sees the old or the new, never none

    def _prune(self, env_dir: Path, keep: str) -> None:
        envs = sorted((p for p in env_dir.iterdir() if p.is_dir() and not p.is_symlink()
                       and not p.name.startswith(".") and p.name != keep),
                      key=lambda p: p.stat().st_mtime, reverse=True)
        for old in envs[KEEP_OLD:]:
            remove_tree(old)
            old.with_name(f"{old.name}.tar.gz").unlink(missing_ok=True)


def _end(proc: subprocess.Popen[bytes], marker: str | None) -> None:
    """SIGTERM to the build's process group, SIGKILL to all of it once the leader is gone or
    2 s later, then to anything of the build that left the group (found by its marker): the
    process layer's own kill. The leader is reaped only at the end, so the group's id cannot
    be taken by another process meanwhile."""
    scan = (lambda: find_marked(marker, exact=True)) if marker else list
    _terminate(scan, 2.0, extra=[psutil.Process(proc.pid)], pgid=proc.pid)
    proc.wait()

