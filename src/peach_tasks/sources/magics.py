"""IPython magics of one notebook cell, turned into the Python a task process runs.

Jupyter runs a cell through IPython's input transformer before Python sees it. This does
the same with a small table of its own (importing IPython here or in the task process
would cost more than a whole task), and never changes a cell's line count, so that a
line of the result is the same line of the cell:

* line magics peach-tasks gives their meaning (``%cd``, ``%env``, ``%run``, ``%pwd``,
  ``%sx``, ``!cmd`` ...) become ``get_ipython().run_line_magic(NAME, ARGS)`` (or
  ``.system``/``.getoutput``), as IPython writes them; ``get_ipython()`` is the task
  process's small shell (``executors/notebook_shell.py``);
* ``%time STATEMENT`` prints IPython's timings after it (a one-line statement or expression);
  ``%timeit`` keeps its statement, run once and untimed; ``%%timeit SETUP``
  keeps the cell's body (and the setup, run first, once), untimed; ``%%time`` keeps the body,
  whose CPU and wall times the task process prints after it, as IPython does;
* magics that change nothing a scheduled run can observe (``%matplotlib``, ``%config``,
  ``%load_ext autoreload``, ``x?`` ...) become ``pass`` with a note for the log;
  ``%pip``/``!pip install`` too: a task's packages come from its ``dependencies``;
* cell magics the process runs (``%%capture``, ``%%writefile``, ``%%bash``, ``%%html``
  ...) are returned as ``CellMagics.cell_magic`` for the task process;
* anything else is a *problem* (line, message): the run would differ from Jupyter's, so
  ``validate`` and the scheduler refuse the notebook before any run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .magic_scan import Scan, candidate_lines, scan_line

_MARK = "# peach-tasks: "
_NOTE_WIDTH = 100  # notes go to a log line; the code comment keeps the whole text

# ``files = !ls``, ``a, b = %sx ls``: names, then '=', then a magic.
_MAGIC_ASSIGN = re.compile(r"([A-Za-z_][\w.]*(?:[ \t]*,[ \t]*[A-Za-z_][\w.]*)*)[ \t]*=[ \t]*([%!].*)")
# ``%timeit [-n N -r R -t -c -p P -q -o]``: the options IPython's timeit takes before the statement.
_TIMEIT_OPTIONS = re.compile(r"(?:[ \t]*-(?:[nrp][ \t]*\d+|[tcqo]+)(?=[ \t]|$))*")
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*\Z")

# Line magics the task process's shell runs (executors/notebook_shell.py), with IPython's meaning.
RUNTIME_LINE_MAGICS = frozenset({
    "cd", "env", "set_env", "run", "pwd", "sx", "system", "precision", "who", "whos", "who_ls", "reset",
    "dotenv",  # python-dotenv's, once %load_ext dotenv loaded it (the shell says so otherwise, as IPython)
    # IPython's default aliases on POSIX: shell commands
    "ls", "ll", "lf", "lk", "lx", "ldir", "cat", "cp", "mkdir", "mv", "rm", "rmdir",
})
# Line magics that change nothing a scheduled run can see: what they do is interactive
# (help, history, debugger), display settings, or reloading code that cannot change mid-run.
NO_EFFECT_LINE_MAGICS = frozenset({
    "matplotlib", "config", "autoreload", "aimport", "xmode", "pdb",
    "lsmagic", "history", "hist", "magic", "quickref", "colors", "automagic", "pinfo", "pinfo2",
    "psearch", "pprint", "page", "doctest_mode", "autosave", "notebook", "qtconsole", "connect_info",
})
PACKAGE_MAGICS = frozenset({"pip", "conda", "mamba", "micromamba"})
# ``%matplotlib NAME`` of a backend that draws to files only: in Jupyter no figure is shown
# after it, and a figure stays open for a later cell to save; the run's shell does the same
# (kept in step with executors/notebook_shell.py's; a test compares them). Other names
# (inline, widget, qt...) change nothing a run keeps: figures stay PNG outputs.
NOT_SHOWN_BACKENDS = frozenset({"agg", "pdf", "ps", "svg", "pgf", "cairo", "template"})
# Extensions whose loading changes nothing a run can see (they reload or reformat code).
NO_EFFECT_EXTENSIONS = frozenset({"autoreload", "lab_black", "nb_black", "jupyter_black"})
# Extensions the task process's shell loads, with their magics (python-dotenv's %dotenv).
RUNTIME_EXTENSIONS = frozenset({"dotenv"})
# Cell magics whose body is shown in Jupyter: the task process displays it (display()).
DISPLAY_CELL_MAGICS = {"html": "text/html", "markdown": "text/markdown", "latex": "text/latex",
                       "javascript": "application/javascript", "js": "application/javascript",
                       "svg": "image/svg+xml",
                       "HTML": "text/html", "SVG": "image/svg+xml"}  # IPython's own aliases
SHELL_CELL_MAGICS = frozenset({"bash", "sh"})


@dataclass
class CellMagics:
    """One cell's Python and what its magics need.

    ``code`` has the cell's line count; ``notes`` read ``"line N: ..."`` for the run's
    log; ``problems`` are (line, message) pairs for magics peach-tasks cannot run as
    Jupyter does; ``cell_magic`` is what the task process does with the whole cell
    (``{"name", "line"[, "body"]}``); ``shell`` says the code calls ``get_ipython()``;
    ``runs`` are (line, argument) of each ``%run``; ``cd_line`` is the first ``%cd``;
    ``writes`` the file names given to ``%%writefile``; ``quiet`` the lines whose value
    Jupyter does not show as the cell's result even when last (``%timeit EXPR``);
    ``installs`` the skipped ``%pip install`` lines, named if the run misses a module.
    """

    code: str
    notes: list[str] = field(default_factory=list)
    problems: list[tuple[int, str]] = field(default_factory=list)
    cell_magic: dict | None = None
    shell: bool = False
    runs: list[tuple[int, str]] = field(default_factory=list)
    cd_line: int | None = None
    quiet: set[int] = field(default_factory=set)
    writes: list[str] = field(default_factory=list)
    installs: list[tuple[int, str]] = field(default_factory=list)  # (line, magic) of a skipped package install
    timed: bool = False  # %%time: the cell's CPU and wall times printed after it


# ``%config InlineBackend.figure_format = 'retina'``: the settings of Jupyter's inline backend a
# run follows (the task process's shell does, with executors/displays_figures.py), and the
# formats IPython knows.
_INLINE_SETTING = re.compile(r"\s*InlineBackend\.(figure_formats?|print_figure_kwargs|rc)\s*=(.*)$")
FIGURE_FORMATS = ("png", "png2x", "retina", "jpg", "jpeg", "svg", "pdf")
# ``!pip install x``, and the same through Python (``!{sys.executable} -m pip``, pip's own advice
# for notebooks, ``!python3 -m pip``) or uv, conda and friends: a run installs nothing.
_PACKAGE_COMMAND = re.compile(r"(?:(?:\S*/)?(?:python[\d.]*|\{sys\.executable\}|\$\{?sys\.executable\}?)"
                              r"\s+-m\s+)?(?:\S*/)?(?:pip3?|conda|mamba|micromamba|uv)\b")
_MAGIC_HELP = re.compile(r"%{1,2}[A-Za-z_]\w*\?{1,2}")  # ``%load?``: IPython's help on a magic
# Prompts pasted from a Python or IPython session, which IPython strips from a cell whose
# first line (or the next) carries one (its classic_prompt and ipython_prompt transforms).
_CLASSIC_PROMPT = re.compile(r"^(>>>|\.\.\.)( |$)")
_CLASSIC_FIRST = re.compile(r"^>>>( |$)")
_IPYTHON_PROMPT = re.compile(r"^(((\[nav\]|\[ins\])? )?In \[\d+\]: |\s*\.{3,}: ?)")


def leading_indent(source: str) -> str:
    """A cell whose first line (blank lines aside) is indented loses that indentation on every
    line that has it, as IPython takes it off (its leading_indent transform): code pasted
    from inside a function runs in Jupyter as written. Not when that line is a comment: the
    cell may then be valid Python as it is, which is never changed (IPython would change it,
    and break it if a later block is indented as much)."""
    stripped = source.lstrip("\n")
    if not stripped[:1].isspace():
        return source
    first = next((line for line in stripped.split("\n") if line.strip()), "")
    indent = first[:len(first) - len(first.lstrip(" \t"))]
    if not indent or first.lstrip().startswith("#"):
        return source
    return "\n".join(line[len(indent):] if line.startswith(indent) else line for line in source.split("\n"))


def strip_prompts(source: str) -> str:
    """``>>> x = 1`` / ``... `` and ``In [3]: `` / ``...: `` taken off every line, as IPython
    does when the cell's first non-blank line (or the one after it) starts with one. Lines
    keep their numbers."""
    if ">>>" not in source and "..." not in source and "In [" not in source:
        return source  # every prompt holds one of these: most cells are not looked at line by line
    lines = source.split("\n")
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        return source
    for prompt, initial in ((_CLASSIC_PROMPT, _CLASSIC_FIRST), (_IPYTHON_PROMPT, _IPYTHON_PROMPT)):
        if initial.match(lines[first]) or (first + 1 < len(lines) and prompt.match(lines[first + 1])):
            lines = [prompt.sub("", line, count=1) for line in lines]
    return "\n".join(lines)


def transform_cell(source: str) -> CellMagics:
    """The cell's Python, with each magic replaced as the module docstring says."""
    source = strip_prompts(leading_indent(source.replace("\r\n", "\n").replace("\r", "\n")))
    candidates = candidate_lines(source)
    if not candidates:
        return CellMagics(source, shell="get_ipython" in source)
    lines = source.split("\n")
    result = CellMagics("")
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    start = 0
    if first is not None and lines[first].lstrip().startswith("%%") and not _MAGIC_HELP.fullmatch(lines[first].strip()):
        if not _cell_magic(lines, first, result):
            result.code = "\n".join(lines)
            return result
        start = first + 1
        # %%time and %%timeit run the rest as a cell, which may start with its own cell magic
        # (``%%time`` then ``%%capture out``), as in IPython.
        while result.cell_magic is None:
            after = next((i for i in range(start, len(lines)) if lines[i].strip()), None)
            if after is None or not lines[after].lstrip().startswith("%%") \
                    or _MAGIC_HELP.fullmatch(lines[after].strip()):
                break
            if not _cell_magic(lines, after, result):
                result.code = "\n".join(lines)
                return result
            start = after + 1

    scan = Scan()
    last = max(candidates)
    i = start
    while i < len(lines):
        line = lines[i]
        if i > last:
            break  # nothing below can be a magic: no need to follow strings and brackets
        at_start = scan.at_statement_start
        if i in candidates and at_start and _is_magic_line(line):
            i = _line_magic(lines, i, result, scan)
            continue
        code_end = scan_line(line, scan)
        if i in candidates and at_start and scan.quote is None and line[:code_end].rstrip().endswith("?"):
            # ``df.head?`` is only recognisable once strings and comments are known.
            result.notes.append(f"line {i + 1}: IPython help {_quote(line.strip())} skipped (it only shows help)")
            lines[i] = _pass_line(line)
            scan = Scan()  # the line was a whole statement; nothing it opened counts
        i += 1
    result.code = "\n".join(lines)
    result.shell = result.shell or "get_ipython" in result.code
    return result


