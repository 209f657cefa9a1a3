"""What a sandbox started ahead imports while it waits: the next task's own imports.

A loop starts the next task's sandbox while the current task runs (``warm.py``). Most of
a small notebook's start is importing what it uses (numpy, pandas, matplotlib: hundreds of
milliseconds), so the waiting sandbox imports those modules too, and the run finds them in
``sys.modules`` as a Jupyter kernel that ran the notebook's imports would. The sandbox is
still fresh and used once: nothing of another run is in it, only modules of the
organisation's own environment, imported before the run's request came.

Only modules that mean the same before and after the request are imported ahead:

- absolute imports the run executes: the cells' own statements (in ``if``, ``try``, ``with``
  and loops too) and the entry function's body; not other functions' or classes', which may
  never run, nor ``if TYPE_CHECKING:`` ones;
- not a name the run's folder holds (``name.py``, ``name/``, ``name.*.so``): the working
  folder comes before site-packages on ``sys.path`` and its own module must win over an
  installed one, as in Jupyter (a standard library name is left to the run too: harmless);
- nothing at all when the notebook writes files (``%%writefile``/``%%file``) or ``%run``s
  them: those files appear during the run;
- and, in the sandbox (``bootstrap_start.preload``), only what its interpreter finds in the
  standard library or the environment's site-packages; an import that fails there is
  forgotten (the run imports it itself and sees its error in its own log).
"""

from __future__ import annotations

import ast
import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..sources.notebook_entry import UNCOMPILABLE

MAX_MODULES = 32  # a notebook importing more gets its first 32 ahead, the rest when it runs
MAX_NAME = 200  # characters: the names go on the sandbox's command line
NOT_AHEAD = ("__future__", "peach_tasks")  # no module to load / our helpers, given per run


def preload_names(code: str, program: dict[str, Any] | None, cwd: Path,
                  method: str | None = None) -> tuple[str, ...]:
    """The modules to import ahead for a task whose code is ``code`` (``program``: its
    cells, as the run gets them), whose entry function is ``method`` and whose folder is
    ``cwd``."""
    cells = tuple(_cell_code(cell) for cell in (program or {}).get("cells", ())) or (code,)
    if any(cell is None for cell in cells):
        return ()  # %%writefile/%%file or %run: files that appear during the run
    names = _imports(cells, method)  # type: ignore[arg-type]
    if not names:
        return ()
    local = _folder_names(cwd)
    return tuple(n for n in names if n.split(".", 1)[0] not in local)[:MAX_MODULES]


def _cell_code(cell: Any) -> str | None:
    """A cell's Python, or None when the cell writes or runs files."""
    if not isinstance(cell, dict):
        return ""
    magic = cell.get("magic")
    if isinstance(magic, dict) and magic.get("name") in ("writefile", "file"):
        return None
    code = cell.get("code")
    if not isinstance(code, str):
        return ""
    if "writefile" in code or "run_line_magic('run'" in code or 'run_line_magic("run"' in code:
        return None  # a magic turned into a call of the notebook's shell
    return code


@functools.lru_cache(maxsize=512)
def _imports(cells: tuple[str, ...], method: str | None) -> tuple[str, ...]:
    """The absolute imports the run will execute for sure or nearly: those of the cells' own
    statements (inside ``if``, ``try``, ``with``, loops) and of the entry function ``method``,
    not those of other functions and classes, which may never be called, nor ``if
    TYPE_CHECKING:`` ones. In order, once each (cached: a task's cells only change with its
    commit)."""
    found: dict[str, None] = {}
    flags = ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    for code in cells:
        try:
            tree = compile(code, "<cell>", "exec", flags, dont_inherit=True)
        except UNCOMPILABLE:
            continue  # the run reports it
        for name in _run_imports(tree.body, method):
            if len(name) <= MAX_NAME and not name.startswith(NOT_AHEAD):
                found.setdefault(name, None)
    return tuple(found)


def _run_imports(statements: list[ast.stmt], method: str | None) -> Iterator[str]:
    for node in statements:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                yield node.module
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if node.name == method:
                yield from _run_imports(node.body, None)
        elif isinstance(node, ast.ClassDef):
            continue
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _run_imports(node.orelse, method)
        else:  # a compound statement's blocks: if/else, try/except/finally, with, for, while, match
            for block in _blocks(node):
                yield from _run_imports(block, method)


def _blocks(node: ast.stmt) -> Iterator[list[ast.stmt]]:
    for field in ("body", "orelse", "finalbody"):
        block = getattr(node, field, None)
        if isinstance(block, list):
            yield block
    for part in getattr(node, "handlers", None) or getattr(node, "cases", None) or ():
        yield part.body


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


# A module that reads a file of the run's folder when it is imported (matplotlib its
# ``./matplotlibrc``): imported ahead, before the run enters that folder, it would miss it.
_READS_AT_IMPORT = {"matplotlibrc": "matplotlib"}


def _folder_names(cwd: Path) -> set[str]:
    """The module names the run's folder would give (it is before site-packages on the run's sys.path),
    and those of modules that read one of its files at import (``_READS_AT_IMPORT``)."""
    try:
        entries = os.listdir(cwd)
    except OSError:
        return set()
    return {entry.split(".", 1)[0] for entry in entries} | {_READS_AT_IMPORT[e] for e in entries
                                                            if e in _READS_AT_IMPORT}
