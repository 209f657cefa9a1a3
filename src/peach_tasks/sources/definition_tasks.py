"""One task of a definition file checked: its name, its fields, and what they may be.

A broken task loses only itself: every mistake is one ``Problem`` on its line, and the
task's other fields are still checked so that one round of fixes can address them all.
"""

from __future__ import annotations

import keyword
import math
import posixpath
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from ..durations import format_duration, parse_duration
from ..model import BASE_ENV, METADATA_LOOP, Executor, TaskSpec
from .definition_checks import DefinitionChecks, kind
from .py_environments import ENV_NAME, Declared
from .requirements import WINDOWS_DRIVE
from .yamlsource import Path_

_TASK_NAME = re.compile(r"[A-Za-z0-9_.-]{1,200}")  # the store's column holds 200
_MAX_METHOD_CHARS = 200  # the store's column

# A task may run again at most this many times within one iteration of its loop.
MAX_RETRIES = 10
DEFAULT_RETRY_DELAY = 30.0

_ORG_LOOP_LABEL = "the organisation's loop"
_METADATA_LOOP_LABEL = f"the '{METADATA_LOOP}' loop"


class _TaskDefinition(BaseModel):
    """One entry of ``tasks``; strict so that ``"120"`` is not a number, ``"yes"`` not a bool."""

    model_config = ConfigDict(extra="forbid", strict=True)

    notebook: str
    method: str | None = None
    full_notebook: bool = False
    executor: str = Executor.SPARK.value
    loop: str | None = None
    dependencies: list[Any] | None = None
    py_env: str | None = None
    timeout: float | None = None
    retries: int = 0
    retry_delay: float | str = DEFAULT_RETRY_DELAY
    freshness: str | int | float | bool | None = None