def _is_magic_line(line: str) -> bool:
    stripped = line.lstrip()
    return bool(stripped) and (stripped[0] in "%!?" or _MAGIC_ASSIGN.match(stripped) is not None)


def _cell_magic(lines: list[str], first: int, result: CellMagics) -> bool:
    """Handle the cell magic on line ``first``; False when the rest of the cell is not Python."""
    magic = lines[first].strip()
    name, _, line = magic[2:].partition(" ")
    name, line = name.strip(), line.strip()
    body = "\n".join(lines[first + 1:])
    where = first + 1
    shown = _quote(magic)
    if name == "time":
        if line:
            result.problems.append((where, f"{shown}: %%time takes no statement on its line (IPython refuses it); "
                                           "move the statement into the cell"))
        lines[first] = ""
        result.timed = True  # the task process prints its times after it, as IPython does
        return True
    if name == "timeit":
        setup = line[_TIMEIT_OPTIONS.match(line).end():].strip()  # type: ignore[union-attr]  # always matches
        lines[first] = setup
        result.quiet.update(range(first + 1, len(lines) + 1))  # %%timeit shows its timing, never a value
        result.notes.append(f"line {where}: {shown}: the cell runs once, untimed"
                            + (", after its setup statement" if setup else "")
                            + ", in the notebook's namespace (IPython runs it many times, in a function)")
        return True
    if name == "capture":
        words = line.split()
        names = [w for w in words if not w.startswith("-")]
        bad = [w for w in words if w.startswith("-") and w not in ("--no-stdout", "--no-stderr", "--no-display")]
        if bad or len(names) > 1 or (names and not _IDENTIFIER.match(names[0])):
            result.problems.append((where, f"{shown}: peach-tasks runs %%capture [--no-stdout] [--no-stderr] "
                                           "[--no-display] [NAME] only; fix the line"))
        lines[first] = ""
        result.cell_magic = {"name": "capture", "line": line, "at": where}
        result.shell = True
        return True
    if name in ("writefile", "file"):
        words = line.split()
        target = [w for w in words if w not in ("-a", "--append")]
        if len(target) != 1 and not (line.count('"') == 2 or line.count("'") == 2):
            result.problems.append((where, f"{shown}: give one file name (and -a to append)"))
        else:
            result.writes.append(" ".join(target).strip("'\""))
        result.cell_magic = {"name": "writefile", "line": line, "body": body, "at": where}
    elif name in SHELL_CELL_MAGICS:
        bad = [w for w in line.split() if w not in ("--no-raise-error", "--raise-error")]
        if bad:
            result.problems.append((where, f"{shown}: peach-tasks runs %%{name} [--no-raise-error] only; "
                                           "fix the line"))
        result.cell_magic = {"name": "script", "line": line, "program": name, "body": body, "at": where}
    elif name in DISPLAY_CELL_MAGICS:
        result.cell_magic = {"name": "display", "line": line, "mime": DISPLAY_CELL_MAGICS[name], "body": body,
                             "at": where}
    else:
        result.problems.append((where, f"cell magic {shown} is not supported by peach-tasks: a run would "
                                       "differ from Jupyter's; do the same in Python"))
        return False
    result.shell = True
    for index in range(first, len(lines)):
        lines[index] = ""  # the body is data, given to the task process's shell
    return False


