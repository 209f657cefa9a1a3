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
goes to ``outputs_dir`` (``displays.py``, loaded only once the task displays or plots). The result file's folder is opened before the task runs and the
file is written through that handle, so a task that changes or deletes its working
directory (its private checkout copy) still gets its result or its own error recorded.

A sandbox started ahead (``warm.py``) runs this with ``--ack FD`` first: it waits for the
copy, reads the request, writes one byte on FD and closes it before anything of the task
runs, then takes the request's ``env`` (the whole environment) and enters its ``cwd``.

In a sandbox the checkout's private copy is made while this interpreter starts: then the
arguments are ``--copy PID DONE`` (see ``sandbox.TASK_STEP_BESIDE``), and nothing of the
task runs before that copy ended whole and the process entered the request's ``cwd`` in it.
"""

from __future__ import annotations

import builtins
import marshal
import os
import sys

# Neither json nor linecache is imported here: each imports re (and linecache tokenize),
# about a third of a small task's start. JSON goes through CPython's own scanner and
# encoder (``_loads``, ``_dumps``), cells' lines reach linecache when something loads it
# (``_remember_lines``). A task that imports them pays for them, as in any process.

_THIS_FILE = os.path.abspath(__file__)
# This file's frames as a traceback names them (the path it was started with, or the
# absolute one); compared as text, since a task may delete the working directory that
# os.path.abspath would need for a relative name.
_OWN_FILES = frozenset((__file__, _THIS_FILE))


def main() -> int:
    # -I ignores PYTHONUNBUFFERED and PYTHONIOENCODING: flush every line to keep the
    # log live, and write UTF-8, which is what the scheduler decodes.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(encoding="utf-8", errors="backslashreplace", line_buffering=True, write_through=True)
        except (AttributeError, ValueError):
            pass
    args = sys.argv[1:]
    ack = None
    if args[:1] == ["--ack"]:
        ack, args = args[1], args[2:]
    copy = args[1:3] if args[:1] == ["--copy"] else None
    if ack is not None and copy is not None:
        # Started ahead: the copy must be whole before the request is taken, so that a
        # failed one (the waiting sandbox's small memory limit) lets the run start afresh.
        status = _wait_for_copy(copy, None)
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
        status = _accept(ack, request)
        if status:
            return status
    if copy is not None:
        status = _wait_for_copy(copy, request.get("cwd"))
        if status:
            return status
    if request.get("die_with_parent"):
        _die_with(int(request["die_with_parent"]))
    return run_request(request)


def _accept(fd: str, request: dict) -> int:
    """A sandbox started ahead takes its request: tell the scheduler on pipe ``fd`` (before
    anything of the task runs: without this byte the scheduler starts the run afresh), then
    take on the run's environment and enter its folder. 0, or 125 if that fails."""
    try:
        os.write(int(fd), b"1")
        os.close(int(fd))
    except (OSError, ValueError) as exc:
        print(f"peach-tasks bootstrap: cannot acknowledge the request on fd {fd}: {exc}", file=sys.stderr)
        return 125
    env = request.get("env")
    if isinstance(env, dict):
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in env.items()})
    try:
        os.chdir(request.get("cwd") or "/")
    except OSError as exc:
        print(f"peach-tasks bootstrap: cannot enter {request.get('cwd')}: {exc}", file=sys.stderr)
        return 125
    return 0


def _wait_for_copy(args: list[str], cwd: str | None) -> int:
    """Wait for the sandbox's copy of the checkout (``args``: its job's pid, the file it
    leaves when the copy is whole), then enter ``cwd`` (if given): 0, or 125 (the sandbox's
    own failure code) when either fails."""
    try:
        pid, done = int(args[0]), args[1]
    except (IndexError, ValueError):
        print(f"peach-tasks bootstrap: unusable --copy arguments {args!r}", file=sys.stderr)
        return 125
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass  # the shell reaped it before it became this interpreter: it has ended
    try:
        os.unlink(done)
    except OSError:
        print("peach-tasks bootstrap: the private copy of the checkout failed", file=sys.stderr)
        return 125
    if cwd is None:
        return 0
    try:
        os.chdir(cwd or "/")
    except OSError as exc:
        print(f"peach-tasks bootstrap: cannot enter {cwd}: {exc}", file=sys.stderr)
        return 125
    return 0


