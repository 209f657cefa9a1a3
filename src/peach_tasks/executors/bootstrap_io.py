"""The task process's exchange with the scheduler, loaded by ``bootstrap.py`` at every start
(standard library only): the request read as JSON, the result file written, and a failed
task's error described within the bounds the store keeps. And the run's edges as a Jupyter
kernel has them: ``input()`` and ``getpass`` that nobody answers, ``exit()`` that does not
end a notebook, pandas' kernel defaults, and the threads a task left running ended after a
grace.

JSON goes through CPython's own scanner and encoder, the ones ``json`` uses: importing
``json`` imports ``re``, about a third of a small task's start. The result file's folder is
opened before the task runs and the file is written through that handle, so a task that
changes or deletes its working directory still gets its result or its error recorded.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing is not imported at run time
if TYPE_CHECKING:
    from collections.abc import Callable


class _ScanContext:
    """What CPython's JSON scanner reads of a decoder (``json.JSONDecoder``'s defaults)."""

    strict = True
    object_hook = object_pairs_hook = None
    parse_float, parse_int = float, int

    @staticmethod
    def parse_constant(name: str) -> object:
        raise ValueError(f"{name} is not JSON")  # the scheduler never writes NaN or Infinity


def loads(data: bytes) -> object:
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


def dumps(value: object, default: object = None) -> str:
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


def result(value: object, max_bytes: int) -> dict:
    """The result file's content for the entry's return value (None and a note when it is
    not JSON or larger than ``max_bytes``)."""
    try:
        text = dumps(value)  # NaN is not JSON for the store
    except (TypeError, ValueError, RecursionError):
        return {"ok": True, "result": None, "result_note": f"not JSON-serialisable: {type(value).__name__}"}
    size = len(text.encode("utf-8"))
    if max_bytes and size > max_bytes:
        return {"ok": True, "result": None, "result_note": f"too large: {size} bytes"}
    return {"ok": True, "result": value}


# What a result file holds of an error at most: the scheduler keeps no more (peach_tasks/bounds.py),
# and a file of a 100 MB message would be refused whole, error and all.
MAX_ERROR_CHARS = 4 * 1024


MAX_TRACEBACK_CHARS = 64 * 1024


def describe(exc: BaseException, where: str | None, own_files: frozenset) -> dict:
    """The result file's ``error``: the exception's type, value, traceback (without the
    frames of ``own_files`` it starts with) and last line, each cut to what the store keeps;
    ``where`` (a cell and line) prefixes the last line."""
    import traceback

    # Drop bootstrap.py's own frames: the reader should start at the task's code.
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename in own_files:
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
    if len(last_line) > MAX_ERROR_CHARS or len(text) > MAX_TRACEBACK_CHARS:
        say(f"peach-tasks: the run keeps this error cut to {MAX_ERROR_CHARS} characters (it has {len(last_line)}) "
             f"and its traceback to {MAX_TRACEBACK_CHARS} (it has {len(text)})")
    return {
        "type": _cut(type(exc).__name__, 200),
        "value": _cut(_safe_str(exc), MAX_ERROR_CHARS),
        "traceback": _cut(text, MAX_TRACEBACK_CHARS, keep_end=True),
        "last_line": _cut(last_line, MAX_ERROR_CHARS),
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


def say(line: str) -> None:
    """A line into the run's log."""
    try:
        print(line, file=sys.stderr)  # into the log; the task may have closed or replaced stderr
    except Exception:
        pass


def exited(exc: SystemExit, where: str | None, result_dir: "ResultDir", own_files: frozenset) -> int:
    """The task's ``SystemExit`` (``sys.exit()``, ``exit()``): the process's exit status, as
    Python's own. Status 0 ends the run as a success without a value, and the log says where
    (the cells after it do not run); another status fails the run at that cell and line."""
    status = exit_code(exc)
    if status == 0:
        say(f"peach-tasks: the task ended the run{' at ' + where if where else ''} (SystemExit, status 0): "
            "a success; what came after it did not run")
        result_dir.write({"ok": True, "result": None})
    else:
        result_dir.write({"ok": False, "error": describe(exc, where, own_files)})
    return status


class StdinNotImplementedError(EOFError, NotImplementedError):
    """What Jupyter under papermill raises for ``input()`` (IPython's, a NotImplementedError),
    and an EOFError as for a closed stdin: a notebook's ``except`` of either catches it."""

    __module__ = "builtins"  # named bare in the run's error, as Jupyter's traceback names it


def no_input(prompt: object = "", called: str = "input()") -> str:
    """``input()`` (or ``getpass``) in a run: nobody is there to answer, and the error says so.
    The prompt is not printed, as a kernel without input prints none (the traceback shows the
    call)."""
    raise StdinNotImplementedError(
        f"{called} was called, but a scheduled run has no one to answer it: put the value in the "
        "notebook, in the task's task_env, or in the payload of a triggered run")


