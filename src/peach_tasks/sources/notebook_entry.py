"""The task's entry in a notebook: which cell defines it, and whether it can be called
the way the scheduler calls it."""

from __future__ import annotations

import ast
import re

from .magics import transform_cell

# What compile() and ast.parse raise for code they cannot compile: a syntax error, a NUL
# character, and code nested too deeply for the compiler (a sum of thousands of terms).
UNCOMPILABLE = (SyntaxError, ValueError, RecursionError, MemoryError)


def find_entry_cell(cells_sources: list[str], method: str) -> int | None:
    """Index, in ``cells_sources``, of the cell whose top level defines ``method``.

    Defining means binding the name at module scope: ``def``/``async def``/
    ``class``, an assignment (``train = make_trainer()``) or an import
    (``from x import train``), also inside top-level ``if``/``try``/``with``/``for``
    blocks, but never inside a function or class. If several cells define it the
    LAST one wins, as when cells are run top to bottom in Jupyter. Magics are
    neutralised before parsing; a cell that still does not parse is matched by a
    plain text search, so that its syntax error can be reported, and otherwise
    ignored. Returns ``None`` when no cell defines ``method``.
    """
    neutralised = [transform_cell(text).code for text in cells_sources]
    return find_entry(neutralised, method)[0]


def find_entry(sources: list[str], method: str) -> tuple[int | None, list[int]]:
    """``find_entry_cell`` on neutralised sources; also the indexes of cells that did not parse."""
    broken: list[int] = []
    # Identifiers are NFKC-normalised by the parser, so a non-ASCII cell may bind
    # ``method`` without containing its exact text; only ASCII cells are skipped.
    for index in range(len(sources) - 1, -1, -1):  # last definition wins: search backwards
        text = sources[index]
        if method not in text and text.isascii():
            continue
        try:
            tree = ast.parse(text)
        except UNCOMPILABLE:
            broken.append(index)
            if _defines_textually(text, method):
                return index, broken
            continue
        if method in _bound_names(tree.body):
            return index, broken
    return None, broken


def _bound_names(body: list[ast.stmt]) -> set[str]:
    """Names bound at module scope by these statements (blocks entered, scopes not)."""
    names: set[str] = set()
    for stmt in body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(stmt.name)
        elif isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                names.update(_target_names(target))
        elif isinstance(stmt, ast.AnnAssign):
            if stmt.value is not None:  # ``train: Callable`` alone binds nothing
                names.update(_target_names(stmt.target))
        elif isinstance(stmt, ast.Import):
            names.update(alias.asname or alias.name.split(".")[0] for alias in stmt.names)
        elif isinstance(stmt, ast.ImportFrom):
            names.update(alias.asname or alias.name for alias in stmt.names if alias.name != "*")
        else:
            # if/try/with/for/while/match bodies run at module scope too.
            for field in ("body", "orelse", "finalbody"):
                names.update(_bound_names(getattr(stmt, field, None) or []))
            for handler in getattr(stmt, "handlers", None) or []:
                names.update(_bound_names(handler.body))
            for case in getattr(stmt, "cases", None) or []:
                names.update(_bound_names(case.body))
    return names


def _target_names(target: ast.expr) -> list[str]:
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [name for element in target.elts for name in _target_names(element)]
    if isinstance(target, ast.Starred):
        return _target_names(target.value)
    return []  # ``obj.attr = ...`` and ``d[k] = ...`` bind no name


def _defines_textually(text: str, method: str) -> bool:
    """Best guess, for a cell that does not parse, that it defines ``method`` at column 0."""
    name = re.escape(method)
    pattern = (
        rf"^(?:(?:async[ \t]+)?def|class)[ \t]+{name}\b"
        rf"|^{name}[ \t]*(?::[^=\n]*)?=(?!=)"
        rf"|^(?:from[ \t]+\S+[ \t]+)?import[ \t].*\b{name}\b"
    )
    return re.search(pattern, text, re.MULTILINE) is not None


def signature_problem(tree: ast.Module, method: str) -> tuple[int, str] | None:
    """(line, why) when the cell's last top-level ``def method`` cannot be called as
    ``method()`` or ``method(payload)``; None when it can, or when the name is bound some
    other way (an assignment, an import, a decorated function: known only at run time).

    Accepted: no parameter; parameters that all have defaults; ``*args``/``**kwargs``;
    one required positional parameter named ``payload`` (it gets the trigger's payload,
    or None on a scheduled run). Refused: any other required parameter.
    """
    binding = None
    for stmt in tree.body:
        if method in _bound_names([stmt]):
            binding = stmt
    if not isinstance(binding, (ast.FunctionDef, ast.AsyncFunctionDef)) or binding.decorator_list:
        return None
    args = binding.args
    positional = [*args.posonlyargs, *args.args]
    required = positional[: len(positional) - len(args.defaults)]
    required_keywords = [a for a, default in zip(args.kwonlyargs, args.kw_defaults) if default is None]
    if not required_keywords and (not required or (len(required) == 1 and required[0].arg == "payload")):
        return None
    names = [a.arg for a in (*required, *required_keywords)]
    listed = ", ".join(f"'{n}'" for n in names)
    have = "has" if len(names) == 1 else "have"
    return binding.lineno, (
        f"entry function '{method}' must be callable as {method}() or {method}(payload), but its "
        f"parameter{'s' if len(names) > 1 else ''} {listed} {have} no default; give "
        f"{'it' if len(names) == 1 else 'them'} a default (`{names[0]}=None`) or take one `payload` parameter"
    )


def not_found_message(name: str, method: str, broken: list[int], skipped: dict[int, str] | None = None) -> str:
    """Why ``method`` is not in ``name``; ``skipped``: its cells tagged skip-execution (index:
    source), which may define it but never run."""
    indexes = list(skipped or {})
    there = find_entry_cell([skipped[index] for index in indexes], method) if skipped else None
    if there is not None:
        return (f"{name} defines {method!r} only in cell {indexes[there] + 1}, tagged skip-execution, which never "
                "runs (as under nbclient and papermill); remove the tag, or define the function in another cell")
    unreadable = ""
    if len(broken) == 1:
        unreadable = f" (cell {broken[0] + 1} mentions it but has a syntax error)"
    elif broken:
        cells = ", ".join(str(index + 1) for index in sorted(broken))
        unreadable = f" (cells {cells} mention it but have syntax errors)"
    return (
        f"{name} defines no top-level function {method!r} in any code cell{unreadable}; "
        "add it or fix `method` in the task definition"
    )