def _die_with(parent_pid: int) -> None:
    """Be SIGKILLed by the kernel when the scheduler that started us dies.

    With replicas another scheduler may take the loop over, so a task must not outlive
    its own. Set here rather than in a pre-exec hook: such a hook makes Python fork the
    whole scheduler while holding its interpreter lock, which with hundreds of loops
    took about 40% of that lock's time. The parent check closes the gap between the
    start and this call.
    """
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):  # not Linux: the scheduler's marker scan still ends us
        return
    if os.getppid() != parent_pid:  # the scheduler died before we got here
        os._exit(137)


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

    # Like Jupyter: the notebook's folder is importable, the task sees itself as argv[0].
    sys.path.insert(0, request.get("cwd") or os.getcwd())
    sys.argv = [filename]
    _offer_helpers()
    _offer_display(request)

    cells = _Cells(filename)
    with result_dir:
        try:
            try:
                value = _run(code, filename, request, extra_globals or {}, cells)
            finally:
                _finish_outputs()
        except SystemExit as exc:
            status = _exit_code(exc)
            if status == 0:  # sys.exit() / sys.exit(0) is a successful end without a value
                result_dir.write({"ok": True, "result": None})
            return status
        except BaseException as exc:  # the task's failure, whatever it is, is reported
            result_dir.write({"ok": False, "error": _describe(exc, cells.where(exc))})
            return 1
        finally:
            cells.close()
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
        sys.displayhook = _displayhook  # a cell's last expression (notebook.show_last_expression)
        if program.get("shell"):
            _start_shell(cells, program.get("runs") or {})
        for cell in program["cells"]:
            cells.run(cell)
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


# Compiler flags, as constants: importing ast or __future__ for them would cost every task.
_TOP_LEVEL_AWAIT = 0x2000  # ast.PyCF_ALLOW_TOP_LEVEL_AWAIT (Python 3.8+)
_CO_COROUTINE = 0x0080  # inspect.CO_COROUTINE: a cell with top-level await compiles to a coroutine
_FUTURE_FLAGS = 0x1FE0010  # every __future__ feature's compiler_flag, OR-ed (checked by the tests)
_MISPLACED_FUTURE = "from __future__ imports must occur at the beginning of the file"


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

    def run(self, cell: dict, namespace: dict | None = None, filename: str | None = None,
            flags: list | None = None) -> None:
        """Run one cell (``{"cell", "code"[, "magic"]}``) in ``namespace`` (default: the
        notebook's). ``flags`` carries the compiler flags of a group of cells (default:
        the notebook's); a cell magic is the shell's to apply."""
        number = cell.get("cell")
        name = filename or (self.filename if number is None else f"{self.filename} cell {number}")
        try:
            if cell.get("magic") and self.shell is not None:
                self.shell.run_cell_magic_of(cell, lambda: self._execute(cell, name, namespace, flags))
            else:
                self._execute(cell, name, namespace, flags)
        except BaseException:
            if self.failed_in is None and number is not None:  # the innermost cell that failed
                self.failed_in = f"{name} line {(cell.get('magic') or {}).get('at', 1)}"
            raise
        if namespace is None and number is not None and _displays_module is not None:
            _displays_module.flush_figures()  # as Jupyter's inline backend: a cell's figures at its end

    def _execute(self, cell: dict, name: str, namespace: dict | None, flags: list | None) -> None:
        source = cell["code"]
        # Tracebacks and inspect.getsource then show the cell's own lines.
        _remember_lines(name, source)
        self.files.add(name)
        state = flags if flags is not None else self.flags
        allow_await = 0 if cell.get("plain") else _TOP_LEVEL_AWAIT
        target = self.namespace if namespace is None else namespace
        try:
            codes = [compile(source, name, "exec", state[0] | allow_await, True)]
        except SyntaxError as exc:
            if exc.msg != _MISPLACED_FUTURE:
                raise
            codes = _more().statements(source, name, state, allow_await, _FUTURE_FLAGS)  # as IPython
        for code in codes:
            state[0] |= code.co_flags & _FUTURE_FLAGS
            if code.co_flags & _CO_COROUTINE:
                self.wait(eval(code, target))
            else:
                exec(code, target)

    def wait(self, awaitable: object) -> object:
        """Run ``awaitable`` to its end in the run's event loop (made on first use)."""
        return _more().wait(self, awaitable)

    def close(self) -> None:
        if self.loop is not None:
            _more().close(self)

    def where(self, exc: BaseException) -> str | None:
        """"NOTEBOOK cell N line L" of the innermost frame of the notebook's code in the traceback."""
        try:
            return _more().where(self, exc)
        except Exception:  # the task broke what loading it needs: the error is still reported
            return self.failed_in


