"""``peach-tasks validate``: check a working copy with the code the scheduler runs.

Every check here calls the very function the scheduler calls for the same step, so
"validate says it is fine" and "the scheduler runs it" cannot drift apart:

* definition files, types, paths, codops, timeouts, requirement strings and
  duplicates: :func:`definitions.load_definitions`;
* notebook readable, entry method found, extracted code compiles:
  :func:`notebook.extract_code`, once per task;
* (``resolve=True``) the organisation's requirement set, built as the registry builds
  it, resolved by ``uv pip compile``, which installs nothing.

Only *where* a problem is reported is added: a syntax error points at the line of
the ``.ipynb`` file that holds the offending source line, a missing method at the
task's ``method:`` line, and files git does not track are reported because the
scheduler only ever sees what is committed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .definitions import RepoDefinitions, load_definitions
from .environments import uv_binary, uv_env
from .errors import ConfigProblem, Problem
from .model import TaskSpec
from .notebook import NotebookError, extract_code
from .registry import requirement_sets
from .yamlsource import LineMap, load_yaml_file

RESOLVE_TIMEOUT = 300.0
_OUTPUT_TAIL = 12


@dataclass(frozen=True)
class Report:
    """What ``validate_directory`` found: every problem, in file and line order."""

    root: Path
    problems: tuple[Problem, ...]
    tasks: tuple[TaskSpec, ...]
    files: tuple[str, ...]
    seconds: float
    resolved: dict[str, tuple[str, ...]] = field(default_factory=dict)  # codops -> pinned set

    @property
    def ok(self) -> bool:
        return not self.problems


def validate_directory(
    root: Path,
    *,
    allowed_codops: Collection[str] | None = None,
    timeouts: tuple[float, float] = (3600.0, 300.0),
    resolve: bool = False,
    python_version: str | None = None,
) -> Report:
    """Check the working copy at ``root``; never raises for anything in it.

    ``allowed_codops`` and ``timeouts`` are what ``scheduler.yaml`` would give this
    repository (organisation loop, metadata loop). With ``resolve``, each
    organisation's dependencies are resolved with uv for ``python_version`` (default:
    this interpreter's) without installing anything.
    """
    started = time.perf_counter()
    root = Path(root)
    defs = load_definitions(root, root.resolve().name, allowed_codops, timeouts)
    problems = list(defs.problems)
    lines = _LineIndex(root)
    if not defs.files:
        problems.append(Problem("config", root.name, "no peach.yaml or peach.conf/*.yaml here; add one that "
                                "defines your tasks (see the tutorial), or run validate in the repository root",
                                file="peach.yaml"))
    problems.extend(_notebook_problems(root, defs.tasks, lines))
    problems.extend(_untracked(root, defs))
    resolved: dict[str, tuple[str, ...]] = {}
    if resolve:
        for codops, requirements in requirement_sets([defs.org_dependencies], defs.tasks).items():
            pinned, problem_list = resolve_requirements(codops, requirements, root, defs, python_version, lines)
            problems.extend(problem_list)
            if pinned is not None:
                resolved[codops] = pinned
    problems.sort(key=lambda p: (p.file, p.line or 0))
    return Report(root, tuple(problems), defs.tasks, defs.files, time.perf_counter() - started, resolved)


# -- notebooks ---------------------------------------------------------------------

def _notebook_problems(root: Path, tasks: tuple[TaskSpec, ...], lines: "_LineIndex") -> Iterator[Problem]:
    seen: dict[tuple[str, str | None, bool], NotebookError | None] = {}
    for spec in tasks:
        key = (spec.notebook, spec.method, spec.full_notebook)
        if key not in seen:  # same notebook, method and mode: the same answer
            try:
                extract_code(root / spec.notebook, spec.method, spec.full_notebook, display_name=spec.notebook)
                seen[key] = None
            except NotebookError as exc:
                seen[key] = exc
        error = seen[key]
        if error is not None:
            yield _locate(root, spec, error, lines)


def _locate(root: Path, spec: TaskSpec, error: NotebookError, lines: "_LineIndex") -> Problem:
    """The problem at the place a person fixes it: the cell's line, or the task's key."""
    task = f"{spec.codops}/{spec.name}"
    message = str(error)
    if error.kind == "method":
        line = lines.line_of(spec.source_file, ("tasks", spec.name, "method")) or spec.source_line
        return Problem("notebook", task, f"{message} (task {task})", spec.source_file, line)
    # The message starts with the notebook's name, which FILE: already shows.
    message = message.removeprefix(f"{spec.notebook}: ").removeprefix(f"{spec.notebook} ")
    line = error.file_line
    if line is None and error.cell is not None:
        line = ipynb_line(root / spec.notebook, error.cell - 1, error.line or 1)
    return Problem("notebook", task, f"{message} (task {task}, {spec.source_file}:{spec.source_line})",
                   spec.notebook, line)


def ipynb_line(path: Path, cell_index: int, cell_line: int) -> int | None:
    """Line of the ``.ipynb`` file at ``path`` that holds line ``cell_line`` of cell ``cell_index``.

    ``cell_index`` is 0-based among all cells. Jupyter writes a cell's source as a
    list with one string per line, so the answer is exact for notebooks Jupyter
    saved; a source given as one string points at that string. None when the file
    is not the JSON expected.
    """
    try:
        text = path.read_bytes().decode("utf-8-sig")
        cells = _member(text, _skip(text, 0), "cells")
        if cells is None:
            return None
        for index, start in enumerate(_items(text, cells)):
            if index == cell_index:
                source = _member(text, start, "source")
                if source is None:
                    return _line_at(text, start)
                if text[source] != "[":
                    return _line_at(text, source)
                return _line_in_list(text, source, cell_line)
    except (OSError, ValueError, IndexError):
        return None
    return None


_DECODER = json.JSONDecoder()
_WS = re.compile(r"[ \t\n\r]*")


def _skip(text: str, pos: int) -> int:
    return _WS.match(text, pos).end()  # type: ignore[union-attr]  # always matches


def _line_at(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _member(text: str, pos: int, wanted: str) -> int | None:
    """Start of the value of key ``wanted`` in the JSON object starting at ``pos``."""
    if text[pos] != "{":
        return None
    pos = _skip(text, pos + 1)
    while text[pos] != "}":
        key, pos = json.decoder.scanstring(text, pos + 1)  # type: ignore[attr-defined]
        pos = _skip(text, pos)
        if text[pos] != ":":
            raise ValueError("':' expected")
        value = _skip(text, pos + 1)
        if key == wanted:
            return value
        pos = _skip(text, _DECODER.raw_decode(text, value)[1])
        if text[pos] == ",":
            pos = _skip(text, pos + 1)
    return None


def _items(text: str, pos: int) -> Iterator[int]:
    """Start of each element of the JSON array starting at ``pos``."""
    if text[pos] != "[":
        raise ValueError("'[' expected")
    pos = _skip(text, pos + 1)
    while text[pos] != "]":
        yield pos
        pos = _skip(text, _DECODER.raw_decode(text, pos)[1])
        if text[pos] == ",":
            pos = _skip(text, pos + 1)


def _line_in_list(text: str, pos: int, cell_line: int) -> int:
    """File line of the list element (of a cell's source) that holds line ``cell_line``."""
    first = None
    newlines = 0  # line breaks in the elements before this one
    best = None
    for start in _items(text, pos):
        first = first if first is not None else start
        if newlines + 1 > cell_line:
            break
        best = start
        value, _ = _DECODER.raw_decode(text, start)
        newlines += str(value).count("\n")
    target = best if best is not None else first if first is not None else pos
    return _line_at(text, target)


# -- definition file lines -----------------------------------------------------------

class _LineIndex:
    """Lines of keys in the definition files, read only when a problem needs one."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._maps: dict[str, LineMap | None] = {}
        self._data: dict[str, Any] = {}

    def load(self, rel: str) -> tuple[Any, LineMap | None]:
        if rel not in self._maps:
            try:
                text = (self.root / rel).read_text(encoding="utf-8").removeprefix("\ufeff")
                self._data[rel], self._maps[rel] = load_yaml_file(text, rel)
            except (OSError, UnicodeDecodeError, ConfigProblem):
                self._data[rel], self._maps[rel] = None, None
        return self._data[rel], self._maps[rel]

    def line_of(self, rel: str, path: tuple[Any, ...]) -> int | None:
        lines = self.load(rel)[1]
        return lines.line_of(path) if lines is not None else None

    def requirement_lines(self, rel: str, codops: str) -> Iterator[tuple[str, int | None]]:
        """(canonical package name, line) of each dependency entry in ``rel`` for ``codops``."""
        data, lines = self.load(rel)
        if not isinstance(data, dict) or data.get("codops") != codops or lines is None:
            return
        lists: list[tuple[tuple[Any, ...], Any]] = [(("dependencies",), data.get("dependencies"))]
        tasks = data.get("tasks")
        if isinstance(tasks, dict):
            lists += [(("tasks", name, "dependencies"), body.get("dependencies"))
                      for name, body in tasks.items() if isinstance(body, dict)]
        for path, entries in lists:
            for index, entry in enumerate(entries if isinstance(entries, list) else []):
                try:
                    name = canonicalize_name(Requirement(str(entry).strip()).name)
                except Exception:  # noqa: BLE001 - a bad entry was reported by the definitions
                    continue
                yield name, lines.line_of(path + (index,))


# -- git -------------------------------------------------------------------------------

def _untracked(root: Path, defs: RepoDefinitions) -> Iterator[Problem]:
    """Files the tasks need that git does not track: the scheduler's checkout lacks them."""
    try:
        # Without --full-name the paths are relative to root, as defs.files are.
        proc = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--", "."],
                              capture_output=True, timeout=60, env={**os.environ, "LC_ALL": "C"})
    except (OSError, subprocess.TimeoutExpired):
        return  # no git here: nothing to compare with
    if proc.returncode != 0:
        return  # not a git working copy (an exported tree, a CI artifact)
    tracked = {name for name in proc.stdout.decode("utf-8", "replace").split("\0") if name}
    for rel in defs.files:
        if rel not in tracked:
            yield Problem("config", root.name, "this file is not tracked by git, so the scheduler will not "
                                               f"see it; `git add {rel}` and commit it", rel)
    reported: set[str] = set()
    for spec in defs.tasks:
        if spec.notebook not in tracked and spec.notebook not in reported and spec.source_file in tracked:
            reported.add(spec.notebook)
            yield Problem("notebook", f"{spec.codops}/{spec.name}",
                          f"notebook '{spec.notebook}' is not tracked by git, so the scheduler will not see it; "
                          f"`git add {spec.notebook}` and commit it", spec.source_file, spec.source_line)


