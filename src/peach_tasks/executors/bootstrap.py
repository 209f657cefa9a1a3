"""Runs inside the task process: execute the task's code, call its entry, record the result.

Started as ``<interpreter> -I bootstrap.py`` in the organisation's environment, so it
uses the standard library only and imports as little as it can: its start-up time is
part of every task's run. It reads one JSON request from stdin::

    {"code", "method", "filename", "cwd", "result_path", "payload", "has_payload",
     "max_result_bytes", "die_with_parent", "outputs_dir", "max_outputs", "max_output_bytes", "env"}

and writes ``result_path`` as ``{"ok": true, "result": ...}`` (maybe with a
``result_note``) or ``{"ok": false, "error": {type, value, traceback, last_line}}``.
A ``SystemExit`` from the task ends the process with its code (no result file
unless the code is 0). ``display()`` is a builtin, as in a Jupyter kernel: what the task shows
goes to ``outputs_dir`` (``displays.py``, with ``displays_figures.py`` and ``displays_pretty.py``,
loaded only once the task displays or plots).

The files beside this one hold the rest, each loaded under a private name when needed:
``bootstrap_io.py`` (every start: the request's JSON, the result file, an error's
description), ``bootstrap_start.py`` (a sandbox's handover: ``--ack FD`` for a sandbox
started ahead, ``--copy PID DONE`` for the checkout's private copy, and death with the
scheduler), ``bootstrap_cells.py`` (what only some notebooks need).
"""

from __future__ import annotations

import _thread  # built in: no import cost
import builtins
import marshal
import os
import sys

TYPE_CHECKING = False  # typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any

# Neither json nor linecache is imported here: each imports re (and linecache tokenize),
# about a third of a small task's start. JSON goes through CPython's own scanner and
# encoder (``_loads``, ``_dumps``, from bootstrap_io.py), cells' lines reach linecache when
# something loads it (``_remember_lines``). A task that imports them pays for them.

_THIS_FILE = os.path.abspath(__file__)
# This file's frames as a traceback names them (the path it was started with, or the
# absolute one), and those of the helpers it loads beside it (the shell's around a cell with
# magics): an error's traceback starts at the task's code. Compared as text, since a task may
# delete the working directory that os.path.abspath would need for a relative name.
_OWN_FILES = frozenset((__file__, _THIS_FILE, *(os.path.join(os.path.dirname(_THIS_FILE), name) for name in (
    "bootstrap_cells.py", "notebook_shell.py", "notebook_shell_values.py", "notebook_shell_names.py", "displays.py",
    "displays_figures.py", "displays_pretty.py"))))


def main() -> int:
    global _shell_ahead
    # -I ignores PYTHONUNBUFFERED and PYTHONIOENCODING: flush every line to keep the
    # log live, and write UTF-8, which is what the scheduler decodes.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(encoding="utf-8", errors="backslashreplace", line_buffering=True, write_through=True)
        except (AttributeError, ValueError):
            pass
    args = sys.argv[1:]
    ack = printed = None
    if args[:1] == ["--ack"]:
        ack, args = args[1], args[2:]
    if args[:1] == ["--shell"]:  # started ahead for a notebook with magics: its imports may ask for the shell
        _shell_ahead = True
        args = args[1:]
    if args[:1] == ["--preload"]:  # started ahead: the next task's modules, while the copy is made
        _display_hooks()
        printed = _start().preload(args[1].split(","))
        args = args[2:]
    copy = args[1:3] if args[:1] == ["--copy"] else None
    if ack is not None and copy is not None:
        # Started ahead: the copy must be whole before the request is taken, so that a
        # failed one (the waiting sandbox's small memory limit) lets the run start afresh.
        status = _start().wait_for_copy(copy, None)
        if status:
            return status
        copy = None
    try:
        request = _loads(sys.stdin.buffer.read())
    except ValueError as exc:
        print(f"peach-tasks bootstrap: unusable request on stdin: {exc!r}", file=sys.stderr)
        return 2
    if not isinstance(request, dict):
        print("peach-tasks bootstrap: the request is not a JSON object", file=sys.stderr)
        return 2
    if ack is not None:
        status = _start().accept(ack, request)
        if status:
            return status
    if printed is not None:  # what the imports ahead printed: the run's log, as if it imported them
        _start().replay(printed)
    if copy is not None:
        status = _start().wait_for_copy(copy, request.get("cwd"))
        if status:
            return status
    if request.get("die_with_parent"):
        _start().die_with(int(request["die_with_parent"]))
    return run_request(request)


