"""The task process's small stand-in for IPython: what ``get_ipython()`` returns in a task.

Loaded by ``bootstrap.py`` (from this file, standard library only) only for a notebook
whose code uses magics or ``get_ipython()``: the scheduler's ``magics`` module has
turned ``%cd data`` into ``get_ipython().run_line_magic('cd', 'data')``, ``!ls`` into
``get_ipython().system('ls')``, and marked the cells whose cell magic this applies
(``%%capture``, ``%%writefile``, ``%%bash``, ``%%html`` ...). Each does what IPython's
does (IPython 9), minus what only an interactive session sees. What is not here was
refused by ``validate`` and the scheduler before the run.

Seam for displays: while a ``%%capture`` (without ``--no-display``) runs, ``display_sinks``
ends with that capture's output list; a ``display()`` appends what it shows there instead
of showing it, as IPython's capture does.
"""

from __future__ import annotations

import builtins
import os
import posixpath
import sys
from io import StringIO

TYPE_CHECKING = False  # typing is not imported at run time: it would cost every notebook with a magic
if TYPE_CHECKING:
    from typing import Any, Callable

# What the magics hand to the notebook (x = !cmd's list, %%capture's object...) and IPython's
# events: notebook_shell_values.py, imported with the package, set by bootstrap.py when it
# loads this file on its own (a relative import has no package then).
try:
    from . import notebook_shell_names as names
    from . import notebook_shell_values as values
except ImportError:
    names = values = None  # type: ignore[assignment]

# re, subprocess, shlex and string are imported where used: this file loads for every
# notebook with a magic, and subprocess alone would cost more than the rest of it (bootstrap.py
# does not load re either: a task that does not use it never pays for it).

# Kept in step with peach_tasks.magics.NO_EFFECT_LINE_MAGICS (a test compares them): these
# change nothing a scheduled run can see, also when called as get_ipython().run_line_magic(...).
NO_EFFECT_LINE_MAGICS = frozenset({
    "matplotlib", "config", "autoreload", "aimport", "xmode", "pdb",
    "lsmagic", "history", "hist", "magic", "quickref", "colors", "automagic", "pinfo", "pinfo2",
    "psearch", "pprint", "page", "doctest_mode", "autosave", "notebook", "qtconsole", "connect_info",
})
NOT_SHOWN_BACKENDS = frozenset({"agg", "pdf", "ps", "svg", "pgf", "cairo", "template"})  # peach_tasks.magics'
# ``%config InlineBackend.figure_format = 'retina'``: the settings of Jupyter's inline backend
# that a run follows (peach_tasks.magics hands only these here), and what follows them:
# displays_figures.configure_inline, loaded apart, given by bootstrap.py (a test compares the
# pattern with peach_tasks.magics').
_INLINE_SETTING = r"\s*InlineBackend\.(figure_formats?|print_figure_kwargs|rc)\s*=(.*)$"
configure_figures: Callable[[str, object], None] | None = None
NO_EFFECT_EXTENSIONS = frozenset({"autoreload", "lab_black", "nb_black", "jupyter_black"})
RUNTIME_EXTENSIONS = frozenset({"dotenv"})  # loaded here, with their magics (peach_tasks.magics')
# IPython's default aliases on Linux.
ALIASES = {"ls": "ls -F --color", "ll": "ls -F -o --color", "lf": "ls -F -o --color %l | grep ^-",
           "lk": "ls -F -o --color %l | grep ^l", "ldir": "ls -F -o --color %l | grep /$",
           "lx": "ls -F -o --color %l | grep ^-..x", "cat": "cat", "cp": "cp", "mkdir": "mkdir", "mv": "mv",
           "rm": "rm", "rmdir": "rmdir"}
# '$name' outside single quotes, as IPython's DollarFormatter finds it (compiled by re's cache).
_DOLLAR = r"(.*?)\$(\$?[\w\.]+)(?=([^']*'[^']*')*[^']*$)"


class UsageError(Exception):
    """A magic used wrongly (IPython's ``UsageError``)."""


