"""Python code out of a Jupyter notebook, ready to ``exec``, with IPython magics neutralised.

This runs before every task, so it reads the nbformat 4 JSON with :mod:`json`
directly (importing nbformat alone costs more than the whole extraction) and does
no per-character work in Python on cells that contain no magic.

Two modes, chosen by the task definition:

* cell-only (``full_notebook=False``): only the code cell whose top level defines
  ``method`` is returned; nothing from the other cells is available to it;
* full notebook (``full_notebook=True``): every code cell in order, joined by one
  blank line, like "Run all" in Jupyter.

IPython magics (``%matplotlib inline``, ``!pip install x``, ``df.head?``, ``%%bash``
...) are not Python. A notebook written in Jupyter must still run, so each magic
line becomes ``pass`` at the same indentation (blocks stay valid, line numbers stay
the same) followed by a comment holding the original, and a note for the run's log
says so.

In messages and notes "cell N" counts every cell of the notebook from 1, markdown
and raw cells included, which is what a person scrolling the notebook counts;
:attr:`ExtractedCode.cells` holds 0-based indexes for programs.
"""

from __future__ import annotations

import ast
import json
import re
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

from .errors import PeachError

# Cell magics whose body is Python that IPython merely times or captures: dropping
# the magic line leaves code that behaves the same apart from the timing/capture.
PYTHON_CELL_MAGICS = frozenset({"time", "timeit", "capture"})

_MARK = "# peach-tasks: neutralised: "
_NOTE_WIDTH = 100  # notes go to a log line; the code comment keeps the whole text

# Cheap whole-cell test for the lines that may be magics: a cell without any is
# returned as is, and the line scanner stops after the last one. It may say yes
# wrongly (a comment ending in '?', a '%' starting a line inside a string); the
# scanner, which knows about strings, brackets and comments, then decides.
# Matched against the source behind a '\n': MULTILINE '^' is several times slower.
_MAYBE_MAGIC = re.compile(r"\n[ \t]*[%!?]|=[ \t]*[%!]|\?[ \t]*(?:#[^\n]*)?(?=\n|\Z)")
# ``files = !ls``, ``a, b = %sx ls``: names, then '=', then a magic.
_MAGIC_ASSIGN = re.compile(r"([A-Za-z_][\w.]*(?:[ \t]*,[ \t]*[A-Za-z_][\w.]*)*)[ \t]*=[ \t]*([%!].*)")
# ``%time stmt`` / ``%timeit [-n N -r R -t -c -p P -q -o] stmt``: group 1 is the statement.
_TIMED = re.compile(r"%(?:time|timeit(?:[ \t]+-(?:[nrp][ \t]*\d+|[tcqo]+)(?=[ \t]|$))*)(?:[ \t]+(.*)|$)")
# Outside strings, the only characters that change the scanner's state.
_CODE_SPECIAL = re.compile(r"""[#'"\\()\[\]{}]""")
_STRING_END = {q: re.compile(r"\\|" + re.escape(q)) for q in ('"""', "'''", '"', "'")}


class NotebookError(PeachError):
    """A notebook that cannot give runnable code; the message names the file and the fix.

    ``kind`` says what is wrong: ``read`` (missing, unreadable, not a notebook),
    ``method`` (the entry method is missing or not defined) or ``syntax``. ``cell``
    (1-based, every cell counted) and ``line`` (1-based in that cell) say where, when
    known; ``file_line`` is the line of the notebook file itself (broken JSON), so that
    ``peach-tasks validate`` can point an editor at it.
    """

    def __init__(self, message: str, *, kind: str = "read", cell: int | None = None,
                 line: int | None = None, file_line: int | None = None) -> None:
        super().__init__(message)
        self.kind, self.cell, self.line, self.file_line = kind, cell, line, file_line


@dataclass(frozen=True)
class ExtractedCode:
    """Code taken from a notebook.

    ``source`` is Python (magics neutralised) that compiles; ``notes`` are sentences
    for the run's log, one per neutralised magic; ``cells`` are the 0-based indexes,
    among all cells of the notebook, of the code cells that make up ``source``, in
    order. In full-notebook mode they are joined by one blank line and every code
    cell is there (a skipped ``%%bash`` cell as comments), so a line of ``source``
    can be traced back to its cell.
    """

    source: str
    notes: tuple[str, ...]
    cells: tuple[int, ...]