def run_request(request: dict, extra_globals: dict | None = None) -> int:
    """Run one request; returns the process exit status. The Spark driver calls this
    too, with ``spark`` and ``sc`` in ``extra_globals``."""
    try:
        code, filename = request["code"], request["filename"]
        result_path = request["result_path"]
    except (KeyError, TypeError) as exc:
        print(f"peach-tasks bootstrap: unusable request: {exc!r}", file=sys.stderr)
        return 2

    try:  # opened now: the task may remove or leave the folder it runs in
        result_dir = _ResultDir(result_path)
    except OSError as exc:
        print(f"peach-tasks bootstrap: cannot open the folder of {result_path}: {exc}", file=sys.stderr)
        return 2

    # Like Jupyter: the working folder is importable ('', the notebook's folder until the task
    # changes it: after os.chdir or %cd, imports follow), the task sees itself as argv[0], and
    # recursion goes as deep as in a kernel (IPython imports jedi, which sets the limit).
    sys.path.insert(_before_site_packages(), "")
    sys.setrecursionlimit(max(sys.getrecursionlimit(), _JUPYTER_RECURSION_LIMIT))
    sys.argv = [filename]
    builtins.input = _io.no_input  # type: ignore[attr-defined]  # nobody answers: a clear EOFError
    # A breakpoint() left in the notebook does nothing, as in a kernel with no debugger attached
    # (ipykernel's debugpy hook); pdb would read no input and end the run.
    sys.breakpointhook = _no_breakpoint
    _offer_helpers()
    _offer_display(request)

    global _showing
    if _showing is None:
        _showing = _Cells(filename)
    else:  # made before the request: a module imported ahead asked for the shell (_shell_on_demand)
        _showing.filename = filename
        if _showing.shell is not None:
            _showing.shell.adopt({})  # type: ignore[attr-defined]
    cells = _showing
    with result_dir:
        try:
            try:
                value = _run(code, filename, request, extra_globals or {}, cells)
            finally:
                _finish_outputs()
            failure = _output_failure()
            if failure is not None:  # the cells all ran, as in Jupyter; papermill fails such a run
                result_dir.write({"ok": False, "error": failure})
                return 1
        except SystemExit as exc:  # status 0 (sys.exit(), exit()) is a successful end without a value
            return _io.exited(exc, cells.where(exc), result_dir, _OWN_FILES)  # type: ignore[attr-defined]
        except BaseException as exc:  # the task's failure, whatever it is, is reported
            error = _describe(exc, cells.where(exc))
            installs = (request.get("program") or {}).get("installs")
            if isinstance(exc, ImportError) and getattr(exc, "name", None) and installs:
                error["last_line"] = f"{error.get('last_line')} ({'; '.join(map(str, installs))}: skipped, " \
                                     "as a run installs nothing; put the package in the dependencies of the task's " \
                                     "definition)"
            shown = _output_failure()
            if shown is not None:  # an error shown in an earlier cell: papermill names that one first
                shown["last_line"] = f"{shown['last_line']}; then {error.get('last_line')}"[: _io.MAX_ERROR_CHARS]  # type: ignore[attr-defined]
                error = shown
            result_dir.write({"ok": False, "error": error})
            return 1
        finally:
            # This module's globals outlive the run (frozen with the imports ahead, never
            # collected), and so do cells and a shell made before the request: none may keep
            # the notebook's namespace, whose objects the interpreter's exit finalizes (a
            # file a global holds is flushed then).
            cells.close()
            _showing = None
        result_dir.write(_result(value, int(request.get("max_result_bytes") or 0)))
        return 0