_MORE_FILE = os.path.join(os.path.dirname(_THIS_FILE), "bootstrap_cells.py")
_more_module = None


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


def _displayhook(value: object) -> None:
    """A cell's result, as Jupyter shows it (``Out[n]``): kept as an output by ``display()``;
    ``_`` holds it, as in IPython."""
    if value is not None:
        _more().show_result(value)


def _start_shell(cells: _Cells, runs: dict) -> None:
    """The small IPython stand-in (``notebook_shell.py``) for a notebook that uses magics or
    ``get_ipython()``; others never pay for it."""
    shell = _load_beside("peach_tasks_notebook_shell", os.path.join(os.path.dirname(_THIS_FILE), "notebook_shell.py"))
    _more().start_shell(cells, runs, shell)


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
_displays_module = None
_outputs_request: dict = {}


def _offer_display(request: dict) -> None:
    """``display`` as a builtin, and hooks that load ``displays.py`` when the task imports
    ``matplotlib.pyplot`` or IPython's display functions; nothing more is loaded now."""
    _outputs_request.update(folder=request.get("outputs_dir"), max_count=int(request.get("max_outputs") or 100),
                            max_bytes=int(request.get("max_output_bytes") or 10 << 20))
    if not hasattr(builtins, "display"):
        builtins.display = _display  # type: ignore[attr-defined]
    sys.meta_path.insert(0, _DisplayHooks())


def _displays() -> object:
    global _displays_module
    if _displays_module is None:
        module = _load_beside("_peach_tasks_displays", _DISPLAYS_FILE)
        folder = _outputs_request.get("folder")
        if folder:
            module.install(os.path.abspath(folder), _outputs_request["max_count"], _outputs_request["max_bytes"])
        _displays_module = module
    return _displays_module


