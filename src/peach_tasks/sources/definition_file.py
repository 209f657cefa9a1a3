"""One definition file checked: its ``codops``, its packages and every task.

Packages are declared in one of two forms per file (``py_environments.py`` says how they
become environments): the tutorial's ``dependencies:`` (root and per task), or today's
PEACH ``py_environments:`` with ``py_env:`` on tasks. A file mixing both is unusable.

``definitions.py`` finds and reads a checkout's files; this module turns one file's text
into tasks and problems. Nothing here raises for bad input: every mistake becomes one
``Problem`` with the line to fix, and costs as little as possible. A broken file (syntax,
``codops``) loses only its own tasks; a broken task loses only itself; a bad entry of a
``dependencies`` list loses only that entry.
"""

from __future__ import annotations

import keyword
import math
import posixpath
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ..alert_settings import OrganisationRule, SourcedRule
from ..durations import format_duration, parse_duration
from ..errors import ConfigProblem, Problem
from ..model import BASE_ENV, METADATA_LOOP, Executor, TaskSpec
from .py_environments import ENV_NAME, Declared
from .requirements import WINDOWS_DRIVE, requirement_problem
from .yamlsource import LineMap, Path_, dotted, load_yaml_file, validation_problems

_CODOPS = re.compile(r"[a-z0-9_-]+")
_TASK_NAME = re.compile(r"[A-Za-z0-9_.-]+")

# A task may run again at most this many times within one iteration of its loop.
MAX_RETRIES = 10
DEFAULT_RETRY_DELAY = 30.0

_ORG_LOOP_LABEL = "the organisation's loop"
_METADATA_LOOP_LABEL = f"the '{METADATA_LOOP}' loop"
_Model = TypeVar("_Model", bound=BaseModel)


class _DefinitionFile(BaseModel):
    """Root of a definition file; only the types, the meaning is checked by hand."""

    model_config = ConfigDict(extra="forbid", strict=True)

    codops: str
    dependencies: list[Any] | None = None
    py_environments: dict[Any, Any] | None = None
    tasks: dict[Any, Any] | None = None
    alerts: list[Any] | None = None  # the organisation's own alert rules (alert_settings.OrganisationRule)