def _run(code: str, filename: str, request: dict, extra_globals: dict, cells: "_Cells") -> object:
    # A real module as __main__, so pickle (multiprocessing, joblib) finds what the
    # task defines; a fresh namespace like a fresh kernel.
    module = type(sys)("__main__")
    module.__dict__["__builtins__"] = __builtins__
    module.__dict__.update(extra_globals)
    sys.modules["__main__"] = module
    cells.namespace = module.__dict__
    program = request.get("program")
    if program:
        if program.get("shell"):
            _start_shell(cells, program.get("runs") or {})
        # IPython's history of results: Out (and _oh), _, __, ___ ('' at first), _N; of
        # inputs: In (and _ih), _i, _ii, _iii (the cells before), _iN; and its exit and quit.
        history: list = [""]
        namespace = module.__dict__
        namespace.update(Out=cells.out, _oh=cells.out, _="", __="", ___="", In=history, _ih=history,
                         _i="", _ii="", _iii="", _dh=[os.getcwd()], exit=_io.NOT_EXIT, quit=_io.NOT_EXIT,
                         open=_kernel_open)
        # Not the notebook's (%who), as IPython's user_ns_hidden.
        cells.hidden = {name: namespace[name] for name in ("In", "Out", "exit", "quit", "open")}
        for count, cell in enumerate(program["cells"], start=1):
            namespace["_iii"], namespace["_ii"], namespace["_i"] = (["", "", ""] + history)[-3:]  # the cells before
            history.append(cell["code"].rstrip("\n"))
            namespace[f"_i{count}"] = history[-1]
            # A cell's last expression (notebook.shows_last_expression), for every cell, as
            # IPython's display trap does: a library that set its own hook (sympy's
            # init_printing outside IPython) does not take the next cells' results.
            sys.displayhook = _displayhook
            cells.count = count  # the cell's execution count in Jupyter: the code cells run so far
            if _displays_module is not None:
                _displays_module.cell_started()  # type: ignore[attr-defined]  # what clear_output() clears
            execute = lambda cell=cell: cells.run(cell)  # noqa: E731
            if cell.get("allow_error"):  # tagged raises-exception: its error is shown, the run goes on
                execute = _more().past_its_error(cells, execute)
            if cells.shell is not None:  # IPython's events around it (matplotlib registers one)
                cells.shell.run_cell_events(cell, execute)  # type: ignore[attr-defined]
            else:
                execute()
    else:  # one piece of code (tests, older callers): the notebook's name is its file name
        cells.run({"code": code})

    method = request.get("method")
    if not method:
        return None
    func = module.__dict__.get(method)
    if func is None:
        raise NameError(f"entry method {method!r} is not defined in {filename}")
    if not callable(func):
        raise TypeError(f"entry method {method!r} in {filename} is a {type(func).__name__}, not a function")
    if request.get("has_payload") and _takes_positional(func):
        value = func(request.get("payload"))
    elif _requires_one(func):
        value = func(None)  # ``def main(payload)`` on a scheduled run: no payload (validate allows this form)
    else:
        value = func()
    if hasattr(value, "__await__"):
        value = cells.wait(value)
    return value


def _interactivity(cells: _Cells) -> str | None:
    """IPython's ``ast_node_interactivity`` when the notebook changed it, read as a cell starts
    (as IPython reads it): by ``%config InteractiveShell.ast_node_interactivity=...`` (the
    shell's) or ``InteractiveShell.ast_node_interactivity = ...`` on IPython's class. None: the
    default, the last expression's value shown (the scheduler marked those cells)."""
    mode = getattr(cells.shell, "ast_node_interactivity", None)
    module = sys.modules.get("IPython.core.interactiveshell")
    if module is not None:
        value = getattr(getattr(module, "InteractiveShell", None), "ast_node_interactivity", None)
        if isinstance(value, str):  # assigned on the class (else a traitlets trait, the default)
            mode = value
    return None if mode in (None, "last_expr") else mode




# Compiler flags, as constants: importing ast or __future__ for them would cost every task.
_TOP_LEVEL_AWAIT = 0x2000  # ast.PyCF_ALLOW_TOP_LEVEL_AWAIT (Python 3.8+)
_CO_COROUTINE = 0x0080  # inspect.CO_COROUTINE: a cell with top-level await compiles to a coroutine
_FUTURE_FLAGS = 0x1FE0010  # every __future__ feature's compiler_flag, OR-ed (checked by the tests)
_MISPLACED_FUTURE = "from __future__ imports must occur at the beginning of the file"
_JUPYTER_RECURSION_LIMIT = 3000  # sys.getrecursionlimit() in a Jupyter kernel (jedi's, set on import)