def _display(*objs: object, **kwargs: object) -> object:
    return _displays().display(*objs, **kwargs)  # type: ignore[attr-defined]


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
    module loads (without a kernel it would only print). And the cells' lines given to
    ``linecache`` once it loads (``_remember_lines``)."""

    NAMES = frozenset(("matplotlib", "matplotlib.pyplot", "IPython.core.display_functions", "IPython.core.display",
                       "linecache"))

    def find_spec(self, name: str, path: object = None, target: object = None) -> object:
        if name not in self.NAMES:
            return None
        if name == "linecache":
            after = _after_linecache
        else:
            displays = _displays()
            if name == "matplotlib.pyplot" and "matplotlib" in sys.modules:
                displays.before_pyplot(sys.modules["matplotlib"])  # type: ignore[attr-defined]
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


# -- JSON and linecache without importing json, re or tokenize ----------------------------
class _ScanContext:
    """What CPython's JSON scanner reads of a decoder (``json.JSONDecoder``'s defaults)."""

    strict = True
    object_hook = object_pairs_hook = None
    parse_float, parse_int = float, int

    @staticmethod
    def parse_constant(name: str) -> object:
        raise ValueError(f"{name} is not JSON")  # the scheduler never writes NaN or Infinity


def _loads(data: bytes) -> object:
    """``json.loads(data)`` by the scanner json.loads itself uses; ``json`` where it is
    missing (another Python) or the text is not whole JSON (json then says why)."""
    try:
        from _json import make_scanner

        text = data.decode("utf-8")
        value, end = make_scanner(_ScanContext())(text, 0)
    except (ImportError, ValueError, StopIteration, RecursionError):  # json says why, or no C scanner here
        end, text = -1, ""
    if end < 0 or text[end:].strip():
        import json

        return json.loads(data)
    return value


def _dumps(value: object, default: object = None) -> str:
    """``json.dumps(value, default=default, allow_nan=False)``, by the encoder json.dumps uses."""
    try:
        from _json import encode_basestring_ascii, make_encoder

        encode = make_encoder({}, default or _not_serialisable, encode_basestring_ascii, None, ": ", ", ",
                              False, False, False)
    except (ImportError, TypeError):  # another Python's: json's own way
        import json

        return json.dumps(value, default=default, allow_nan=False)
    return "".join(encode(value, 0))


def _not_serialisable(value: object) -> object:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_pending_lines: dict = {}  # cell name -> linecache entry, until linecache is loaded


def _remember_lines(name: str, source: str) -> None:
    """Let tracebacks, ``inspect.getsource`` and warnings show a cell's own lines: its entry
    in linecache, given when linecache is loaded (``_DisplayHooks``)."""
    entry = (len(source), None, source.splitlines(True), name)  # no mtime: checkcache keeps it
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


def _takes_positional(func: object) -> bool:
    import inspect

    try:
        params = inspect.signature(func).parameters.values()  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return True  # no signature to read (some builtins): try the payload
    kind = inspect.Parameter
    return any(p.kind in (kind.POSITIONAL_ONLY, kind.POSITIONAL_OR_KEYWORD, kind.VAR_POSITIONAL) for p in params)


def _result(value: object, max_bytes: int) -> dict:
    try:
        text = _dumps(value)  # NaN is not JSON for the store
    except (TypeError, ValueError, RecursionError):
        return {"ok": True, "result": None, "result_note": f"not JSON-serialisable: {type(value).__name__}"}
    size = len(text.encode("utf-8"))
    if max_bytes and size > max_bytes:
        return {"ok": True, "result": None, "result_note": f"too large: {size} bytes"}
    return {"ok": True, "result": value}


# What a result file holds of an error at most: the scheduler keeps no more (peach_tasks/bounds.py),
# and a file of a 100 MB message would be refused whole, error and all.
_MAX_ERROR_CHARS = 4 * 1024
_MAX_TRACEBACK_CHARS = 64 * 1024


def _describe(exc: BaseException, where: str | None = None) -> dict:
    import linecache  # through _DisplayHooks: the cells' lines are then in it
    import traceback

    if _pending_lines:  # its loader could not be hooked
        _after_linecache(linecache)

    # Drop this file's own frames: the reader should start at the task's code.
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename in _OWN_FILES:
        tb = tb.tb_next
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    try:
        sys.stderr.write(text)  # into the log; the task may have closed or replaced stderr
    except Exception:
        pass
    only = traceback.format_exception_only(type(exc), exc)
    notes = getattr(exc, "__notes__", None)
    if isinstance(notes, list) and notes and len(only) > len(notes):
        only = only[: -len(notes)]  # notes come after the "Type: message" line
    last_line = only[-1].strip() if only else type(exc).__name__
    if where:  # the run's error says where in the notebook, as a syntax error found before the run does
        last_line = f"{where}: {last_line}"
    if len(last_line) > _MAX_ERROR_CHARS or len(text) > _MAX_TRACEBACK_CHARS:
        _say(f"peach-tasks: the run keeps this error cut to {_MAX_ERROR_CHARS} characters (it has {len(last_line)}) "
             f"and its traceback to {_MAX_TRACEBACK_CHARS} (it has {len(text)})")
    return {
        "type": _cut(type(exc).__name__, 200),
        "value": _cut(_safe_str(exc), _MAX_ERROR_CHARS),
        "traceback": _cut(text, _MAX_TRACEBACK_CHARS, keep_end=True),
        "last_line": _cut(last_line, _MAX_ERROR_CHARS),
    }


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<unprintable {type(exc).__name__}>"


def _cut(text: str, limit: int, keep_end: bool = False) -> str:
    """As peach_tasks.bounds.cut_text: at most ``limit`` characters, a marker where cut."""
    if len(text) <= limit:
        return text
    room = max(limit - len(_marker(len(text))), 0)
    marker = _marker(len(text) - room)
    if keep_end:
        head = room // 2
        return text[:head] + marker + text[len(text) - (room - head):]
    return text[:room] + marker


def _marker(cut: int) -> str:
    return f" [... {cut} characters cut by peach-tasks ...] "


def _say(line: str) -> None:
    try:
        print(line, file=sys.stderr)  # into the log; the task may have closed or replaced stderr
    except Exception:
        pass


def _exit_code(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # as Python does for sys.exit("message")
    return 1


class _ResultDir:
    """The result file's folder, held open from before the task runs until the result is
    written: the path is resolved once, while the working directory still exists, and the
    file is written relative to the open folder, whatever the task did to its cwd."""

    def __init__(self, path: str) -> None:
        folder, self.name = os.path.split(os.path.abspath(path))
        self.fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def __enter__(self) -> "_ResultDir":
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)

    def write(self, data: dict) -> None:
        # Write then rename: the scheduler never reads half a file if the task is killed.
        tmp = f"{self.name}.tmp"
        text = _dumps(data, default=repr)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644, dir_fd=self.fd)
        with open(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, self.name, src_dir_fd=self.fd, dst_dir_fd=self.fd)


if __name__ == "__main__":
    status = main()
    for _stream in (sys.stdout, sys.stderr):
        try:
            _stream.flush()
        except (OSError, ValueError):
            pass
    sys.exit(status)
