"""Python code out of a notebook, cell by cell, as Jupyter runs it.

Two modes, chosen by the task definition:

* cell-only (``full_notebook=False``): only the code cell whose top level defines
  ``method`` runs; nothing from the other cells is available to it;
* full notebook (``full_notebook=True``): every code cell in order, like "Run all".

Each cell is compiled on its own, as IPython does: ``from __future__`` imports are valid
at the top of any cell (and, as in IPython, once imported they hold for later cells),
top-level ``await`` is allowed, and an error names the notebook, the cell and the line in
the cell. IPython magics are turned into Python (:mod:`.magics`); one peach-tasks cannot
run as Jupyter does is refused here, before any run, as is an entry function that cannot
be called as the scheduler calls it. ``%run other.py`` / ``%run other.ipynb`` is resolved
here too: the file is read from the repository and its code shipped with the task's.

In messages and notes "cell N" counts every cell of the notebook from 1, markdown and
raw cells included, which is what a person scrolling the notebook counts;
:attr:`ExtractedCode.cells` holds 0-based indexes for programs. The task process
(``executors/bootstrap.py``) runs :meth:`ExtractedCode.request`'s cells with the same
compilation rules (its twin of :func:`compile_cell`).
"""

from __future__ import annotations
import __future__

import ast
import posixpath
import re
import shlex
from collections.abc import Collection
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import Any

from .magics import NO_EFFECT_LINE_MAGICS, PACKAGE_MAGICS, RUNTIME_LINE_MAGICS, CellMagics, transform_cell
from .notebook_entry import UNCOMPILABLE, find_entry, find_entry_cell, not_found_message, signature_problem
from .notebook_files import CodeCells, NotebookError, read_code_cells

__all__ = ["Cell", "ExtractedCode", "NotebookError", "compile_cell", "extract_code", "find_entry_cell",
           "neutralise_magics"]

TOP_LEVEL_AWAIT = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
FUTURE_FLAGS = reduce(lambda a, b: a | b, (getattr(__future__, f).compiler_flag for f in __future__.all_feature_names))
_MISPLACED_FUTURE = "from __future__ imports must occur at the beginning of the file"
MAX_RUN_FILE_BYTES = 8 << 20  # a file %run ships with the task's code
MAX_RUN_TOTAL_BYTES = 16 << 20  # all of them, for one task (they travel in every run's request)
MAX_RUN_DEPTH = 8  # notebooks that %run notebooks that %run ...
RUN_OPTIONS = frozenset({"-i", "-n", "-e"})


@dataclass(frozen=True)
class Cell:
    """One code cell as the task process runs it: its number (1-based among all cells),
    its Python, the cell magic the process applies to it (``%%capture`` ...), if any, and
    whether its last statement's value is shown as Jupyter shows a cell's result
    (``shows_last_expression``)."""

    number: int
    code: str
    magic: dict | None = None
    show: bool = False
    allow_error: bool = False  # tagged raises-exception: its error is shown and the run goes on (nbclient)
    timed: bool = False  # %%time: its CPU and wall times printed after it, as IPython prints them


MAX_INSTALLS_NAMED = 3  # skipped installs a run's ModuleNotFoundError names


@dataclass(frozen=True)
class ExtractedCode:
    """Code taken from a notebook.

    ``source`` is the cells' Python joined by one blank line (for reading; what runs is
    ``program``, cell by cell); ``notes`` are sentences for the run's log, one per magic
    that was not run as is; ``cells`` are the 0-based indexes, among all cells of the
    notebook, of the code cells that run, in order. ``runs`` holds the files ``%run``
    needs, by the path the magic gives; ``shell`` says the code calls ``get_ipython()``.
    """

    source: str
    notes: tuple[str, ...]
    cells: tuple[int, ...]
    program: tuple[Cell, ...] = ()
    runs: dict[str, Any] = field(default_factory=dict)
    shell: bool = False
    installs: tuple[str, ...] = ()  # "cell N line L: '%pip install x'" of each skipped install

    def request(self) -> dict[str, Any]:
        """The ``program`` part of the task process's request (JSON)."""
        request: dict[str, Any] = {"cells": [_cell_json(cell) for cell in self.program], "runs": self.runs,
                                   "shell": self.shell}
        if self.installs:  # named with a ModuleNotFoundError (bootstrap.py)
            request["installs"] = list(self.installs[:MAX_INSTALLS_NAMED])
        return request