class _Cells:
    """Runs a notebook's cells as IPython does: each compiled on its own under the name
    "NOTEBOOK cell N" (tracebacks and the run's error name the cell and its line), a
    ``from __future__`` import valid at the top of any cell and kept for later cells,
    top-level ``await`` run in one event loop kept for the whole run. What only some runs
    need (an event loop, the magics' shell, an error's place) is in ``bootstrap_cells.py``,
    loaded then: this file is compiled at every task's start.

    ``peach_tasks.notebook.compile_cell`` is the scheduler's twin of ``compile``: what
    ``validate`` accepts, this runs. ``files`` are the names code was compiled under.
    """

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.namespace: dict = {}
        self.files: set[str] = set()
        self.loop = None  # the event loop of top-level await, once one is needed
        self.shell = None  # notebook_shell.Shell, when the notebook uses magics
        self.flags = [0]  # the notebook's compiler flags (future imports), carried from cell to cell
        self.failed_in: str | None = None  # where a cell failed outside its own code (a cell magic)
        self.count = 0  # the running cell's execution count (Jupyter's In [N])
        self.out: dict = {}  # IPython's Out: execution count -> the cell's result
        self.unders: tuple = ("", "", "")  # what _, __ and ___ were last set to (bootstrap_cells.show_result)
        self.hidden: dict = {}  # the run's own names in the namespace, as IPython's user_ns_hidden
        self.running: str | None = None  # the cell running now, by its name in tracebacks

    def run(self, cell: dict, namespace: dict | None = None, filename: str | None = None,
            flags: list | None = None) -> None:
        """Run one cell (``{"cell", "code"[, "magic"]}``) in ``namespace`` (default: the
        notebook's). ``flags`` carries the compiler flags of a group of cells (default:
        the notebook's); a cell magic is the shell's to apply."""
        number = cell.get("cell")
        name = filename or (self.filename if number is None else f"{self.filename} cell {number}")
        started = _more().clocks() if cell.get("time") else None  # %%time
        outer, self.running = self.running, name
        try:
            try:
                if cell.get("magic") and self.shell is not None:
                    def body() -> None:  # the cell's figures shown inside the magic: %%capture keeps them
                        self._execute(cell, name, namespace, flags)
                        self._flush_figures(namespace, number)
                    self.shell.run_cell_magic_of(cell, body)
                else:
                    self._execute(cell, name, namespace, flags)
            except BaseException as exc:
                if started is None or not isinstance(exc, Exception):
                    if self.failed_in is None and number is not None:  # the innermost cell that failed
                        self.failed_in = f"{name} line {(cell.get('magic') or {}).get('at', 1)}"
                    raise
                self.error_shown("the %%time cell", exc)  # as IPython's %%time: shown, the next cells run
                started = None
            if started is not None:
                _more().print_times(started)
            self._flush_figures(namespace, number)
        finally:
            self.running = outer

    def clocks(self) -> tuple:
        """Wall and CPU clocks now, for ``%time`` (the shell's) and ``%%time``."""
        return _more().clocks()  # type: ignore[attr-defined]

    def error_shown(self, what: str, exc: BaseException, where: str | None = None) -> None:
        """An error the notebook's cells go on after, as Jupyter's do (``%time``, ``%%time``,
        a cell tagged ``raises-exception``, a script ``%run`` runs), in cell ``where`` (default:
        the running one): its traceback printed from the notebook's frames, and the run fails
        at its end, as papermill fails it. The next failure is placed afresh."""
        _more().print_error(exc, self.files)  # type: ignore[attr-defined]
        _displays().failed(what, exc, where)  # type: ignore[attr-defined]
        self.failed_in = None

    def print_times(self, started: tuple) -> None:
        _more().print_times(started)  # type: ignore[attr-defined]

    def _flush_figures(self, namespace: dict | None, number: object) -> None:
        """As Jupyter's inline backend: a notebook cell's figures shown at its end."""
        if namespace is None and number is not None and _displays_module is not None:
            _displays_module.figures.flush_figures(cell_end=True)

    def _execute(self, cell: dict, name: str, namespace: dict | None, flags: list | None) -> None:
        source = cell["code"]
        # Tracebacks and inspect.getsource then show the cell's own lines.
        _remember_lines(name, source)
        self.files.add(name)
        state = flags if flags is not None else self.flags
        allow_await = 0 if cell.get("plain") else _TOP_LEVEL_AWAIT
        target = self.namespace if namespace is None else namespace
        if namespace is None:  # as IPython before each cell: a warning from the same line is shown again
            target.pop("__warningregistry__", None)
        mode = _interactivity(self) if namespace is None else None
        if mode is not None:  # the notebook changed which statements show their value
            codes = _more().interactive(source, name, state, allow_await, _FUTURE_FLAGS, mode)
        elif cell.get("show"):  # its last expression's value is the cell's result, as in IPython
            codes = _more().shown(source, name, state, allow_await, _FUTURE_FLAGS)
        else:
            try:
                codes = [compile(source, name, "exec", state[0] | allow_await, True)]
            except SyntaxError as exc:
                if exc.msg != _MISPLACED_FUTURE:
                    raise
                codes = _more().statements(source, name, state, allow_await, _FUTURE_FLAGS)  # as IPython
        for code in codes:
            state[0] |= code.co_flags & _FUTURE_FLAGS
            if mode is not None or (code is codes[-1] and cell.get("show")):
                sys.displayhook = _displayhook  # not a hook the cell set (sympy's init_printing): IPython's shows
            if code.co_flags & _CO_COROUTINE:
                self.wait(eval(code, target))
            else:
                exec(code, target)

    def wait(self, awaitable: object) -> object:
        """Run ``awaitable`` to its end in the run's event loop (made on first use)."""
        return _more().wait(self, awaitable)

    def close(self) -> None:
        """The run has ended: its event loop closed, and what it made let go (run_request)."""
        if self.loop is not None:
            _more().close(self)
        self.namespace, self.out = {}, {}
        if self.shell is not None:
            self.shell.release()  # type: ignore[attr-defined]

    def where(self, exc: BaseException) -> str | None:
        """"NOTEBOOK cell N line L" of the innermost frame of the notebook's code in the traceback."""
        try:
            return _more().where(self, exc)
        except Exception:  # the task broke what loading it needs: the error is still reported
            return self.failed_in


