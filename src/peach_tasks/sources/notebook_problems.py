"""Whether each task's notebook can run, with the problem at the line a person fixes.

One code path for ``validate`` (a working copy) and the scheduler's sync (a checkout):
what one reports, the other reports too.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import ConfigProblem, Problem
from ..model import TaskSpec
from .notebook import NotebookError, extract_code
from .notebook_files import MAX_NOTEBOOK_BYTES
from .yamlsource import LineMap, load_yaml_file

log = logging.getLogger(__name__)


def notebook_problems(root: Path, tasks: tuple[TaskSpec, ...], lines: "DefinitionLines | None" = None) -> Iterator[Problem]:
    """A problem for each task whose notebook cannot be run: unreadable, not a notebook, no
    entry method, code that does not compile. Each at the line a person fixes."""
    lines = lines or DefinitionLines(root)
    seen: dict[tuple[str, str | None, bool], NotebookError | None] = {}
    for spec in tasks:
        key = (spec.notebook, spec.method, spec.full_notebook)
        if key not in seen:  # same notebook, method and mode: the same answer
            try:
                extract_code(root / spec.notebook, spec.method, spec.full_notebook, display_name=spec.notebook)
                seen[key] = None
            except NotebookError as exc:
                seen[key] = exc
            except Exception as exc:  # our own failure on an odd notebook: its tasks' problem, not the repository's
                log.exception("reading %s failed", spec.notebook)
                seen[key] = NotebookError(f"{spec.notebook}: peach-tasks failed to read this notebook "
                                          f"({type(exc).__name__}: {exc}); its tasks cannot run until this is "
                                          "fixed: please report it with the notebook")
        error = seen[key]
        if error is not None:
            for each in (error, *error.also):
                yield _locate(root, spec, each, lines)


def _locate(root: Path, spec: TaskSpec, error: NotebookError, lines: "DefinitionLines") -> Problem:
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
        if path.stat().st_size > MAX_NOTEBOOK_BYTES:  # refused before (read_code_cells): not read here either
            return None
        text = path.read_bytes().decode("utf-8-sig")
        top = _skip(text, 0)
        cells = _member(text, top, "cells")
        worksheets = _member(text, top, "worksheets") if cells is None else None
        if cells is not None:
            starts: Iterator[int] = _items(text, cells)
        elif worksheets is not None:  # nbformat 3: the cells of every worksheet, in order
            starts = _worksheet_cells(text, worksheets)
        else:
            return None
        for index, start in enumerate(starts):
            if index == cell_index:
                source = _member(text, start, "source")
                if source is None:
                    source = _member(text, start, "input")  # nbformat 3's code cells
                if source is None:
                    return _line_at(text, start)
                if text[source] != "[":
                    return _line_at(text, source)
                return _line_in_list(text, source, cell_line)
    except (OSError, ValueError, IndexError):
        return None
    return None


_DECODER = json.JSONDecoder()


def _worksheet_cells(text: str, worksheets: int) -> Iterator[int]:
    """Start of each cell of each worksheet (nbformat 3) in the array at ``worksheets``."""
    for sheet in _items(text, worksheets):
        cells = _member(text, sheet, "cells")
        if cells is not None:
            yield from _items(text, cells)
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


class DefinitionLines:
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