def _line_magic(lines: list[str], i: int, result: CellMagics, scan: Scan) -> int:
    """Replace the magic starting on line ``i``; return the index of the next line to look at."""
    line = lines[i]
    indent = line[: len(line) - len(line.lstrip())]
    stripped = line.strip()
    target = ""
    match = _MAGIC_ASSIGN.match(stripped)
    if match and stripped[0] not in "%!?":
        target, stripped = match.group(1).strip(), match.group(2)
    where = i + 1
    shown = _quote(line.strip())
    head = stripped[0]

    if head == "?" or (head != "!" and not target and stripped.endswith("?")
                       and (not stripped.startswith("%") or _MAGIC_HELP.fullmatch(stripped))):
        result.notes.append(f"line {where}: IPython help {shown} skipped (it only shows help)")
        lines[i] = _pass_line(line)
        return i + 1

    if head == "%" and not stripped.startswith("%%"):
        name, _, rest = stripped[1:].partition(" ")
        if name in ("time", "timeit"):
            statement = rest
            if name == "timeit":
                statement = rest[_TIMEIT_OPTIONS.match(rest).end():]  # type: ignore[union-attr]
            statement = statement.strip()
            if target and name == "timeit":
                result.problems.append((where, f"{shown}: the value of %timeit is its timing, which peach-tasks "
                                               "does not measure; assign the statement's value instead"))
            timed = _timed(statement) if name == "time" else None
            if not statement:
                lines[i] = _pass_line(line)
            elif timed is not None:  # IPython's timings printed after it
                lines[i] = indent + (f"{target} = " if target else "") + timed
                scan_line(lines[i], scan)
                result.shell = True
                return i + 1
            else:
                # The statement stays Python: a backslash continuation goes on as Python does.
                lines[i] = indent + (f"{target} = " if target else "") + statement
                scan_line(lines[i], scan)
                if name == "timeit":
                    result.quiet.add(where)  # %timeit shows its timing, never the value
            result.notes.append(f"line {where}: {shown}: the statement runs once, untimed")
            return i + 1

    # The magic's text, with IPython's backslash continuation lines joined to it.
    end = i
    parts = [stripped]
    while parts[-1].endswith("\\") and end + 1 < len(lines):
        end += 1
        parts.append(lines[end])
    text = " ".join([p.rstrip()[:-1] for p in parts[:-1]] + [parts[-1].rstrip()])
    for index in range(i + 1, end + 1):
        lines[index] = ""

    if head == "!":
        command = text[1:].strip()
        if _PACKAGE_COMMAND.match(command) and not target:
            lines[i] = _pass_line(line)
            result.notes.append(f"line {where}: {shown} skipped: a task's packages come from the `dependencies` "
                                "of its definition, installed before it runs")
            result.installs.append((where, shown))
            return end + 1
        call = f"get_ipython().getoutput({command!r})" if target else f"get_ipython().system({command!r})"
        lines[i] = indent + (f"{target} = " if target else "") + call
        result.shell = True
        return end + 1

    if text.startswith("%%"):
        if result.cell_magic is not None and not any(text.strip() for text in lines[:i]):
            first = result.cell_magic.get("name")
            result.problems.append((where, f"{shown} under %%{first}: one cell magic per cell runs in peach-tasks "
                                           "(%%time and %%timeit aside); split the cell in two"))
        else:
            result.problems.append((where, f"{shown}: a cell magic must be the first line of its cell"))
        lines[i] = _pass_line(line)
        return end + 1
    name, _, args = text[1:].partition(" ")
    name, args = name.strip(), args.strip()
    first_word = args.split()[0] if args.split() else ""  # a backend, an extension
    if name in RUNTIME_LINE_MAGICS or (name == "matplotlib" and first_word.lower() in NOT_SHOWN_BACKENDS) \
            or (name in ("load_ext", "reload_ext") and first_word in RUNTIME_EXTENSIONS):
        lines[i] = indent + (f"{target} = " if target else "") + f"get_ipython().run_line_magic({name!r}, {args!r})"
        result.shell = True
        if name == "run":
            result.runs.append((where, args))
        elif name == "cd" and result.cd_line is None:
            result.cd_line = where
        return end + 1
    if name in PACKAGE_MAGICS and not target:
        lines[i] = _pass_line(line)
        result.notes.append(f"line {where}: {shown} skipped: a task's packages come from the `dependencies` "
                            "of its definition, installed before it runs")
        result.installs.append((where, shown))
        return end + 1
    if name == "config" and ("ast_node_interactivity" in args or _INLINE_SETTING.match(args)) and not target:
        # The shell follows it (which statements show their value; how figures are shown).
        unknown = _unknown_figure_formats(args)
        if unknown:
            result.problems.append((where, f"{shown}: unknown figure format {unknown}: Jupyter's are "
                                           f"{', '.join(FIGURE_FORMATS)}; fix the format"))
        lines[i] = indent + f"get_ipython().run_line_magic('config', {args!r})"
        result.shell = True
        return end + 1
    if (name in NO_EFFECT_LINE_MAGICS or (name in ("load_ext", "reload_ext") and first_word in NO_EFFECT_EXTENSIONS)) \
            and not target:
        lines[i] = _pass_line(line)
        result.notes.append(f"line {where}: {shown} skipped (no effect in a scheduled run)")
        return end + 1
    if name in ("load_ext", "reload_ext"):
        why = f"the IPython extension {first_word!r} is not loaded by peach-tasks"
    elif target:
        why = f"the value of %{name} is not computed by peach-tasks"
    else:
        why = f"line magic %{name} is not supported by peach-tasks"
    result.problems.append((where, f"{shown}: {why}: a run would differ from Jupyter's; do the same in Python"))
    lines[i] = _pass_line(line)
    return end + 1