_MORE_FILE = os.path.join(os.path.dirname(_THIS_FILE), "bootstrap_cells.py")
_more_module = None
_showing: "_Cells | None" = None  # the cells whose results the display hook keeps (_run)


def _load_beside(name: str, path: str) -> object:
    """The module in ``path`` (a file beside this one), loaded under the private ``name``
    (not in ``sys.modules``: a task's own module of the same file name stays the task's),
    from the bytecode compiled with the environment when it is of this very source
    (``bytecode.py``), else compiled now."""
    with open(path, "rb") as handle:
        source = handle.read()
    code = None
    try:
        with open(os.path.join(sys.prefix, _BYTECODE_DIR, os.path.basename(path) + ".bin"), "rb") as handle:
            version, where, text, code = marshal.loads(handle.read())
    except (OSError, ValueError, EOFError, TypeError):  # none, or not a record of ours
        version = where = text = None
    if (version, where, text) != (sys.version, path, source):
        code = compile(source, path, "exec", dont_inherit=True)
    module = type(sys)(name)
    module.__file__ = path
    exec(code, module.__dict__)  # noqa: S102 (our own file)
    return module


_BYTECODE_DIR = os.path.join("share", "peach-tasks", "bytecode")  # bytecode.CACHE_DIR


def _more() -> object:
    """``bootstrap_cells.py``, beside this file, loaded on first use."""
    global _more_module
    if _more_module is None:
        _more_module = _load_beside("_peach_tasks_bootstrap_cells", _MORE_FILE)
    return _more_module


_start_module = None


def _start() -> object:
    """``bootstrap_start.py``, beside this file, loaded on first use: only a sandboxed or
    replicated run needs it."""
    global _start_module
    if _start_module is None:
        _start_module = _load_beside("_peach_tasks_bootstrap_start",
                                     os.path.join(os.path.dirname(_THIS_FILE), "bootstrap_start.py"))
    return _start_module


def _displayhook(value: object) -> None:
    """A cell's result, as Jupyter shows it (``Out[n]``): kept as an output by ``display()``;
    ``_``, ``__``, ``___``, ``_N`` and ``Out[N]`` hold it, as in IPython."""
    if value is not None:
        _more().show_result(value, _showing)


def _start_shell(cells: _Cells, runs: dict) -> None:
    """The small IPython stand-in (``notebook_shell.py``) for a notebook that uses magics or
    ``get_ipython()``, or whose libraries ask IPython for it; others never pay for it."""
    if cells.shell is not None:  # a library asked for it first (_shell_on_demand)
        cells.shell.adopt(runs)  # type: ignore[attr-defined]
        return
    folder = os.path.dirname(_THIS_FILE)
    shell = _load_beside("peach_tasks_notebook_shell", os.path.join(folder, "notebook_shell.py"))
    shell.values = _load_beside("peach_tasks_notebook_shell_values",  # type: ignore[attr-defined]
                                os.path.join(folder, "notebook_shell_values.py"))
    shell.names = _load_beside("peach_tasks_notebook_shell_names",  # type: ignore[attr-defined]
                               os.path.join(folder, "notebook_shell_names.py"))
    shell.configure_figures = _configure_figures  # type: ignore[attr-defined]
    _more().start_shell(cells, runs, shell)


def _configure_figures(name: str, value: object) -> None:
    """``%config InlineBackend.NAME = value``, through the shell: the figures' module follows it."""
    _displays().figures.configure_inline(name, value)  # type: ignore[attr-defined]


_shell_ahead = False  # --shell: started ahead for a notebook that has the magics' shell