class TaskChecks(DefinitionChecks):
    """The checks of the entries of ``tasks``; the file's parser sets what they compare with."""

    root: Path  # the checkout: notebooks are looked up under it
    org_limit: float  # the loops' time limits, which a task's timeout and retries must fit in
    metadata_limit: float

    def task(self, name: Any, body: Any, codops: str, envs: dict[str, list[Declared]]) -> TaskSpec | None:
        """The task's spec, or None after reporting each of its problems."""
        path: Path_ = ("tasks", name)
        if not isinstance(name, str):
            self.at(f"task name {name!r} is not a string; quote it, e.g. '{name}'", path)
            return None
        if not _TASK_NAME.fullmatch(name) or set(name) == {"."}:
            # Names end up in log paths and URLs; dots alone would mean a directory.
            self.at(
                f"task name {name[:100]!r}{'...' if len(name) > 100 else ''} may contain only letters, digits, "
                "'_', '.' and '-' (and not only dots), at most 200 of them; rename the task",
                path,
            )
            return None
        if not isinstance(body, dict):
            self.at(
                f"task '{name}' must be a mapping with at least `notebook:` and `method:`, not {kind(body)}; "
                "complete its definition",
                path,
            )
            return None
        ok = True
        fields = self.string_keys(body, path)
        if len(fields) != len(body):
            ok = False
        model = self.validated(_TaskDefinition, fields, path)
        if model is None:
            return None

        notebook = self.notebook(model.notebook, path + ("notebook",))
        ok = ok and notebook is not None
        ok = self.check_method(name, model, path) and ok
        if model.executor not in {e.value for e in Executor}:
            choices = " or ".join(f"'{e.value}'" for e in Executor)
            self.at(
                f"executor {model.executor!r} is unknown; use {choices} (default '{Executor.SPARK.value}')",
                path + ("executor",),
            )
            ok = False
        if model.loop is not None and model.loop != METADATA_LOOP:
            self.at(
                f"loop {model.loop!r} is not allowed; the only other loop is '{METADATA_LOOP}', "
                "remove `loop` to run in the organisation's loop",
                path + ("loop",),
            )
            ok = False
        ok = self.check_timeout(model, path) and ok
        retry_delay = self.check_retries(model, path)
        ok = ok and retry_delay is not None
        freshness = self.freshness(model.freshness, path + ("freshness",))
        ok = ok and freshness != -1.0
        deps = self.requirements(model.dependencies or [], path + ("dependencies",))
        if model.py_env is not None and not ENV_NAME.fullmatch(model.py_env):
            self.at(f"py_env {model.py_env!r} is not an environment name (letters, digits, '_' and '-'); "
                    "name one declared under `py_environments`, or remove `py_env` to use 'base'",
                    path + ("py_env",))
            ok = False
        if not ok:
            return None
        assert notebook is not None
        # The tutorial's task-level packages go into the organisation's one environment.
        base = envs.setdefault(BASE_ENV, []) if deps else []
        base.extend(d for d in deps if d.requirement not in [b.requirement for b in base])
        return TaskSpec(
            codops=codops,
            name=name,
            notebook=notebook,
            method=model.method,
            full_notebook=model.full_notebook,
            executor=Executor(model.executor),
            loop=model.loop,
            dependencies=tuple(d.requirement for d in deps),
            timeout=model.timeout,
            retries=model.retries,
            retry_delay=retry_delay if retry_delay is not None else DEFAULT_RETRY_DELAY,
            freshness=freshness,
            repo=self.repo,
            source_file=self.file,
            source_line=self.lines.line_of(path),
            environment=model.py_env or BASE_ENV,
            env_line=self.lines.line_of(path + ("py_env",)) if model.py_env else None,
        )

    def check_method(self, name: str, model: _TaskDefinition, path: Path_) -> bool:
        if model.method is None:
            if model.full_notebook:
                return True
            self.at(
                f"task '{name}' has no `method`; name the function to call, or set `full_notebook: true` "
                "to run the whole notebook",
                path,
            )
            return False
        if len(model.method) > _MAX_METHOD_CHARS:
            self.at(f"method name {model.method[:100]!r}... is longer than {_MAX_METHOD_CHARS} characters; "
                    "give the function a shorter name", path + ("method",))
            return False
        if not model.method.isidentifier() or keyword.iskeyword(model.method):
            self.at(
                f"method {model.method!r} is not a Python function name; give the name of a function "
                "defined in the notebook",
                path + ("method",),
            )
            return False
        return True

    def check_timeout(self, model: _TaskDefinition, path: Path_) -> bool:
        timeout = model.timeout
        if timeout is None:
            return True
        if model.loop == METADATA_LOOP:
            limit, label = self.metadata_limit, _METADATA_LOOP_LABEL
        else:
            limit, label = self.org_limit, _ORG_LOOP_LABEL
        if not math.isfinite(timeout) or timeout <= 0:
            self.at(
                f"timeout {timeout!r} must be a positive number of seconds, at most {limit:g}; "
                "fix it or remove `timeout`",
                path + ("timeout",),
            )
            return False
        if timeout > limit:
            self.at(
                f"timeout {timeout:g} s is longer than the {limit:g} s limit of {label}; a task may only "
                "shorten it, lower `timeout` or remove it",
                path + ("timeout",),
            )
            return False
        return True

    def check_retries(self, model: _TaskDefinition, path: Path_) -> float | None:
        """The task's ``retry_delay`` in seconds, or None after reporting a problem with it or
        with ``retries``. The waits of every retry together (the delay doubles after each
        attempt) may not exceed the loop's time limit: the other tasks of the loop wait
        meanwhile, and that limit is what a loop has promised them."""
        ok = True
        if not 0 <= model.retries <= MAX_RETRIES:
            self.at(f"retries {model.retries} must be between 0 and {MAX_RETRIES}; lower it or remove `retries`",
                    path + ("retries",))
            ok = False
        try:
            delay = parse_duration(model.retry_delay)
        except ValueError as exc:
            self.at(f"retry_delay: {exc}", path + ("retry_delay",))
            return None
        if not ok:
            return None
        limit, label = ((self.metadata_limit, _METADATA_LOOP_LABEL) if model.loop == METADATA_LOOP
                        else (self.org_limit, _ORG_LOOP_LABEL))
        waits = delay * (2 ** model.retries - 1)
        if waits > limit:
            self.at(
                f"{model.retries} retries {format_duration(delay)} apart (doubling after each) wait "
                f"{format_duration(waits)} in all, longer than the {limit:g} s limit of {label}; "
                "lower `retries` or `retry_delay`",
                path + (("retry_delay",) if "retry_delay" in model.model_fields_set else ("retries",)),
            )
            return None
        return delay

    def freshness(self, value: Any, path: Path_) -> float | None:
        """Seconds (0.0: ``false``, none even if the loop has a default), None when absent,
        -1.0 after reporting why the value cannot be used."""
        if value is None:
            return None
        if value is False:
            return 0.0
        try:
            seconds = parse_duration(value)
            if seconds <= 0:
                raise ValueError(f"{value!r} must be a positive duration, e.g. 30m or 2h")
            return seconds
        except ValueError as exc:
            self.at(f"freshness: {exc}; or `false` for none, or remove `freshness` for the loop's default", path)
            return -1.0

    def notebook(self, notebook: str, path: Path_) -> str | None:
        """The notebook's normalised relative POSIX path, or None after reporting why not."""
        shown = notebook if len(notebook) <= 200 else notebook[:197] + "..."
        if not notebook.strip():
            self.at("`notebook` is empty; give the notebook's path relative to the repository root", path)
            return None
        if "\x00" in notebook:
            self.at(f"notebook {shown!r} contains a NUL character; fix `notebook`", path)
            return None
        if notebook.startswith(("/", "\\")) or WINDOWS_DRIVE.match(notebook):
            self.at(
                f"notebook '{shown}' is an absolute path; give it relative to the repository root", path
            )
            return None
        normal = posixpath.normpath(notebook)
        if normal == ".." or normal.startswith("../"):
            self.at(f"notebook '{shown}' leads out of the repository; give a path inside it", path)
            return None
        try:
            root = self.root.resolve()
            # The normalised path is the one stored and opened later, so it is the one
            # whose real location (after every symlink along it) must stay inside.
            target = (self.root / normal).resolve()
            inside = target.is_relative_to(root)
            is_file = inside and target.is_file()
            exists = inside and target.exists()
        except (OSError, RuntimeError, ValueError) as exc:
            # RuntimeError: a symlink loop (Python < 3.13); OSError: e.g. a name too long.
            reason = getattr(exc, "strerror", None) or str(exc)
            self.at(f"notebook '{shown}' cannot be checked ({reason}); fix `notebook`", path)
            return None
        if not inside:
            self.at(
                f"notebook '{shown}' leads out of the repository through a symbolic link; "
                "commit the notebook itself instead of a link",
                path,
            )
            return None
        if not exists:
            self.at(f"notebook '{shown}' does not exist in the repository; commit it or fix `notebook`", path)
            return None
        if not is_file:
            self.at(f"notebook '{shown}' is a directory, not a file; point `notebook` at the notebook file", path)
            return None
        return normal