def _cell_json(cell: Cell) -> dict[str, Any]:
    data: dict[str, Any] = {"cell": cell.number, "code": cell.code}
    if cell.magic is not None:
        data["magic"] = cell.magic
    if cell.show:
        data["show"] = True
    if cell.allow_error:
        data["allow_error"] = True
    if cell.timed:
        data["time"] = True
    return data


def neutralise_magics(source: str) -> tuple[str, list[str]]:
    """One cell's Python (magics turned into Python, same line count) and its notes."""
    result = transform_cell(source)
    return result.code, result.notes


def compile_cell(source: str, filename: str, flags: int) -> int:
    """Compile one cell as IPython does; return the compiler flags for the next cells.

    Top-level ``await`` is allowed. A ``from __future__`` import after other statements
    (a magic's line, say) is what IPython accepts too: it compiles a cell statement by
    statement, and a future import then holds for what follows. Raises SyntaxError.
    The task process's ``bootstrap._Cells`` is the twin of this (standard library only).
    """
    try:
        code = compile(source, filename, "exec", flags | TOP_LEVEL_AWAIT, dont_inherit=True)
        return flags | (code.co_flags & FUTURE_FLAGS)
    except SyntaxError as exc:
        if exc.msg != _MISPLACED_FUTURE:
            raise
    tree = compile(source, filename, "exec", ast.PyCF_ONLY_AST | flags | TOP_LEVEL_AWAIT, dont_inherit=True)
    for node in tree.body:
        code = compile(ast.Module([node], []), filename, "exec", flags | TOP_LEVEL_AWAIT, dont_inherit=True)
        flags |= code.co_flags & FUTURE_FLAGS
    return flags


def shows_last_expression(code: str, flags: int = 0, quiet: Collection[int] = ()) -> bool:
    """Whether the cell's last statement is an expression whose value Jupyter shows as the
    cell's result (``Out[n]``). The task process then compiles that statement as IPython
    does, in "single" mode, which hands the value to ``sys.displayhook``; the process's hook
    shows it as the run's output (``display()``), None showing nothing. Not shown, as in
    IPython: an expression ending with ``;``, and one that starts on a ``quiet`` line
    (1-based: a magic's statement, ``%timeit EXPR``)."""
    try:
        tree = compile(code, "<cell>", "exec", ast.PyCF_ONLY_AST | flags | TOP_LEVEL_AWAIT, dont_inherit=True)
    except UNCOMPILABLE:
        return False
    last = tree.body[-1] if tree.body else None
    if not isinstance(last, ast.Expr) or last.end_lineno is None or last.end_col_offset is None \
            or last.lineno in quiet:
        return False
    end_line = code.split("\n")[last.end_lineno - 1]
    after = end_line[_char_offset(end_line, last.end_col_offset):]
    return not after.split("#", 1)[0].strip().startswith(";")


def _char_offset(line: str, byte_offset: int) -> int:
    """The ast's UTF-8 byte column as a position in ``line``."""
    return len(line.encode("utf-8")[:byte_offset].decode("utf-8", errors="ignore"))