def _shell_on_demand() -> object:
    """IPython's ``get_ipython()`` called by a library before the request, in a sandbox
    started ahead (``--shell``): the shell the run will have, made now, so that what the
    module decides on import (plotly its renderer) is what it decides in a run started cold,
    where the shell starts before the cells; the run adopts these cells and their shell.
    None for a notebook without the shell, as IPython's outside a kernel: a library then
    takes its path for plain Python rather than find a stand-in lacking what it wants."""
    global _showing
    if _showing is not None and _showing.shell is not None:
        return _showing.shell
    if not _shell_ahead or _showing is not None:  # the run itself: its shell, if any, is the builtin's
        return None
    _showing = _Cells("")
    _start_shell(_showing, {})
    return _showing.shell


def _requires_one(func: object) -> bool:
    """Whether a plain function has exactly one required positional parameter (read from
    its code object: importing inspect would cost every run)."""
    code = getattr(func, "__code__", None)
    if code is None or not isinstance(getattr(code, "co_argcount", None), int):
        return False
    required = code.co_argcount - len(getattr(func, "__defaults__", None) or ())
    if hasattr(func, "__self__"):
        required -= 1  # a bound method: self is given
    return required == 1


def _offer_helpers() -> None:
    """Let ``from peach_tasks import trigger_task`` and PEACH's ``from
    pipe_algorithms_lib.task_helpers import trigger_task_with_event`` work in an environment
    without peach-tasks (nothing is installed into the organisation's environment).

    The finder is asked last, so an installed peach-tasks (or pipe_algorithms_lib) always
    wins; otherwise each is a package holding only the standard-library trigger helper.
    """
    helper = os.path.join(os.path.dirname(os.path.dirname(_THIS_FILE)), "trigger_client.py")
    if os.path.isfile(helper):
        sys.meta_path.append(_HelperFinder(helper))


# -- display() and the run's outputs (displays.py, loaded on first use) ----------------------
_DISPLAYS_FILE = os.path.join(os.path.dirname(_THIS_FILE), "displays.py")
_FIGURES_FILE = os.path.join(os.path.dirname(_THIS_FILE), "displays_figures.py")  # matplotlib's, with it
_PRETTY_FILE = os.path.join(os.path.dirname(_THIS_FILE), "displays_pretty.py")  # a result's text, with it
_displays_module = None
_outputs_request: dict = {}


def _offer_display(request: dict) -> None:
    """``display`` as a builtin, and hooks that load ``displays.py`` when the task imports
    ``matplotlib.pyplot`` or IPython's display functions; nothing more is loaded now."""
    _outputs_request.update(folder=request.get("outputs_dir"), max_count=int(request.get("max_outputs") or 100),
                            max_bytes=int(request.get("max_output_bytes") or 10 << 20))
    _display_hooks()
    if _displays_module is not None and _outputs_request["folder"]:  # loaded before the request (--preload)
        _displays_module.install(os.path.abspath(_outputs_request["folder"]),  # type: ignore[attr-defined]
                                 _outputs_request["max_count"], _outputs_request["max_bytes"])


def _display_hooks() -> None:
    """``display`` as a builtin and the import hooks, once (a sandbox started ahead puts them
    in place before it imports the next task's modules, the request finds them there)."""
    if not hasattr(builtins, "display"):
        builtins.display = _display  # type: ignore[attr-defined]
    if not any(isinstance(finder, _DisplayHooks) for finder in sys.meta_path):
        sys.meta_path.insert(0, _DisplayHooks())


_displays_loading = _thread.RLock()


def _displays() -> object:
    global _displays_module
    if _displays_module is not None:
        return _displays_module
    # Threads of the task may display at once (a thread pool's first outputs): one of them
    # loads displays.py; two would each install their own outputs, numbered from 1 over each other.
    with _displays_loading:
        if _displays_module is not None:
            return _displays_module
        module: Any = _load_beside("_peach_tasks_displays", _DISPLAYS_FILE)  # (Any: loaded from a file)
        figures: Any = _load_beside("_peach_tasks_displays_figures", _FIGURES_FILE)
        figures.display, figures.say, figures.failed = module.display, module._say, module.failed
        module.running_cell = _running_cell
        module.figures = figures
        module.pretty = _load_beside("_peach_tasks_displays_pretty", _PRETTY_FILE)
        module.AFTER_IMPORT.update(figures.AFTER_IMPORT)
        module.shell_on_demand = _shell_on_demand
        folder = _outputs_request.get("folder")
        if folder:
            module.install(os.path.abspath(folder), _outputs_request["max_count"], _outputs_request["max_bytes"])
        _displays_module = module
    return _displays_module