# -- resolving with uv ----------------------------------------------------------------

def resolve_requirements(
    codops: str,
    requirements: tuple[str, ...],
    root: Path,
    defs: RepoDefinitions,
    python_version: str | None = None,
    lines: "_LineIndex | None" = None,
) -> tuple[tuple[str, ...] | None, list[Problem]]:
    """Resolve one organisation's set with ``uv pip compile`` (nothing is installed).

    Returns the pinned set, or None and the problems, placed at the dependency
    entries whose packages uv's error names (else at the first definition file).
    """
    version = python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
    if not requirements:
        return (), []
    env = uv_env()
    cmd = [uv_binary(), "pip", "compile", "-", "--quiet", "--no-header", "--no-annotate",
           "--python-version", version]
    try:
        proc = subprocess.run(cmd, input="\n".join(requirements) + "\n", capture_output=True, text=True,
                              timeout=RESOLVE_TIMEOUT, env=env)
        failed, output = proc.returncode != 0, proc.stderr or proc.stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        failed, output = True, str(exc)
    if not failed:
        pinned = tuple(line.strip() for line in proc.stdout.splitlines()
                       if line.strip() and not line.lstrip().startswith("#"))
        return pinned, []
    tail = " | ".join(line.strip() for line in output.strip().splitlines()[-_OUTPUT_TAIL:] if line.strip())
    message = (f"the dependencies of '{codops}' cannot be resolved for Python {version} "
               f"(uv: {tail}); fix the versions or remove the package")
    lines = lines or _LineIndex(root)
    named = _named_in(output, requirements)
    entries = [(rel, name, line) for rel in defs.files for name, line in lines.requirement_lines(rel, codops)]
    places = [(rel, line) for rel, name, line in entries if name in named]
    if not places:  # uv named nothing we know (network, index): point at the first list
        places = [(entries[0][0], entries[0][2])] if entries else [(defs.files[0] if defs.files else "", None)]
    return None, [Problem("environment", codops, message, rel, line) for rel, line in places]


