"""One base error for the whole product, and the problem shape people see.

A ``Problem`` is data (it is stored and listed); a ``PeachError`` is raised. Both
name the file and, where there is one, the line, and say what to do.
"""

from __future__ import annotations

from dataclasses import dataclass


class PeachError(Exception):
    """Base of every error peach-tasks raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """Something wrong that a person must fix; never stops the other tasks.

    ``kind`` is one of ``config`` (definitions, settings), ``sync`` (git) or
    ``environment`` (uv builds). ``scope`` says whose problem it is: a codops for
    environment problems, the repository name for config and sync problems.
    """

    kind: str
    scope: str
    message: str
    file: str = ""
    line: int | None = None

    def location(self) -> str:
        if not self.file:
            return self.scope
        return f"{self.file}:{self.line}" if self.line else self.file

    def __str__(self) -> str:
        return f"{self.location()}: {self.message}"


class ConfigProblem(PeachError):
    """A configuration file that cannot be used; carries the file and line."""

    def __init__(self, file: str, line: int | None, message: str) -> None:
        self.file, self.line, self.message = file, line, message
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {message}")

    def as_problem(self, scope: str, kind: str = "config") -> Problem:
        return Problem(kind=kind, scope=scope, message=self.message, file=self.file, line=self.line)