def _running_cell() -> str | None:
    """The notebook cell running now ("NOTEBOOK cell N"), for an error displays.py says."""
    return None if _showing is None else _showing.running


def _display(*objs: object, **kwargs: object) -> object:
    return _displays().display(*objs, **kwargs)  # type: ignore[attr-defined]


_display.peach_display = True  # type: ignore[attr-defined]  # ours: show_result may pass _peach_result


def _output_failure() -> dict | None:
    """The run's error when Jupyter would have shown an error and gone on (a repr method raised,
    a figure could not be drawn, a ``%time`` statement failed: displays.failed): the first of
    them, where it was shown, and how many."""
    first = None if _displays_module is None else _displays_module.first_failure  # type: ignore[attr-defined]
    if first is None:
        return None
    where, what, exc = first
    error = _describe(exc)
    count = _displays_module.failure_count  # type: ignore[union-attr]
    more = f" (and {count - 1} more)" if count > 1 else ""
    error["last_line"] = f"{where + ': ' if where else 'at the end of the run: '}{what} raised " \
                         f"{error['last_line']}{more}: Jupyter shows its traceback in the output and runs the " \
                         "next cells, papermill then fails the run"
    error["last_line"] = error["last_line"][: _io.MAX_ERROR_CHARS]  # type: ignore[attr-defined]
    return error


def _finish_outputs() -> None:
    if _displays_module is None:
        return  # the task displayed nothing and never imported pyplot
    try:
        _displays_module.finish()  # type: ignore[attr-defined]
    except Exception as exc:  # showing the figures left open must not change the run's outcome
        _say(f"peach-tasks: the figures left open could not be kept: {exc!r}")


class _DisplayHooks:
    """A meta path finder that lets ``displays.py`` act around a few imports: matplotlib's
    font list built with the environment after ``matplotlib`` loads, the backend before
    ``matplotlib.pyplot`` loads and its ``show`` after; IPython's ``display`` after its
    module loads (without a kernel it would only print), its ``get_ipython`` (None without
    a kernel) and its ``capture_output`` (which asks a kernel's shell); ``set_matplotlib_formats``,
    which a run follows as Jupyter does. And the cells' lines given to ``linecache`` once it
    loads (``_remember_lines``), ``getpass``
    answering as ``input()`` does, pandas with a kernel's defaults and plotly with a kernel's
    renderer (``bootstrap_io``)."""

    NAMES = frozenset(("matplotlib", "matplotlib.pyplot", "IPython.core.display_functions", "IPython.core.display",
                       "IPython.core.getipython", "matplotlib_inline.backend_inline", "linecache", "getpass",
                       "pandas", "plotly.io._renderers", "IPython.utils.capture"))

    def find_spec(self, name: str, path: object = None, target: object = None) -> object:
        if name not in self.NAMES:
            return None
        if name == "linecache":
            after = _after_linecache
        elif name in ("getpass", "pandas"):
            after = getattr(_io, f"after_{name}")
        elif name == "plotly.io._renderers":
            after = _io.after_plotly_renderers  # type: ignore[attr-defined]
        else:
            displays = _displays()
            if name == "matplotlib.pyplot" and "matplotlib" in sys.modules:
                displays.figures.before_pyplot(sys.modules["matplotlib"])  # type: ignore[attr-defined]
            after = displays.AFTER_IMPORT[name]  # type: ignore[attr-defined]
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if finder is not self and find is not None else None
            if spec is not None:
                break
        else:
            return None
        load = getattr(spec.loader, "exec_module", None)
        if load is None or isinstance(spec.loader, type):  # a class's method (frozen, builtin): not ours to patch
            return spec

        def exec_module(module: object) -> None:
            load(module)
            after(module)

        try:
            spec.loader.exec_module = exec_module  # type: ignore[union-attr]
        except AttributeError:
            pass
        return spec


# -- the cells' lines for linecache, without importing it (nor tokenize and re) -------------
_pending_lines: dict = {}  # cell name -> linecache entry, until linecache is loaded


def _remember_lines(name: str, source: str) -> None:
    """Let tracebacks, ``inspect.getsource`` and warnings show a cell's own lines: its entry
    in linecache, given when linecache is loaded (``_DisplayHooks``)."""
    # Lines as the compiler counts them (str.splitlines would also split at a form feed), each
    # ending with a newline, as traceback's carets expect (one column off without it).
    lines = [line + "\n" for line in source.split("\n")]
    if source.endswith("\n"):
        lines.pop()
    entry = (len(source), None, lines, name)  # no mtime: checkcache keeps it
    linecache = sys.modules.get("linecache")
    if linecache is not None:
        linecache.cache[name] = entry
    else:
        _pending_lines[name] = entry


