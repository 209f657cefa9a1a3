"""What every check of a definition file shares: problems collected, never raised.

A problem is placed on the line of the YAML path it is about (``LineMap``), clamped to
the file's lines. ``definition_file.py`` (the file level) and ``definition_tasks.py`` (each
task) build on ``DefinitionChecks``.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ..errors import ConfigProblem, Problem
from .py_environments import Declared
from .requirements import requirement_problem
from .yamlsource import LineMap, Path_, dotted, validation_problems

_Model = TypeVar("_Model", bound=BaseModel)


class DefinitionChecks:
    """One file's problems, and the checks every part of the file uses."""

    def __init__(self, text: str, rel_file: str, repo: str) -> None:
        self.file = rel_file
        self.repo = repo
        self.problems: list[Problem] = []
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


def kind(value: Any) -> str:
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