@dataclass
class _Scan:
    """Where the line scanner stands at the start of a line."""

    quote: str | None = None  # the open string's delimiter
    depth: int = 0  # open brackets
    continued: bool = False  # previous line ended with a backslash outside strings

    @property
    def at_statement_start(self) -> bool:
        return self.quote is None and self.depth == 0 and not self.continued


def neutralise_magics(source: str) -> tuple[str, list[str]]:
    """Replace IPython magics in one cell's source with ``pass`` lines; return it and notes.

    Handled, wherever a statement may start (never inside strings, brackets or
    after a line continuation): line magics ``%x``, shell escapes ``!x``,
    assignments from them (``files = !ls``), and help requests (``?x``, ``x?``).
    ``%time stmt`` and ``%timeit [options] stmt`` keep ``stmt`` (run once, untimed)
    so that the names it binds still exist for the code below.
    A cell magic on the first non-blank line either wraps Python (``%%time``,
    ``%%timeit``, ``%%capture``: only that line goes) or makes the whole cell
    foreign (``%%bash``, ``%%html`` ...: every line becomes a comment). The line
    count never changes. Each note reads ``"line N: ..."`` (1-based in the cell).
    """
    source = source.replace("\r\n", "\n").replace("\r", "\n")
    candidates = _candidate_lines(source)
    if not candidates:
        return source, []
    lines = source.split("\n")
    notes: list[str] = []
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is not None and lines[first].lstrip().startswith("%%"):
        magic = lines[first].strip()
        name = magic[2:].split(None, 1)[0] if len(magic) > 2 else ""
        if name not in PYTHON_CELL_MAGICS:
            notes.append(f"line {first + 1}: cell magic {_quote(magic)} is not Python; the whole cell was skipped")
            return "\n".join(_comment_out(line) for line in lines), notes
        lines[first] = _pass_line(lines[first])
        notes.append(
            f"line {first + 1}: cell magic {_quote(magic)} neutralised (not Python); the cell's Python is kept"
        )
        start = first + 1
    else:
        start = 0

    scan = _Scan()
    in_magic = False  # a magic line ended with '\', so IPython joins the next line to it
    last = max(candidates)
    for i in range(start, len(lines)):
        line = lines[i]
        if in_magic:
            in_magic = line.endswith("\\")
            lines[i] = _indent(line) + _MARK + line.strip()
            continue
        if i > last:
            break  # nothing below can be a magic: no need to follow strings and brackets
        if i in candidates and scan.at_statement_start:
            kind, consequence = _magic_kind(line)
            if kind:
                kept = _timed_statement(line)
                if kept is not None:
                    lines[i] = f"{_indent(line)}{kept}  {_MARK}{line.strip()}"
                    consequence = "; its statement is kept, run once"
                else:
                    lines[i] = _pass_line(line)
                    in_magic = line.endswith("\\")
                notes.append(f"line {i + 1}: {kind} {_quote(line.strip())} neutralised (not Python{consequence})")
                continue
            code_end = _scan_line(line, scan)
            if scan.quote is None and line[:code_end].rstrip().endswith("?"):
                # ``df.head?`` is only recognisable once strings and comments are known.
                notes.append(f"line {i + 1}: IPython help {_quote(line.strip())} neutralised (not Python)")
                lines[i] = _pass_line(line)
                scan = _Scan()  # the line was a whole statement; nothing it opened counts
            continue
        _scan_line(line, scan)
    return "\n".join(lines), notes


def _candidate_lines(source: str) -> set[int]:
    """0-based numbers of the lines that may hold a magic, found by one regex pass."""
    padded = "\n" + source
    found: set[int] = set()
    line, position = -1, 0  # the padding newline is not a line break of the source
    for match in _MAYBE_MAGIC.finditer(padded):
        anchor = match.start() + (padded[match.start()] == "\n")  # first char on the line
        line += padded.count("\n", position, anchor)
        position = anchor
        found.add(line)
    return found


def _magic_kind(line: str) -> tuple[str, str]:
    """What kind of magic a line that starts a statement is (``""``: Python), and what is lost."""
    stripped = line.lstrip()
    if not stripped:
        return "", ""
    head = stripped[0]
    if head == "%":
        return "IPython magic", ""
    if head == "!":
        return "shell escape", ""
    if head == "?":
        return "IPython help", ""
    # No Python statement has '=' followed by '%' or '!', so this cannot misfire.
    match = _MAGIC_ASSIGN.match(stripped)
    if match:
        return "IPython magic assignment", f"; {match.group(1).strip()!r} is not set"
    return "", ""