def _named_in(output: str, requirements: tuple[str, ...]) -> set[str]:
    """Canonical names of the requirements that uv's message mentions."""
    words = {canonicalize_name(w) for w in re.findall(r"[A-Za-z0-9][A-Za-z0-9._-]*", output)}
    return {name for name in (canonicalize_name(Requirement(r).name) for r in requirements) if name in words}


# -- output ----------------------------------------------------------------------------

def shown_path(root: Path, rel: str, given: str) -> str:
    """``rel`` as a person typed the directory: bare when it is '.', else joined to it."""
    if not rel:
        return given
    return rel if given in ("", ".", "./") else os.path.join(given, rel)


def report_lines(report: Report, given: str) -> list[str]:
    """Each problem as ``FILE:LINE: message`` (``FILE: message`` when there is no line)."""
    out = []
    for p in report.problems:
        where = shown_path(report.root, p.file, given)
        out.append(f"{where}:{p.line}: {p.message}" if p.line else f"{where}: {p.message}")
    return out


def report_json(report: Report, given: str) -> str:
    """The report for tools: ``{"ok", "tasks", "problems": [{file, path, line, kind, scope, message}]}``."""
    return json.dumps({
        "ok": report.ok,
        "tasks": [f"{t.codops}/{t.name}" for t in report.tasks],
        "files": list(report.files),
        "resolved": {codops: list(pins) for codops, pins in report.resolved.items()},
        "problems": [{"file": p.file, "path": shown_path(report.root, p.file, given), "line": p.line,
                      "kind": p.kind, "scope": p.scope, "message": p.message} for p in report.problems],
        "seconds": round(report.seconds, 4),
    }, indent=2)
