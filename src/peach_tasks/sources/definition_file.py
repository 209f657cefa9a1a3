"""One definition file checked: its ``codops``, its packages and every task.

Packages are declared in one of two forms per file (``py_environments.py`` says how they
become environments): the tutorial's ``dependencies:`` (root and per task), or today's
PEACH ``py_environments:`` with ``py_env:`` on tasks. A file mixing both is unusable.

``definitions.py`` finds and reads a checkout's files; this module turns one file's text
into tasks and problems: the file level here, each task in ``definition_tasks.py``, the
checks both use in ``definition_checks.py``. Nothing here raises for bad input: every mistake becomes one
``Problem`` with the line to fix, and costs as little as possible. A broken file (syntax,
``codops``) loses only its own tasks; a broken task loses only itself; a bad entry of a
``dependencies`` list loses only that entry.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ..alert_settings import OrganisationRule, SourcedRule
from ..errors import ConfigProblem, Problem
from ..model import BASE_ENV, METADATA_LOOP, TaskSpec
from .definition_checks import kind
from .definition_tasks import TaskChecks
from .py_environments import ENV_NAME, Declared
from .yamlsource import Path_, dotted, load_yaml_file, validation_problems

_CODOPS = re.compile(r"[a-z0-9_-]{1,64}")  # the store's column holds 64


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


class _FileParser(TaskChecks):
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
        super().__init__(text, rel_file, repo)
        self.text = text
        self.root = root
        self.allowed = allowed_codops
        self.org_limit, self.metadata_limit = default_timeouts
        self.alerts: list[SourcedRule] = []

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
                        f"not {kind(body)}; fix it", here)
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
                f"the top level must be a mapping with `codops:` and `tasks:`, not {kind(data)}; "
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

    def check_codops(self, codops: str) -> bool:
        if not codops:
            self.at("codops is empty; give the organisation of these tasks, e.g. `codops: default`", ("codops",))
            return False
        if not _CODOPS.fullmatch(codops):
            self.at(
                f"codops {codops[:100]!r} may contain only lowercase letters, digits, '_' and '-', at most 64 "
                "of them; fix codops",
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
                        f"not {kind(entry)}", path)
                continue
            rule = self.validated(OrganisationRule, self.string_keys(entry, path), path)
            if rule is None:
                continue
            if any(r.rule.name == rule.name for r in kept):
                self.at(f"alert rule '{rule.name}' is given twice; rename one", path + ("name",))
                continue
            kept.append(SourcedRule(codops, rule, self.repo, self.file, self.lines.line_of(path)))
        return kept