def _timed(statement: str) -> str | None:
    """``%time STATEMENT`` as one line that prints IPython's timings after it: an expression
    keeps its value (shown when it ends the cell, as IPython's ``%time`` returns it), simple
    statements run inside a ``with``. None where that cannot be one line (a backslash
    continuation, a compound statement, ``await``): the statement then runs untimed."""
    import ast

    statement = _without_comment(statement)
    if statement.endswith("\\"):
        return None
    try:
        tree = ast.parse(statement)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    if any(isinstance(node, (ast.Await, ast.NamedExpr, ast.Yield, ast.YieldFrom)) for node in ast.walk(tree)):
        return None  # not inside a lambda or a with's one line (a name bound by := would stay in the lambda)
    body = tree.body
    if len(body) == 1 and isinstance(body[0], ast.Expr) and not statement.rstrip().endswith(";"):
        return f"get_ipython().time_value(lambda: ({statement}))"
    simple = (ast.Expr, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Import, ast.ImportFrom, ast.Delete, ast.Pass,
              ast.Assert, ast.Raise)
    if not body or not all(isinstance(node, simple) for node in body):
        return None
    return f"with get_ipython().timing(): {statement}"


def _without_comment(statement: str) -> str:
    """``statement`` without a trailing ``# comment`` (a ``#`` in a string stays), which would
    otherwise end up inside ``%time``'s one-line wrapper."""
    import io
    import tokenize

    try:
        for token in tokenize.generate_tokens(io.StringIO(statement).readline):
            if token.type == tokenize.COMMENT:
                return statement[: token.start[1]].rstrip()
    except (tokenize.TokenError, SyntaxError):
        pass
    return statement


def _unknown_figure_formats(args: str) -> str | None:
    """The formats IPython would refuse in ``%config InlineBackend.figure_format(s) = VALUE``,
    when VALUE is written out (a name of the notebook's is checked when the run gets there)."""
    import ast

    setting = _INLINE_SETTING.match(args)
    if setting is None or setting.group(1) in ("print_figure_kwargs", "rc"):
        return None
    try:
        value = ast.literal_eval(setting.group(2).strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    formats = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple, set)) else []
    unknown = sorted({repr(f) for f in formats if f not in FIGURE_FORMATS and f != ""})
    return ", ".join(unknown) or None


def _pass_line(line: str) -> str:
    indent = line[: len(line) - len(line.lstrip())]
    return f"{indent}pass  {_MARK}{line.strip()}"


def _quote(text: str) -> str:
    if len(text) > _NOTE_WIDTH:
        text = text[: _NOTE_WIDTH - 3] + "..."
    return f"'{text}'"