class Shell:
    """``get_ipython()`` in a task: the magics' meaning, and the common calls."""

    kernel = None  # no kernel: code that checks for one knows it is not in Jupyter

    def __init__(self, cells: Any, runs: dict) -> None:
        self.cells = cells  # bootstrap._Cells: runs code as the notebook's cells run
        self.runs = runs  # %run's files, read by the scheduler, by normalised path
        self.display_sinks: list[list] = []
        self.config: dict = {}
        self.ast_node_interactivity: str | None = None  # set by %config (bootstrap._interactivity reads it)
        self.events = values.Events()
        self.float_format = "%r"  # %precision: how a float result reads (IPython's PlainTextFormatter)
        self._previous_dir: str | None = None
        self.extensions: set[str] = set()  # the RUNTIME_EXTENSIONS loaded by %load_ext
        self.usage_error = UsageError  # for notebook_shell_names, loaded apart

    def __getattr__(self, name: str) -> Any:
        # Only for names the class lacks: a library that found a shell through IPython's
        # get_ipython() and wants more of IPython than a run has reads what is missing.
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(f"'Shell' object has no attribute '{name}' (peach-tasks' stand-in for IPython's "
                             "shell has the magics' meaning and the common calls, not all of IPython)")

    def adopt(self, runs: dict) -> None:
        """The run takes over a shell started before its request (a library imported ahead
        asked for it): its %run files."""
        self.runs.update(runs)

    def release(self) -> None:
        """The run has ended: let go of the callbacks and captures it registered here (a
        shell made before the request is frozen with the imports ahead, never collected)."""
        self.events, self.display_sinks = values.Events(), []

    def run_cell_events(self, cell: dict, execute: Callable[[], None]) -> None:
        """Run one cell between IPython's events, as a kernel does: ``pre_execute`` and
        ``pre_run_cell`` before it, ``post_execute`` and ``post_run_cell`` after it, also
        when it fails (matplotlib registers ``post_execute`` when IPython is loaded)."""
        info = values.Record(raw_cell=cell.get("code", ""), store_history=True, silent=False, shell_futures=True,
                             cell_id=None)
        self.events.trigger("pre_execute")
        self.events.trigger("pre_run_cell", info)
        result = values.Record(execution_count=getattr(self.cells, "count", None), error_before_exec=None,
                               error_in_exec=None, info=info, result=None, success=True)
        try:
            execute()
        except BaseException as exc:
            result.error_in_exec, result.success = exc, False
            raise
        finally:
            self.events.trigger("post_execute")
            self.events.trigger("post_run_cell", result)

    def timing(self) -> Any:
        """``%time STATEMENT``, written ``with get_ipython().timing(): STATEMENT``: IPython's
        timings printed after it; an error is printed and the cell goes on, as there."""
        return values.Timing(self.cells.clocks, self.cells.print_times, self.cells.error_shown)

    def time_value(self, expression: Callable[[], Any]) -> Any:
        """``%time EXPRESSION``: its value (None after an error), timed as ``timing``."""
        with self.timing():
            return expression()
        return None  # the error was printed: IPython's %time returns nothing then

    def enable_gui(self, gui: str | None = None) -> None:
        """No event loop to integrate with: a run has no screen."""

    def enable_matplotlib(self, gui: str | None = None) -> tuple:
        """``%matplotlib``: figures are kept as PNG outputs whatever is asked (displays.py)."""
        return gui, "inline"

    @property
    def user_ns(self) -> dict:
        return self.cells.namespace

    @property
    def execution_count(self) -> int:
        """The running cell's execution count (PySpark names a call site's cell by it)."""
        return getattr(self.cells, "count", 0) or 0

    # -- what generated code and notebooks call ------------------------------------------

    def run_line_magic(self, name: str, line: str, _stack_depth: int = 1) -> Any:
        """Run line magic ``name`` with ``line`` as IPython does (its ``$x``/``{x}`` expanded)."""
        backend = line.split()[0] if name == "matplotlib" and line.split() else ""
        if backend.lower() in NOT_SHOWN_BACKENDS:
            import matplotlib  # as IPython's %matplotlib: the backend, by matplotlib.use (displays.py sees it)

            return matplotlib.use(backend)
        if name == "config" and "InlineBackend" in line:
            return self._config_figures(line)
        if name == "config" and "ast_node_interactivity" in line:  # which statements show their value
            if "=" in line:  # (without one, IPython prints the setting)
                self.ast_node_interactivity = line.partition("=")[2].strip().strip("'\"") or "last_expr"
            return None
        if name in NO_EFFECT_LINE_MAGICS:
            return None
        if name in ("load_ext", "reload_ext") and line.strip() in NO_EFFECT_EXTENSIONS:
            return None
        if name in ("load_ext", "reload_ext") and line.strip() in RUNTIME_EXTENSIONS:
            return self._load_extension(line.strip())
        if name in ("time", "timeit"):
            raise UsageError(f"%{name} through run_line_magic is not supported by peach-tasks; "
                             "run the statement itself")
        handler = getattr(self, f"_magic_{name}", None)
        if name in ALIASES:
            return self.system(_alias(ALIASES[name], self.var_expand(line)))
        if handler is None:  # called at run time (validate refuses the magics it can see, in these words)
            if name in ("load_ext", "reload_ext"):
                raise UsageError(f"%{name} {line.strip()}: the IPython extension {line.strip()!r} is not loaded by "
                                 "peach-tasks: a run would differ from Jupyter's; do the same in Python")
            raise UsageError(f"%{name} {line.strip()}: line magic %{name} is not supported by peach-tasks: a run "
                             "would differ from Jupyter's; do the same in Python")
        return handler(self.var_expand(line))

    def run_cell_magic(self, name: str, line: str, cell: str) -> Any:
        """A cell magic called from code: the ones whose body is data (files, scripts, displays)."""
        magic = {"writefile": "writefile", "file": "writefile", "bash": "script", "sh": "script"}.get(name)
        if magic == "writefile":
            return self._writefile(self.var_expand(line), cell)
        if magic == "script":
            return self._script(name, line, cell)
        if name in _DISPLAY:
            return self._display_body(_DISPLAY[name], cell)
        raise UsageError(f"cell magic %%{name} through run_cell_magic is not supported by peach-tasks")

    def magic(self, line: str) -> Any:
        """IPython's old ``magic('name args')``."""
        name, _, rest = line.lstrip("%").partition(" ")
        return self.run_line_magic(name, rest)

    def system(self, cmd: str) -> None:
        """``!cmd``: run it with the user's shell, as IPython does (``$SHELL``, else sh); its
        output goes to the run's log. The exit status is ``_exit_code`` in the notebook's
        namespace; a failure does not raise, as in IPython. Unlike IPython's, the command has
        no terminal (IPython runs it in a pseudo-terminal): ``ls`` lists one name per line."""
        import subprocess

        cmd = self.var_expand(cmd)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        if sys.stdout is sys.__stdout__ and sys.stderr is sys.__stderr__:
            # The process's own stdout/stderr: the live log.
            status = subprocess.call(cmd, shell=True, executable=_user_shell())
        else:  # redirected (%%capture, contextlib.redirect_stdout): through Python's streams
            done = subprocess.run(cmd, shell=True, executable=_user_shell(), capture_output=True)
            sys.stdout.write(done.stdout.decode("utf-8", "replace"))
            sys.stderr.write(done.stderr.decode("utf-8", "replace"))
            status = done.returncode
        self.user_ns["_exit_code"] = status

    def getoutput(self, cmd: str, split: bool = True, depth: int = 0) -> Any:
        """``x = !cmd``: the command's output (stdout and stderr) as a list of lines."""
        import subprocess

        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        done = subprocess.run(self.var_expand(cmd), shell=True, executable=_user_shell(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
        text = done.stdout.decode("utf-8", "replace")
        return values.SList(text.splitlines()) if split else text

    def showtraceback(self, exc_tuple: Any = None, filename: str | None = None, tb_offset: int | None = None,
                      exception_only: bool = False, running_compiled_code: bool = False) -> None:
        """The exception being handled (or ``exc_tuple``) to the run's log, as IPython shows one
        in the cell's output: an ipywidgets ``Output`` that catches a cell's error calls this."""
        import traceback

        kind, value, tb = exc_tuple if exc_tuple is not None else sys.exc_info()
        if kind is None:
            print("No traceback available to show.", file=sys.stderr)
            return
        lines = traceback.format_exception_only(kind, value) if exception_only else \
            traceback.format_exception(kind, value, tb)
        sys.stderr.write("".join(lines))

    def showsyntaxerror(self, filename: str | None = None, running_compiled_code: bool = False) -> None:
        self.showtraceback(exception_only=True)

    def ev(self, expr: str) -> Any:
        return eval(expr, self.user_ns)

    def ex(self, cmd: str) -> None:
        exec(cmd, self.user_ns)

    def push(self, variables: dict) -> None:
        self.user_ns.update(variables)

    def var_expand(self, cmd: str, depth: int = 0, formatter: Any = None) -> str:
        """``$name`` and ``{expression}`` replaced from the notebook's namespace; the text
        unchanged when any of them cannot be (as IPython: ``!echo $HOME`` reaches the shell)."""
        try:
            return _expand(cmd, self.user_ns)
        except Exception:
            return cmd

    # -- cell magics the scheduler marked on a cell ------------------------------------------

    def run_cell_magic_of(self, cell: dict, execute: Callable[[], None]) -> None:
        magic = cell["magic"]
        name = magic["name"]
        if name == "capture":
            self._capture(magic["line"], execute)
        elif name == "writefile":
            self._writefile(self.var_expand(magic["line"]), magic["body"])
        elif name == "script":
            self._script(magic["program"], magic["line"], magic["body"])
        elif name == "display":
            self._display_body(magic["mime"], magic["body"])
        else:
            raise UsageError(f"cell magic %%{name} is not supported by peach-tasks")

    def _capture(self, line: str, execute: Callable[[], None]) -> None:
        words = line.split()
        target = next((w for w in words if not w.startswith("-")), None)
        io = values.CapturedIO(StringIO() if "--no-stdout" not in words else None,
                               StringIO() if "--no-stderr" not in words else None)
        saved = sys.stdout, sys.stderr
        if io._stdout is not None:
            sys.stdout = io._stdout
        if io._stderr is not None:
            sys.stderr = io._stderr
        if "--no-display" not in words:
            self.display_sinks.append(io.outputs)
        try:
            execute()  # an error still fails the run (Jupyter would only capture its traceback)
        finally:
            sys.stdout, sys.stderr = saved
            if "--no-display" not in words:
                self.display_sinks.pop()
            if target:
                self.user_ns[target] = io

    def _writefile(self, line: str, body: str) -> None:
        import importlib
        import shlex

        words = shlex.split(line) if line.strip() else []
        append = any(w in ("-a", "--append") for w in words)
        names = [w for w in words if w not in ("-a", "--append")]
        if len(names) != 1:
            raise UsageError(f"%%writefile {line}: give one file name")
        filename = os.path.expanduser(names[0])
        if body and not body.endswith("\n"):
            body += "\n"  # IPython runs a cell with a final newline
        if os.path.exists(filename):
            print(f"{'Appending to' if append else 'Overwriting'} {filename}")
        else:
            print(f"Writing {filename}")
        with open(filename, "a" if append else "w", encoding="utf-8") as handle:
            handle.write(body)
        importlib.invalidate_caches()  # the next cell may import the module just written

    def _script(self, program: str, line: str, body: str) -> None:
        import subprocess

        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        if body and not body.endswith("\n"):
            body += "\n"
        if sys.stdout is sys.__stdout__ and sys.stderr is sys.__stderr__:  # the live log, line by line
            status = subprocess.run([program], input=body.encode("utf-8")).returncode
        else:  # redirected (%%capture around a %run notebook, say): through Python's streams
            done = subprocess.run([program], input=body.encode("utf-8"), capture_output=True)
            sys.stdout.write(done.stdout.decode("utf-8", "replace"))
            sys.stderr.write(done.stderr.decode("utf-8", "replace"))
            status = done.returncode
        if status != 0 and "--no-raise-error" not in line.split():  # IPython's error names the body, as bytes
            raise subprocess.CalledProcessError(status, body.encode("utf-8", "replace"))

    def _config_figures(self, line: str) -> None:
        """``%config InlineBackend.figure_formats = {'png', 'svg'}``: the value is Python,
        evaluated in the notebook's namespace as IPython's %config does; the figures shown
        from then on follow it. Other settings of the inline backend change nothing here."""
        import re

        setting = re.match(_INLINE_SETTING, line)
        if setting is None or configure_figures is None:
            return None
        value = eval(setting.group(2).strip(), self.user_ns)  # noqa: S307 - the notebook's own code, as in IPython
        configure_figures(setting.group(1), value)
        return None

    def _display_body(self, mime: str, body: str) -> None:
        show = getattr(builtins, "display", None)
        if show is not None:  # display() (the run's outputs) keeps it, as Jupyter shows it
            show(values.RawOutput(mime, body))

    # -- line magics ---------------------------------------------------------------------------

    def _magic_cd(self, line: str) -> None:
        words = line.split()
        quiet = "-q" in words
        target = " ".join(w for w in words if w != "-q").strip().strip("'\"")
        if target == "-":
            if self._previous_dir is None:
                raise UsageError("%cd -: no previous directory")
            target = self._previous_dir
        elif not target:
            target = os.path.expanduser("~")
        elif target.startswith("-b"):
            raise UsageError("%cd -b (bookmarks) is not supported by peach-tasks")
        before = os.getcwd()
        try:
            os.chdir(os.path.expanduser(target))
        except OSError as exc:  # IPython prints it, then the folder it stays in, and the cell goes on
            print(exc)
            if not quiet:
                print(os.getcwd())
            return
        self._previous_dir = before
        now = os.getcwd()  # imports follow it: sys.path holds '' (bootstrap.run_request), as Jupyter's
        if not quiet:
            print(now)

    def _magic_env(self, line: str) -> Any:
        if line.strip():
            if len(line.split("=" if "=" in line else " ")) == 1:
                key = line.strip()
                if key in os.environ:
                    return os.environ[key]
                raise UsageError(f"Environment does not have key: {key}")
            return self._magic_set_env(line)
        env = dict(os.environ)
        for key in list(env):  # as IPython: likely secrets hidden when the whole environment is shown
            if any(s in key.lower() for s in ("key", "token", "secret")):
                env[key] = "<hidden>"
        return env

    def _magic_set_env(self, line: str) -> None:
        bits = line.split("=" if "=" in line else " ", 1)
        if not line.strip() or len(bits) < 2:
            raise UsageError("usage is 'set_env var=val'")
        var, value = bits[0].strip(), bits[1].strip()
        if any(c.isspace() for c in var):  # IPython's re.match(r".*\s.*", var)
            raise UsageError(f"refusing to set env var with whitespace: '{value}'")
        os.environ[var] = value
        print(f"env: {var}={value}")

    def _magic_precision(self, line: str) -> str:
        """``%precision [N | FORMAT]``, as IPython's: how a float result reads, and numpy's
        print precision (when numpy is loaded); no argument restores both."""
        text = line.strip()
        digits: int | None = 8
        fmt = "%r"
        try:
            if "%" in text:
                fmt, digits = text, None
                fmt % 3.14159
            elif text:
                digits = int(text)
                fmt = f"%.{digits}f"
        except Exception:
            raise ValueError(f"precision must be an integer or format string, not {text!r}") from None
        numpy = sys.modules.get("numpy")
        if numpy is not None and digits is not None:
            numpy.set_printoptions(precision=digits)
        self.float_format = fmt
        return fmt

    def _load_extension(self, name: str) -> None:
        names.load_extension(self, name)

    def _magic_dotenv(self, line: str) -> None:
        names.dotenv(self, line)

    def _magic_reset(self, line: str) -> None:
        names.reset(self, line)

    def _magic_pwd(self, line: str) -> str:
        return os.getcwd()

    def _magic_who_ls(self, line: str) -> list:
        return names.who_ls(self, line)

    def _magic_who(self, line: str) -> None:
        names.who(self, line)

    def _magic_whos(self, line: str) -> None:
        names.whos(self, line)

    def _magic_sx(self, line: str) -> Any:
        return self.getoutput(line)

    _magic_system = _magic_sx

    def _magic_run(self, line: str) -> None:
        import shlex

        words = shlex.split(line)
        options = []
        while words and words[0].startswith("-"):
            options.append(words.pop(0))
        if not words:
            raise UsageError("%run: no file given")
        target, args = words[0], words[1:]
        key = posixpath.normpath(target)
        if key not in self.runs and not key.endswith((".py", ".ipynb")) and not os.path.isfile(target):
            target, key = target + ".py", key + ".py"  # IPython: the name as given if a file, else with .py
        entry = self.runs.get(key)
        if entry is not None and entry["plain"] and not os.path.isfile(target):
            # Found beside the notebook before the run, but not from here now (after os.chdir,
            # or removed by the notebook): IPython says so and the cell goes on.
            print(f"ERROR:root:File `{target!r}` not found.", file=sys.stderr)
            return
        if entry is None or entry["plain"]:
            # A script is read as IPython reads it: now, from the working folder, so one the
            # notebook rewrote (open().write, !cp) or reached through os.chdir runs as it is now;
            # a file %%writefile made during this run, too. Found beside the notebook before
            # the run (validate): the name it is shown under.
            with open(target, encoding="utf-8-sig") as handle:
                entry = {"filename": entry["filename"] if entry else key, "cells": [{"code": handle.read()}],
                         "plain": True}
        if not entry["plain"]:  # a notebook: its cells run in the notebook's namespace, as IPython does
            saved_file = self.user_ns.get("__file__", _MISSING)
            self.user_ns["__file__"] = target
            try:
                self._run_cells(entry, self.user_ns)
            finally:
                _restore(self.user_ns, "__file__", saved_file)
            return
        self._run_script(entry, target, args, options)

    def _run_script(self, entry: dict, target: str, args: list[str], options: list[str]) -> None:
        """A .py file as ``python FILE ARGS`` would run it, its names then the notebook's (IPython)."""
        interactive = "-i" in options
        if interactive:
            namespace = self.user_ns
            saved_name = namespace.get("__name__", _MISSING)
            namespace["__name__"] = "__main__"
            main = None
        else:
            main = type(sys)("__main__" if "-n" not in options else os.path.splitext(os.path.basename(target))[0])
            namespace = main.__dict__
            namespace.update(__file__=os.path.abspath(target), __builtins__=builtins)  # IPython's: absolute
        module_name = main.__name__ if main is not None else "__main__"
        saved_argv, saved_main, saved_path = sys.argv, sys.modules.get(module_name), list(sys.path)
        sys.argv = [target, *args]
        sys.path.insert(0, os.path.dirname(os.path.abspath(target)))
        if main is not None:  # under its name while it runs (dataclasses, pickle look it up there), as IPython
            sys.modules[module_name] = main
        try:
            self._run_cells(entry, namespace)
        # IPython shows what the script raised (a failing status too, unless -e) and the cell goes on,
        # with the names defined so far; papermill then fails the run (cells.error_shown).
        except SystemExit as exc:
            if exc.code and "-e" not in options:
                self.cells.error_shown(f"%run {target}", exc)
        except Exception as exc:
            self.cells.error_shown(f"%run {target}", exc)
        finally:
            sys.argv, sys.path[:] = saved_argv, saved_path
            if saved_main is not None:
                sys.modules[module_name] = saved_main
            elif main is not None:
                sys.modules.pop(module_name, None)
        if interactive:
            _restore(namespace, "__name__", saved_name)
            return
        namespace.pop("__name__", None)
        saved_file = self.user_ns.get("__file__", _MISSING)
        self.user_ns.update(namespace)
        _restore(self.user_ns, "__file__", saved_file)
        self.user_ns["__builtins__"] = builtins

    def _run_cells(self, entry: dict, namespace: dict) -> None:
        flags = [0]  # the file's own: its future imports hold for it alone (IPython's shell_futures=False)
        for cell in entry["cells"]:
            plain = entry["plain"]
            name = entry["filename"] if plain else f"{entry['filename']} cell {cell['cell']}"
            self.cells.run(dict(cell, plain=plain), namespace=namespace, filename=name, flags=flags)


_MISSING = object()
_DISPLAY = {"html": "text/html", "markdown": "text/markdown", "latex": "text/latex",
            "javascript": "application/javascript", "js": "application/javascript", "svg": "image/svg+xml",
            "HTML": "text/html", "SVG": "image/svg+xml"}  # IPython's own aliases


def _user_shell() -> str | None:
    """The shell ``!cmd`` runs in: ``$SHELL`` when it names a program, as IPython's
    (bash on most hosts: ``[[``, ``echo -e``, bash's ``time``); None is /bin/sh."""
    shell = os.environ.get("SHELL")
    return shell if shell and os.path.isabs(shell) and os.access(shell, os.X_OK) else None


def _restore(namespace: dict, key: str, value: object) -> None:
    if value is _MISSING:
        namespace.pop(key, None)
    else:
        namespace[key] = value


def _alias(command: str, line: str) -> str:
    """An IPython alias: ``%l`` is replaced by the line, else the line is appended."""
    return command.replace("%l", line) if "%l" in command else f"{command} {line}".rstrip()


def _expand(text: str, namespace: dict) -> str:
    """IPython's ``var_expand``: ``$name``/``$a.b`` and ``{expression}`` from ``namespace``,
    ``$$`` for a dollar. Raises when a name or expression cannot be evaluated."""
    if "$" not in text and "{" not in text and "}" not in text:
        return text  # nothing to expand (most magics' lines): re and string stay unloaded
    import re
    import string

    result: list[str] = []
    formatter = string.Formatter()
    for literal, field, spec, conversion in formatter.parse(text):
        position = 0
        pending = ""
        for match in re.finditer(_DOLLAR, literal):
            before, name = match.group(1), match.group(2)
            if name.startswith("$"):
                pending += before + name
            else:
                result.append(pending + before)
                result.append(str(eval(name, dict(namespace))))
                pending = ""
            position = match.end()
        result.append(pending + literal[position:])
        if field is not None:
            expression = f"{field}:{spec}" if spec else field  # a slice's ':' was read as a format spec
            value = eval(expression, dict(namespace))
            value = formatter.convert_field(value, conversion) if conversion else value
            result.append(format(value, ""))
    return "".join(result)