def _timed_statement(line: str) -> str | None:
    """The Python statement of a ``%time``/``%timeit`` line, if it can be kept alone on the line.

    Replacing ``%time model = fit(data)`` by ``pass`` would leave ``model`` undefined
    in the cells below, so the statement is run once, untimed. Anything the scanner
    could not see whole (an open string or bracket, a continuation) falls back to
    ``pass``: keeping it would hide the following lines from magic detection.
    """
    match = _TIMED.match(line.lstrip())
    if not match:
        return None
    statement = (match.group(1) or "").strip()
    if not statement:
        return None
    scan = _Scan()
    code_end = _scan_line(statement, scan)
    if not scan.at_statement_start or statement[:code_end].rstrip().endswith("?"):
        return None
    return statement


def _scan_line(line: str, scan: _Scan) -> int:
    """Advance ``scan`` over one line; return where the line's code ends (a comment starts).

    Regex jumps go from one quote, bracket, backslash or '#' to the next, so plain
    code costs nothing in Python per character.
    """
    i, n = 0, len(line)
    scan.continued = False
    while i < n:
        if scan.quote is not None:
            match = _STRING_END[scan.quote].search(line, i)
            if match is None:
                break
            if match.group() == "\\":
                if match.end() == n:  # backslash-newline: the string goes on
                    scan.continued = True
                i = match.end() + 1
                continue
            scan.quote = None
            i = match.end()
            continue
        match = _CODE_SPECIAL.search(line, i)
        if match is None:
            break
        char, i = match.group(), match.start()
        if char == "#":
            return i
        if char in "'\"":
            scan.quote = char * 3 if line.startswith(char * 3, i) else char
            i += len(scan.quote)
            continue
        if char == "\\":
            scan.continued = i == n - 1
        elif char in "([{":
            scan.depth += 1
        elif char in ")]}":
            scan.depth = max(0, scan.depth - 1)  # unbalanced code is compile()'s to report
        i += 1
    if scan.quote in ("'", '"') and not scan.continued:
        scan.quote = None  # unterminated one-line string: a syntax error compile() reports
    if scan.quote is not None:
        scan.continued = False  # inside a string, a trailing backslash is only text
    return n


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _pass_line(line: str) -> str:
    return f"{_indent(line)}pass  {_MARK}{line.strip()}"


def _comment_out(line: str) -> str:
    return f"# {line}" if line.strip() else ""


def _quote(text: str) -> str:
    if len(text) > _NOTE_WIDTH:
        text = text[: _NOTE_WIDTH - 3] + "..."
    return f"'{text}'"


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
    neutralised = [neutralise_magics(text)[0] for text in cells_sources]
    return _find_entry(neutralised, method)[0]


def _find_entry(sources: list[str], method: str) -> tuple[int | None, list[int]]:
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
        except (SyntaxError, ValueError):
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


def extract_code(
    path: Path, method: str | None, full_notebook: bool, display_name: str | None = None
) -> ExtractedCode:
    """Read the notebook at ``path`` and return the Python to run for a task.

    Cell-only mode returns the one code cell whose top level defines ``method``;
    if several cells define it, the LAST one wins (as when the notebook's cells are
    re-run top to bottom in Jupyter); see :func:`find_entry_cell`. Full mode returns
    every code cell in order, joined by a blank line; ``method`` may then be
    ``None`` (the notebook itself is the task) but, when given, must be defined at
    the top level of some cell. Markdown and raw cells are ignored. The result is
    compiled once, so a syntax error is reported here with its cell and line.

    ``display_name`` (default ``path.name``) is what messages call the file.
    Raises :class:`NotebookError`.
    """
    name = display_name or path.name
    indexes, sources = _read_code_cells(path, name)
    notes: list[str] = []

    if not full_notebook:
        if not method:
            raise NotebookError(
                f"{name}: a task that runs one cell needs a `method`; "
                "set `method`, or `full_notebook: true` to run the whole notebook",
                kind="method",
            )
        # Only the entry cell's magics matter (and only its notes are wanted), but
        # every cell must be neutralised before it can be parsed to find the entry.
        results = [neutralise_magics(text) for text in sources]
        entry, broken = _find_entry([code for code, _ in results], method)
        if entry is None:
            raise NotebookError(_not_found(name, method, [indexes[i] for i in broken]), kind="method")
        code, cell_notes = results[entry]
        notes.extend(f"cell {indexes[entry] + 1} {note}" for note in cell_notes)
        source = code.rstrip("\n")
        _compile(source, name, [1], [indexes[entry]])
        return ExtractedCode(source=source, notes=tuple(notes), cells=(indexes[entry],))

    parts: list[str] = []
    starts: list[int] = []  # first line of each part in the joined source
    line = 1
    for index, text in zip(indexes, sources):
        code, cell_notes = neutralise_magics(text)
        notes.extend(f"cell {index + 1} {note}" for note in cell_notes)
        code = code.rstrip("\n")  # the blank separator line is added by the join
        parts.append(code)
        starts.append(line)
        line += code.count("\n") + 2
    source = "\n\n".join(parts)
    _compile(source, name, starts, indexes)
    if method and _find_entry(parts, method)[0] is None:
        raise NotebookError(_not_found(name, method, []), kind="method")
    return ExtractedCode(source=source, notes=tuple(notes), cells=tuple(indexes))