def _after_linecache(module: object) -> None:
    module.cache.update(_pending_lines)  # type: ignore[attr-defined]
    _pending_lines.clear()


class _HelperFinder:
    """A meta path finder for ``peach_tasks``, ``peach_tasks.trigger_client``,
    ``pipe_algorithms_lib`` and ``pipe_algorithms_lib.task_helpers`` only."""

    # module -> the trigger_client names it shows (None: the helper file itself)
    MODULES = {
        "peach_tasks": ("trigger_task", "trigger_task_with_event", "TriggerError"),
        "pipe_algorithms_lib": (),
        "pipe_algorithms_lib.task_helpers": ("trigger_task_with_event", "trigger_task", "TriggerError"),
    }
    PACKAGES = ("peach_tasks", "pipe_algorithms_lib")

    def __init__(self, helper: str) -> None:
        self.helper = helper

    def find_spec(self, name: str, path: object = None, target: object = None) -> object:
        import importlib.util

        if name == "peach_tasks.trigger_client":
            return importlib.util.spec_from_file_location(name, self.helper)
        if name in self.MODULES:
            return importlib.util.spec_from_loader(name, self, is_package=name in self.PACKAGES)
        return None

    def create_module(self, spec: object) -> None:
        return None  # the default module object

    def exec_module(self, module: object) -> None:
        import peach_tasks.trigger_client as client

        for attribute in self.MODULES[module.__name__]:  # type: ignore[attr-defined]
            setattr(module, attribute, getattr(client, attribute))


def _before_site_packages() -> int:
    """Where IPython puts the working folder on sys.path: before the first site-packages (or
    dist-packages) folder, after the standard library, so that a notebook's json.py or
    logging.py does not take the place of the standard library's (it shadows an installed
    package, as in Jupyter). The front when there is none."""
    for index, path in enumerate(sys.path):
        if os.path.basename(path) in ("site-packages", "dist-packages"):
            return index
    return 0


def _no_breakpoint(*args: object, **kwargs: object) -> None:
    return None


def _kernel_open(file: object, *args: object, **kwargs: object) -> object:
    """The notebook's ``open``, as IPython's: not the standard streams' descriptors, whose
    file object would close the run's output when collected."""
    if file in (0, 1, 2):
        raise ValueError(f"IPython won't let you open fd={file} by default as it is likely to crash IPython. "
                         "If you know what you are doing, you can use builtins' open.")
    return builtins.open(file, *args, **kwargs)  # type: ignore[call-overload]


# As IPython's, functools.wraps of io.open: its name, module, help and signature.
_kernel_open.__name__ = _kernel_open.__qualname__ = "open"
_kernel_open.__module__, _kernel_open.__doc__ = "io", builtins.open.__doc__
_kernel_open.__wrapped__ = builtins.open  # type: ignore[attr-defined]


def _takes_positional(func: object) -> bool:
    import inspect

    try:
        params = inspect.signature(func).parameters.values()  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return True  # no signature to read (some builtins): try the payload
    kind = inspect.Parameter
    return any(p.kind in (kind.POSITIONAL_ONLY, kind.POSITIONAL_OR_KEYWORD, kind.VAR_POSITIONAL) for p in params)


# -- the exchange with the scheduler (bootstrap_io.py, loaded at every start) -------------
def _describe(exc: BaseException, where: str | None = None) -> dict:
    """The result file's ``error`` for the task's exception (``bootstrap_io.describe``)."""
    import linecache  # through _DisplayHooks: the cells' lines are then in it

    if _pending_lines:  # its loader could not be hooked
        _after_linecache(linecache)
    return _io.describe(exc, where, _OWN_FILES)  # type: ignore[attr-defined]


_io = _load_beside("_peach_tasks_bootstrap_io", os.path.join(os.path.dirname(_THIS_FILE), "bootstrap_io.py"))
_loads, _dumps, _result = _io.loads, _io.dumps, _io.result  # type: ignore[attr-defined]
_ResultDir, _say = _io.ResultDir, _io.say  # type: ignore[attr-defined]


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


if __name__ == "__main__":
    status = main()
    _io.watch_exit(status, _flush)  # type: ignore[attr-defined]
    _flush()
    sys.exit(status)