def extract_code(
    path: Path, method: str | None, full_notebook: bool, display_name: str | None = None,
    root: Path | None = None,
) -> ExtractedCode:
    """Read the notebook at ``path`` and return the Python to run for a task.

    Cell-only mode returns the one code cell whose top level defines ``method``; if
    several cells define it, the LAST one wins (as when the notebook's cells are re-run
    top to bottom in Jupyter); see :func:`find_entry_cell`. Full mode returns every code
    cell in order; ``method`` may then be ``None`` (the notebook itself is the task) but,
    when given, must be defined at the top level of some cell. Markdown and raw cells are
    ignored. The cells are compiled here, so a syntax error is reported with its cell and
    line; so are an unsupported magic and an entry function that needs arguments.

    ``display_name`` (default ``path.name``) is what messages call the file, the path
    relative to the repository, whose root (``root``, else found from ``display_name``)
    bounds what ``%run`` may read. Raises :class:`NotebookError`.
    """
    name = display_name or path.name
    if root is None:
        depth = len(Path(display_name).parts) if display_name and not Path(display_name).is_absolute() else 1
        root = path.parents[depth - 1] if depth <= len(path.parents) else path.parent
    return _extract(path, method, full_notebook, name, root, ())


def _extract(path: Path, method: str | None, full_notebook: bool, name: str, root: Path,
             stack: tuple[Path, ...], show_last: bool = True) -> ExtractedCode:
    read = read_code_cells(path, name)
    indexes = read.indexes
    if not full_notebook and not method:
        raise NotebookError(
            f"{name}: a task that runs one cell needs a `method`; "
            "set `method`, or `full_notebook: true` to run the whole notebook",
            kind="method",
        )
    results = [transform_cell(text) for text in read.sources]
    codes = [result.code for result in results]
    if full_notebook:  # a blank cell is not run (nbclient skips it): it takes no execution count
        positions = [position for position, text in enumerate(read.sources) if text.strip()]
    else:
        assert method is not None
        entry, broken = find_entry(codes, method)
        if entry is None:
            raise NotebookError(not_found_message(name, method, [indexes[i] for i in broken], read.skipped),
                                kind="method")
        positions = [entry]

    # Every cell's problems (a refused magic, else a syntax error), in the notebook's order:
    # the first is the run's error, the others go with it for validate (NotebookError.also).
    notes: list[str] = []
    found: list[NotebookError] = []
    showing: set[int] = set()  # the cells whose last expression's value is shown
    flags = 0
    for position in positions:
        result = results[position]
        where = f"{name} cell {indexes[position] + 1}"
        notes.extend(f"cell {indexes[position] + 1} {note}" for note in result.notes)
        if result.problems:
            line, message = result.problems[0]
            more = len(result.problems) - 1
            also = f" (and {more} more such line{'s' if more > 1 else ''} in this cell)" if more else ""
            found.append(NotebookError(f"{where} line {line}: {message}{also}", kind="magic",
                                       cell=indexes[position] + 1, line=line, file_line=read.file_line(position, line)))
            continue
        try:
            flags = _compile(codes[position], name, indexes[position] + 1, flags, read, position)
        except NotebookError as exc:
            found.append(exc)
            continue
        if show_last and shows_last_expression(codes[position], flags, results[position].quiet):
            showing.add(position)
    if found:
        found[0].also = found[1:]
        raise found[0]

    if method:
        entry = positions[0] if not full_notebook else find_entry(codes, method)[0]
        if entry is None:
            raise NotebookError(not_found_message(name, method, [], read.skipped), kind="method")
        tree = compile(codes[entry], name, "exec", ast.PyCF_ONLY_AST | TOP_LEVEL_AWAIT, dont_inherit=True)
        problem = signature_problem(tree, method)
        if problem is not None:
            line, why = problem
            raise NotebookError(f"{name} cell {indexes[entry] + 1} line {line}: {why}", kind="signature",
                                cell=indexes[entry] + 1, line=line, file_line=read.file_line(entry, line))

    runs: dict[str, Any] = {}
    shell = any(results[p].shell for p in positions)
    if any(results[p].runs for p in positions):
        shell = _resolve_runs(results, positions, read, name, path, root, (*stack, path.resolve()), runs) or shell
    program = tuple(Cell(indexes[p] + 1, codes[p], results[p].cell_magic, p in showing, p in read.raising,
                         results[p].timed) for p in positions)
    source = "\n\n".join(codes[p].rstrip("\n") for p in positions)
    installs = tuple(f"{name} cell {indexes[p] + 1} line {line}: {shown[:200]}" for p in positions
                     for line, shown in results[p].installs)
    return ExtractedCode(source=source, notes=tuple(notes), cells=tuple(indexes[p] for p in positions),
                         installs=installs,
                         program=program, runs=runs, shell=shell)