def exit_code(exc: SystemExit) -> int:
    """The process's exit status for the task's ``SystemExit``, as Python's own."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # as Python does for sys.exit("message")
    return 1


class ResultDir:
    """The result file's folder, held open from before the task runs until the result is
    written: the path is resolved once, while the working directory still exists, and the
    file is written relative to the open folder, whatever the task did to its cwd."""

    def __init__(self, path: str) -> None:
        folder, self.name = os.path.split(os.path.abspath(path))
        self.fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def __enter__(self) -> ResultDir:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)

    def write(self, data: dict) -> None:
        # Write then rename: the scheduler never reads half a file if the task is killed.
        tmp = f"{self.name}.tmp"
        text = dumps(data, default=repr)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644, dir_fd=self.fd)
        with open(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, self.name, src_dir_fd=self.fd, dst_dir_fd=self.fd)


def after_getpass(module: object) -> None:
    """``getpass.getpass()`` fails at once as ``input()`` does, as a Jupyter kernel's does (it
    read a closed stdin, warning that the password might be echoed, then an EOFError). Only
    the standard library's: a ``getpass.py`` of the task's own is left as it is."""
    if os.path.dirname(str(getattr(module, "__file__", ""))) != os.path.dirname(os.__file__):
        return

    def getpass(prompt: str = "Password: ", stream: object = None) -> str:
        return no_input(prompt, "getpass()")

    module.getpass = getpass  # type: ignore[attr-defined]


def after_pandas(module: object) -> None:
    """pandas as in a Jupyter kernel: it sets ``display.max_columns`` to 0 (fit the terminal)
    when it finds no IPython kernel, which is a run without magics, and to 20 in a kernel; a
    wide DataFrame then printed and showed all its columns where Jupyter shows 20 and ``...``."""
    try:
        if module.get_option("display.max_columns") == 0:  # type: ignore[attr-defined]
            module.set_option("display.max_columns", 20)  # type: ignore[attr-defined]
            # Its default too, which reset_option("display.max_columns") (or "all") goes back to.
            registered = sys.modules["pandas._config.config"]._registered_options  # type: ignore[attr-defined]
            option = registered["display.max_columns"]
            registered["display.max_columns"] = option._replace(defval=20)
    except Exception:  # noqa: BLE001, S110 - another pandas than expected: its own default stands
        pass


def after_plotly_renderers(module: object) -> None:
    """plotly's renderer as in a Jupyter kernel, ``plotly_mimetype``: a run has no kernel for
    plotly to find, so it chose none (a notebook without magics: ``fig.show()`` showed nothing
    and ``fig`` printed its whole dict to the log) or the notebook renderer of a shell it did
    not know. Then each run shows a Plotly figure alike (the dashboard does not keep it, and
    the log says so). Left alone: ``PLOTLY_RENDERER`` set, or an environment without IPython
    or nbformat, in which plotly cannot show a mime bundle."""
    renderers = getattr(module, "renderers", None)
    if os.environ.get("PLOTLY_RENDERER") or renderers is None:
        return
    try:
        if getattr(module, "ipython_display", None) and getattr(module, "nbformat", None) \
                and renderers.default in ("", "browser", "plotly_mimetype+notebook"):
            renderers.default = "plotly_mimetype"
    except Exception:  # noqa: BLE001, S110 - another plotly than expected: its own choice stands
        pass


class NotExit:
    """``exit`` and ``quit`` in a notebook: IPython's, which in a kernel only ask the page to
    close the notebook; nbclient (papermill) ignores that and runs the cells after it, and so
    does a run. ``sys.exit()`` ends a run (with its status)."""

    def __repr__(self) -> str:
        return "<exit: sys.exit() ends a run; exit() and quit() do not, as in a Jupyter kernel>"

    def __call__(self, *args: object, **kwargs: object) -> None:
        say("peach-tasks: exit() or quit() does not end a notebook (in Jupyter the kernel goes on with "
            "the next cells, and so does this run); use sys.exit() to end the run here")


NOT_EXIT = NotExit()


# How long Python's own exit may wait for threads the task left running, as nbclient
# (papermill) gives a kernel to shut down after the last cell before it is killed.
THREADS_GRACE = 5.0


def watch_exit(status: int, flush: Callable[[], None]) -> None:
    """Let Python's own exit run as ever (the functions registered for it, an executor's
    workers told to end, every thread joined, then atexit's), but no longer than
    ``THREADS_GRACE`` seconds: a thread the task left running (not a daemon) would hold the
    process until the run's timeout. Then a watchdog ends the process with its status, naming
    those threads: a Jupyter kernel is ended after the last cell, and its threads with it."""
    threading = sys.modules.get("threading")
    if threading is None:  # no thread was started through it: the exit waits for none
        return
    import time

    def watchdog() -> None:
        time.sleep(THREADS_GRACE)
        main = threading.main_thread()
        left = [t.name for t in threading.enumerate() if t is not main and not t.daemon and t.is_alive()]
        names = ", ".join(left[:5]) + (f" and {len(left) - 5} more" if len(left) > 5 else "")
        if left:  # the exit is still joining them: atexit's functions (logging's flush) have not run
            say(f"peach-tasks: {len(left)} thread{'s' if len(left) > 1 else ''} the task started ({names}) still "
                f"ran {THREADS_GRACE:g} s after its end: ended with the run, as a Jupyter kernel is ended after "
                "the last cell")
            import atexit

            ending = threading.Thread(target=atexit._run_exitfuncs, daemon=True)
            ending.start()
            ending.join(1.0)
        else:  # in atexit's functions (not run twice) or after them
            say(f"peach-tasks: the task's process was still ending {THREADS_GRACE:g} s after its end (functions "
                "it registered to run at exit): ended with the run")
        flush()
        os._exit(status)

    threading.Thread(target=watchdog, name="peach-exit-watchdog", daemon=True).start()