class _PyEnvironment(BaseModel):
    """One entry of ``py_environments``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    dependencies: list[Any] | None = None


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


@dataclass
class ParsedFile:
    """What one definition file gives: its valid tasks, ``{codops: root dependencies}`` (the
    tutorial's form), every package entry by environment with its line (both forms; empty
    unless the file is usable) and the problems found."""

    tasks: list[TaskSpec] = field(default_factory=list)
    dependencies: dict[str, list[str]] = field(default_factory=dict)
    environments: dict[str, dict[str, list[Declared]]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    alerts: list[SourcedRule] = field(default_factory=list)


def parse_definition_text(
    text: str,
    rel_file: str,
    root: Path,
    repo: str,
    allowed_codops: Collection[str] | None = None,
    default_timeouts: tuple[float, float] = (3600.0, 300.0),
) -> tuple[list[TaskSpec], dict[str, list[str]], list[Problem]]:
    """Check one definition file's ``text``; never raises for bad input.

    ``rel_file`` is the file's path relative to ``root`` (used in problems and
    ``TaskSpec.source_file``); notebooks are looked up under ``root``. Returns the
    file's valid tasks, ``{codops: valid root dependencies}`` (empty unless the file
    is usable and has a ``dependencies`` key) and the problems found.
    """
    parsed = parse_definition_file(text, rel_file, root, repo, allowed_codops, default_timeouts)
    return parsed.tasks, parsed.dependencies, parsed.problems


def parse_definition_file(
    text: str,
    rel_file: str,
    root: Path,
    repo: str,
    allowed_codops: Collection[str] | None = None,
    default_timeouts: tuple[float, float] = (3600.0, 300.0),
) -> ParsedFile:
    """As ``parse_definition_text``, with the file's environments and its valid alert rules
    (``alerts:``) too."""
    return _FileParser(text, rel_file, root, repo, allowed_codops, default_timeouts).parse()


class _FileParser:
    """The checks for one file; collects problems instead of raising."""

    def __init__(
        self,
        text: str,
        rel_file: str,
        root: Path,
        repo: str,
        allowed_codops: Collection[str] | None,
        default_timeouts: tuple[float, float],
    ) -> None:
        self.text = text
        self.file = rel_file
        self.root = root
        self.repo = repo
        self.allowed = allowed_codops
        self.org_limit, self.metadata_limit = default_timeouts
        self.problems: list[Problem] = []
        self.alerts: list[SourcedRule] = []
        self.lines = LineMap()
        # YAML counts fewer line breaks than str.splitlines (no \v, \f), and reports
        # end-of-input errors one line past the last; clamp so a line always exists.
        self.max_line = max(1, len(text.splitlines()))

    def problem(self, message: str, line: int | None = None) -> None:
        if line is not None:
            line = min(max(line, 1), self.max_line)
        self.problems.append(Problem(kind="config", scope=self.repo, message=message, file=self.file, line=line))

    def at(self, message: str, path: Path_) -> None:
        self.problem(message, self.lines.line_of(path))

    def from_config(self, exc: ConfigProblem) -> None:
        self.problem(exc.message, exc.line)

    # -- file level --------------------------------------------------------------

    def parse(self) -> ParsedFile:
        data = self.load()
        if data is None:
            return ParsedFile(problems=self.problems)
        self.report_duplicates()
        data = self.string_keys(data, ())
        usable = True  # False: a file-level problem, none of the file's tasks are kept

        # Pydantic checks the types; a field with an error is then ignored (or, for
        # codops, makes the file unusable) while the other fields are still used.
        fields_with_errors: set[Any] = set()
        try:
            _DefinitionFile.model_validate(data)
        except ValidationError as exc:
            # validation_problems yields one problem per error, in the same order.
            for err, problem in zip(exc.errors(), validation_problems(exc, self.file, self.lines)):
                if err["loc"]:
                    fields_with_errors.add(err["loc"][0])
                if err["type"] == "missing" and tuple(err["loc"]) == ("codops",):
                    self.at("missing key 'codops'; add the organisation of these tasks, e.g. `codops: default`", ())
                else:
                    self.from_config(problem)
        if "codops" in fields_with_errors:
            usable = False
        codops = data.get("codops")
        if usable and not self.check_codops(codops):
            usable = False
        if not self.one_form(data):
            usable = False
        codops = codops if usable else ""

        deps: dict[str, list[str]] = {}
        # env -> entries; base first, so that it is declared even when only tasks add to it
        envs: dict[str, list[Declared]] = {}
        if "dependencies" in data and "dependencies" not in fields_with_errors:
            kept = self.requirements(data["dependencies"] or [], ("dependencies",))
            envs.setdefault(BASE_ENV, []).extend(kept)
            if usable:
                deps[codops] = [d.requirement for d in kept]
        if "py_environments" not in fields_with_errors:
            for env, entries in self.py_environments(data.get("py_environments") or {}).items():
                envs.setdefault(env, []).extend(entries)

        # Tasks are checked even when the file is unusable so that one round of fixes
        # can address every problem; they are dropped below.
        tasks: list[TaskSpec] = []
        raw_tasks = data.get("tasks") if "tasks" not in fields_with_errors else None
        for name, body in (raw_tasks or {}).items():
            spec = self.task(name, body, codops, envs)
            if spec is not None:
                tasks.append(spec)
        if "alerts" not in fields_with_errors:
            rules = self.alert_rules(data.get("alerts") or [], codops)
            self.alerts = rules if usable else []
        # Checks run field by field; people read problems top to bottom.
        self.problems.sort(key=lambda p: p.line or 0)
        if not usable:
            return ParsedFile(problems=self.problems)
        return ParsedFile(tasks, deps, {codops: envs} if envs else {}, self.problems, self.alerts)

    def one_form(self, data: dict[str, Any]) -> bool:
        """False, after one problem, when the file mixes the tutorial's ``dependencies`` with
        today's ``py_environments``/``py_env``: which environment gets what would be a guess."""
        old: list[Path_] = [("dependencies",)] if "dependencies" in data else []
        new: list[Path_] = [("py_environments",)] if "py_environments" in data else []
        tasks = data.get("tasks")
        for name, body in (tasks.items() if isinstance(tasks, dict) else ()):
            if isinstance(body, dict):
                old += [("tasks", name, "dependencies")] if "dependencies" in body else []
                new += [("tasks", name, "py_env")] if "py_env" in body else []
        if not old or not new:
            return True
        first_old = min(old, key=lambda p: self.lines.line_of(p) or 0)
        first_new = min(new, key=lambda p: self.lines.line_of(p) or 0)
        self.at(
            f"this file mixes the tutorial's `{dotted(first_old)}` (line {self.lines.line_of(first_old)}) with "
            f"today's `{dotted(first_new)}` (line {self.lines.line_of(first_new)}); use one form per file: move "
            "the packages into `py_environments: {base: {dependencies: [...]}}` (a task's own into an "
            "environment it names with `py_env`), or remove `py_environments`/`py_env`. None of this file's "
            "tasks run until then",
            first_new,
        )
        return False

    def py_environments(self, raw: dict[Any, Any]) -> dict[str, list[Declared]]:
        """The valid environments of ``py_environments`` and their valid entries."""
        out: dict[str, list[Declared]] = {}
        path: Path_ = ("py_environments",)
        for name, body in self.string_keys(raw, path).items():
            here = path + (name,)
            if not ENV_NAME.fullmatch(name):
                self.at(f"environment name {name!r} may contain only letters, digits, '_' and '-' "
                        "(at most 64); rename it", here)
                continue
            if body is None:
                body = {}
            if not isinstance(body, dict):
                self.at(f"environment '{name}' must be a mapping like `{name}: {{dependencies: [pandas]}}`, "
                        f"not {_kind(body)}; fix it", here)
                continue
            model = self.validated(_PyEnvironment, self.string_keys(body, here), here)
            if model is None:
                continue
            out[name] = self.requirements(model.dependencies or [], here + ("dependencies",))
        return out

    def load(self) -> dict[Any, Any] | None:
        """The top-level mapping, or None after reporting why there is none."""
        try:
            data, self.lines = load_yaml_file(self.text, self.file)
        except ConfigProblem as exc:
            self.from_config(exc)
            return None
        except RecursionError:
            self.problem("this file is nested too deeply to read; flatten it", None)
            return None
        except Exception as exc:  # noqa: BLE001 - the YAML library may fail in other ways on odd input
            self.problem(f"this file cannot be read as YAML ({type(exc).__name__}: {exc}); fix the file", None)
            return None
        if data is None:
            self.problem("this file has no definitions; add `codops:` and `tasks:`, or delete the file", None)
            return None
        if not isinstance(data, dict):
            self.at(
                f"the top level must be a mapping with `codops:` and `tasks:`, not {_kind(data)}; "
                "rewrite the file as `key: value` lines",
                (),
            )
            return None
        return data

    def report_duplicates(self) -> None:
        for path, line in self.lines.duplicates:
            if len(path) == 2 and path[0] == "tasks":
                message = (
                    f"task '{path[1]}' is defined twice in this file; the first definition is used, remove the other"
                )
            else:
                message = f"key '{dotted(path)}' is given twice; the first value is used, remove the other"
            self.problem(message, line)

    def validated(self, model: type[_Model], fields: dict[str, Any], path: Path_) -> _Model | None:
        """``fields`` as ``model``, or None after reporting one problem per validation error
        (placed under ``path``)."""
        try:
            return model.model_validate(fields)
        except ValidationError as exc:
            for problem in validation_problems(exc, self.file, self.lines, path):
                self.from_config(problem)
            return None

    def string_keys(self, mapping: dict[Any, Any], path: Path_) -> dict[str, Any]:
        """``mapping`` without its non-string keys, each of which is reported."""
        out: dict[str, Any] = {}
        for key, value in mapping.items():
            if isinstance(key, str):
                out[key] = value
            else:
                where = f"in '{dotted(path)}'" if path else "at the top level"
                self.at(f"unknown key {key!r} {where}; remove it or check its spelling", path + (key,))
        return out

    def check_codops(self, codops: str) -> bool:
        if not codops:
            self.at("codops is empty; give the organisation of these tasks, e.g. `codops: default`", ("codops",))
            return False
        if not _CODOPS.fullmatch(codops):
            self.at(
                f"codops {codops!r} may contain only lowercase letters, digits, '_' and '-'; fix codops",
                ("codops",),
            )
            return False
        if codops == METADATA_LOOP:
            self.at(
                f"codops '{METADATA_LOOP}' is reserved for the shared metadata loop; use your organisation's "
                f"codops and put `loop: {METADATA_LOOP}` on the tasks that belong there",
                ("codops",),
            )
            return False
        if self.allowed is not None and codops not in self.allowed:
            allowed = ", ".join(sorted(self.allowed))
            if allowed:
                message = f"this repository may define tasks only for: {allowed}"
            else:
                message = "this repository may not define tasks for any codops"
            self.at(
                f"{message}; ask the platform team to allow '{codops}' in scheduler.yaml or fix codops", ("codops",)
            )
            return False
        return True

    def alert_rules(self, entries: list[Any], codops: str) -> list[SourcedRule]:
        """The valid rules of ``alerts:``; one problem per mistake (whether the platform allows
        a rule's destination is checked at sync, against scheduler.yaml)."""
        kept: list[SourcedRule] = []
        for index, entry in enumerate(entries):
            path: Path_ = ("alerts", index)
            if not isinstance(entry, dict):
                self.at(f"each entry of `alerts` must be a mapping (name, events, and webhook, slack or email), "
                        f"not {_kind(entry)}", path)
                continue
            rule = self.validated(OrganisationRule, self.string_keys(entry, path), path)
            if rule is None:
                continue
            if any(r.rule.name == rule.name for r in kept):
                self.at(f"alert rule '{rule.name}' is given twice; rename one", path + ("name",))
                continue
            kept.append(SourcedRule(codops, rule, self.repo, self.file, self.lines.line_of(path)))
        return kept

    def requirements(self, entries: list[Any], path: Path_) -> list[Declared]:
        """The valid entries of a ``dependencies`` list (stripped, with their lines); one
        problem per bad entry."""
        kept: list[Declared] = []
        for index, entry in enumerate(entries):
            message = requirement_problem(entry)
            if message is not None:
                self.at(message, path + (index,))
            elif entry.strip() not in [d.requirement for d in kept]:
                kept.append(Declared(entry.strip(), self.repo, self.file, self.lines.line_of(path + (index,))))
        return kept

    # -- task level --------------------------------------------------------------

    def task(self, name: Any, body: Any, codops: str, envs: dict[str, list[Declared]]) -> TaskSpec | None:
        """The task's spec, or None after reporting each of its problems."""
        path: Path_ = ("tasks", name)
        if not isinstance(name, str):
            self.at(f"task name {name!r} is not a string; quote it, e.g. '{name}'", path)
            return None
        if not _TASK_NAME.fullmatch(name) or set(name) == {"."}:
            # Names end up in log paths and URLs; dots alone would mean a directory.
            self.at(
                f"task name {name!r} may contain only letters, digits, '_', '.' and '-' "
                "(and not only dots); rename the task",
                path,
            )
            return None
        if not isinstance(body, dict):
            self.at(
                f"task '{name}' must be a mapping with at least `notebook:` and `method:`, not {_kind(body)}; "
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


def _kind(value: Any) -> str:
    """A person's words for a YAML value's type, with the article."""
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"