def _compile(code: str, name: str, number: int, flags: int, read: CodeCells, position: int) -> int:
    """``compile_cell`` with a syntax error turned into a NotebookError at its cell and line."""
    try:
        return compile_cell(code, f"{name} cell {number}", flags)
    except SyntaxError as exc:
        lines = code.count("\n") + 1
        line = max(1, min(exc.lineno or 1, lines))  # an unclosed bracket is the cell's, not past its end
        raise NotebookError(
            f"{name} cell {number} line {line}: {type(exc).__name__}: {exc.msg}; "
            f"{_automagic_hint(code.split(chr(10))[line - 1]) or 'fix the cell'}",
            kind="syntax", cell=number, line=line, file_line=read.file_line(position, line),
        ) from None
    except ValueError as exc:  # e.g. a NUL character in the source
        raise NotebookError(f"{name} cell {number}: the cell cannot be compiled ({exc}); fix the notebook",
                            kind="syntax", cell=number) from None
    except (RecursionError, MemoryError) as exc:
        raise NotebookError(f"{name} cell {number}: the cell is nested too deeply for Python to compile "
                            f"({type(exc).__name__}: {exc}); split its longest expression or statement",
                            kind="syntax", cell=number) from None


_AUTOMAGIC = re.compile(r"[ \t]*([a-z_]+)[ \t]+[^=(\[.,:]")


def _automagic_hint(line: str) -> str | None:
    """For a line like ``cd data`` or ``pip install x``: Jupyter runs it as a magic (IPython's
    automagic, on by default); peach-tasks needs the ``%``, which keeps the line plain."""
    match = _AUTOMAGIC.match(line)
    if match is None:
        return None
    word = match.group(1)
    if word not in RUNTIME_LINE_MAGICS | NO_EFFECT_LINE_MAGICS | PACKAGE_MAGICS | {"time", "timeit", "load_ext"}:
        return None
    return f"Jupyter runs this line as the magic %{word} (automagic); write '%{line.strip()}'"