def _read_code_cells(path: Path, name: str) -> tuple[list[int], list[str]]:
    """Indexes (among all cells) and source texts of the notebook's code cells."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NotebookError(f"{name} does not exist; check the task's `notebook` path in the repository") from None
    except OSError as exc:
        raise NotebookError(
            f"{name} cannot be read ({exc.strerror or exc}); check that it is a readable file"
        ) from None
    try:
        data = json.loads(raw.decode("utf-8-sig"))  # Windows editors may add a BOM
    except UnicodeDecodeError:
        raise NotebookError(f"{name} is not UTF-8 text; re-save the notebook from Jupyter") from None
    except json.JSONDecodeError as exc:
        raise NotebookError(
            f"{name} is not valid notebook JSON (line {exc.lineno}): {exc.msg}; "
            "fix the file (a merge conflict?) or re-save it from Jupyter",
            file_line=exc.lineno,
        ) from None
    cells = data.get("cells") if isinstance(data, dict) else None
    if not isinstance(cells, list):
        raise NotebookError(
            f"{name} is JSON but not a Jupyter notebook (no `cells` list; nbformat 4 is needed); "
            "point the task at an .ipynb file, or re-save old notebooks with a current Jupyter"
        )
    indexes: list[int] = []
    sources: list[str] = []
    for index, cell in enumerate(cells):
        if not isinstance(cell, dict):
            raise NotebookError(f"{name} cell {index + 1} is not a JSON object; re-save the notebook from Jupyter",
                                cell=index + 1)
        if cell.get("cell_type") != "code":
            continue
        text = cell.get("source", "")
        # nbformat allows a string or a list of lines that already end with '\n'.
        if isinstance(text, list) and all(isinstance(part, str) for part in text):
            text = "".join(text)
        elif not isinstance(text, str):
            raise NotebookError(
                f"{name} cell {index + 1} has a `source` that is neither text nor a list of lines; "
                "re-save the notebook from Jupyter",
                cell=index + 1,
            )
        indexes.append(index)
        sources.append(text)
    return indexes, sources


def _compile(source: str, name: str, starts: list[int], indexes: list[int]) -> None:
    """Compile ``source``; turn a syntax error into a NotebookError at its cell and line.

    ``starts[k]`` is the first line, in ``source``, of the cell ``indexes[k]``.
    """
    try:
        # dont_inherit: this module's ``from __future__`` must not change the notebook's meaning.
        compile(source, name, "exec", dont_inherit=True)
    except SyntaxError as exc:
        lineno = exc.lineno or 1
        part = max(0, bisect_right(starts, lineno) - 1)
        # Past a cell's last line (the blank separator, or end of file) is still
        # that cell's fault: an unclosed bracket or string is reported there.
        next_start = starts[part + 1] if part + 1 < len(starts) else source.count("\n") + 3
        cell_line = max(1, min(lineno - starts[part] + 1, next_start - starts[part] - 1))
        kind = type(exc).__name__
        raise NotebookError(
            f"{name} cell {indexes[part] + 1} line {cell_line}: {kind}: {exc.msg}; fix the cell",
            kind="syntax", cell=indexes[part] + 1, line=cell_line,
        ) from None
    except ValueError as exc:  # e.g. a NUL character in the source
        raise NotebookError(f"{name}: the code cells cannot be compiled ({exc}); fix the notebook",
                            kind="syntax") from None


def _not_found(name: str, method: str, broken: list[int]) -> str:
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