def _resolve_runs(results: list[CellMagics], positions: list[int], read: CodeCells, name: str, path: Path,
                  root: Path, stack: tuple[Path, ...], runs: dict[str, Any]) -> bool:
    """Read each file ``%run`` names into ``runs``; True when one of them needs the shell.

    Paths are relative to the notebook's folder, the task's working directory, as in
    Jupyter (where they are relative to the kernel's working directory). A ``%run``
    after ``%cd`` is refused: the folder it reads from is known only at run time.
    """
    folder = path.parent
    written: set[str] = set()
    cd_seen: int | None = None
    shell = False
    for position in positions:
        result = results[position]
        refuse = _Refuse(name, read, position)

        for line, args in result.runs:
            if cd_seen is not None or (result.cd_line is not None and result.cd_line < line):
                raise refuse(line, f"%run {args} comes after %cd: peach-tasks finds %run's file before the run, "
                                   "relative to the notebook's folder (in the repository, or written by the "
                                   "notebook's %%writefile), and after %cd, even one back, the folder it would "
                                   "be read from is known only as the notebook runs; %run before the %cd, or "
                                   "drop the %cd")
            try:
                words = shlex.split(args)
            except ValueError as exc:
                raise refuse(line, f"%run {args}: {exc}") from None
            options = []
            while words and words[0].startswith("-"):
                options.append(words.pop(0))
            unknown = [o for o in options if o not in RUN_OPTIONS]
            if unknown or not words:
                why = f"option {unknown[0]} is not supported (only -i, -n, -e)" if unknown else "no file given"
                raise refuse(line, f"%run {args}: {why}")
            target = words[0]
            if "$" in target or "{" in target or "\0" in target or posixpath.isabs(target) or target.startswith("~"):
                raise refuse(line, f"%run {args}: give the file as a plain path relative to the notebook")
            key = given = posixpath.normpath(target)
            if not key.endswith((".py", ".ipynb")) and key not in written and not (folder / key).is_file():
                key += ".py"  # IPython's %run: the name as given when it is a file, else with .py added
            if key in runs:
                continue
            if key in written and not key.endswith(".ipynb"):
                continue  # written by %%writefile earlier in the notebook: read when it runs
            file = folder / key
            try:
                resolved = file.resolve(strict=True)
            except (OSError, RuntimeError):
                missing = f"{key} is not" if key == given else f"neither {given} nor {key} is"
                raise refuse(line, f"%run {args}: {missing} in the repository next to the notebook; "
                                   "commit it, or fix the path") from None
            if not resolved.is_relative_to(root.resolve()) or not resolved.is_file():
                raise refuse(line, f"%run {args}: {key} is not a file inside the repository")
            shown = resolved.relative_to(root.resolve()).as_posix()
            if resolved in stack:
                raise refuse(line, f"%run {args}: {shown} runs itself again (a cycle of %run); remove the cycle")
            if len(stack) >= MAX_RUN_DEPTH:
                raise refuse(line, f"%run {args}: more than {MAX_RUN_DEPTH} notebooks deep; flatten the %run chain")
            if resolved.stat().st_size > MAX_RUN_FILE_BYTES:
                raise refuse(line, f"%run {args}: {shown} is larger than {MAX_RUN_FILE_BYTES >> 20} MiB")
            if not key.endswith(".ipynb"):  # Python, whatever its name, as IPython runs it
                runs[key] = _python_file(resolved, shown, refuse, line, args)
            else:
                try:
                    sub = _extract(resolved, None, True, shown, root, stack, show_last=False)  # IPython: silent
                except NotebookError as exc:
                    raise refuse(line, f"%run {args}: {exc}") from None
                for sub_key, value in sub.runs.items():
                    runs.setdefault(sub_key, value)  # %run paths are relative to the working directory
                runs[key] = {"filename": shown, "cells": sub.request()["cells"], "plain": False}
                shell = shell or sub.shell
            if sum(len(cell["code"]) for entry in runs.values() for cell in entry["cells"]) > MAX_RUN_TOTAL_BYTES:
                raise refuse(line, f"%run {args}: the files this notebook runs hold more than "
                                   f"{MAX_RUN_TOTAL_BYTES >> 20} MiB of code together; run less, or import modules")
        if result.cd_line is not None and cd_seen is None:
            cd_seen = result.cd_line
        written.update(posixpath.normpath(w) for w in result.writes)
    return shell


class _Refuse:
    """Makes the NotebookError for a ``%run`` line of one cell."""

    def __init__(self, name: str, read: CodeCells, position: int) -> None:
        self.name, self.read, self.position = name, read, position

    def __call__(self, line: int, why: str) -> NotebookError:
        number = self.read.indexes[self.position] + 1
        return NotebookError(f"{self.name} cell {number} line {line}: {why}", kind="magic", cell=number,
                             line=line, file_line=self.read.file_line(self.position, line))


def _python_file(path: Path, shown: str, refuse: _Refuse, line: int, args: str) -> dict[str, Any]:
    """A ``.py`` file for ``%run``: plain Python (IPython runs it so), compiled now."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise refuse(line, f"%run {args}: {shown} cannot be read as UTF-8 text ({exc})") from None
    try:
        compile(text, shown, "exec", dont_inherit=True)
    except UNCOMPILABLE as exc:
        where = f" line {exc.lineno}" if isinstance(exc, SyntaxError) and exc.lineno else ""
        raise refuse(line, f"%run {args}: {shown}{where}: {type(exc).__name__}: "
                           f"{getattr(exc, 'msg', exc)}; fix the file") from None
    return {"filename": shown, "cells": [{"code": text}], "plain": True}
