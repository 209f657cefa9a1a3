"""What the task process's small IPython stand-in (``notebook_shell.py``) hands to the
notebook: the lines of ``x = !cmd``, what ``%%capture NAME`` keeps, a ``%%html`` cell's
body to display, and IPython's ``shell.events`` with what their callbacks receive.
Standard library only; loaded beside ``notebook_shell.py`` by ``bootstrap.py``.
"""

from __future__ import annotations

import builtins
import os
import sys
from io import StringIO

TYPE_CHECKING = False  # typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any, Callable


class Record:
    """IPython's ``ExecutionInfo`` and ``ExecutionResult``: what the cell events receive."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)


class Events:
    """IPython's ``shell.events``: callbacks registered by name, called in order; a callback
    that fails is reported in the log and the others still run, as in IPython."""

    NAMES = ("pre_execute", "pre_run_cell", "post_execute", "post_run_cell", "shell_initialized")

    def __init__(self) -> None:
        self.callbacks: dict[str, list] = {name: [] for name in self.NAMES}

    def register(self, event: str, function: Callable[..., Any]) -> None:
        if event not in self.callbacks:
            raise KeyError(f"unknown event {event}")
        if not callable(function):
            raise TypeError(f"need a callable, got {function!r}")
        if function not in self.callbacks[event]:
            self.callbacks[event].append(function)

    def unregister(self, event: str, function: Callable[..., Any]) -> None:
        try:
            self.callbacks[event].remove(function)
        except (KeyError, ValueError):
            raise ValueError(f"function {function!r} is not registered as a {event} callback") from None

    def trigger(self, event: str, *args: Any, **kwargs: Any) -> None:
        for function in list(self.callbacks.get(event, ())):
            try:
                function(*args, **kwargs)
            except Exception:
                import traceback

                print(f"Error in callback {function} (for {event}):", file=sys.stderr)
                traceback.print_exc()


class SList(list):
    """What ``x = !cmd`` gives in IPython: the lines, with ``.s``, ``.n``, ``.l``, ``.p``,
    ``grep``, ``fields`` and ``sort``."""

    @property
    def l(self) -> list:  # noqa: E743 - IPython's name
        return list(self)

    @property
    def s(self) -> str:
        return " ".join(self)

    spstr = s

    @property
    def n(self) -> str:
        return "\n".join(self)

    nlstr = n

    @property
    def p(self) -> list:
        return [line for line in self if os.path.exists(line)]

    def grep(self, pattern: str, prune: bool = False, field: int | None = None) -> "SList":
        """The lines matching ``pattern`` (``prune``: the others), looking only at the
        whitespace-separated ``field`` if given."""
        import re

        return SList(line for line in self
                     if bool(re.search(pattern, line if field is None else _field(line, field))) != prune)

    def fields(self, *fields: int) -> list:
        """awk's fields: ``fields(1)`` each line's second whitespace-separated word,
        ``fields(1, 0)`` those two joined by a space (a line without them is left out);
        without arguments, each line split."""
        if not fields:
            return [line.split() for line in self]
        picked = SList()
        for line in self:
            words = [word for word in (_field(line, f) for f in fields) if word]
            if words:
                picked.append(" ".join(words))
        return picked

    def sort(self, field: int | None = None, nums: bool = False) -> "SList":  # type: ignore[override]
        """The lines sorted (a new SList, as IPython's), by ``field`` if given; ``nums``: by
        the first number in it."""
        import re

        def key(line: str) -> object:
            text = line if field is None else _field(line, field)
            if not nums:
                return text
            number = re.search(r"-?\d+", text)
            return int(number.group()) if number else 0

        return SList(sorted(self, key=key))


def _field(line: str, index: int) -> str:
    """The line's whitespace-separated word ``index`` (negative from the end); "" if none."""
    parts = line.split()
    return parts[index] if -len(parts) <= index < len(parts) else ""


class CapturedIO:
    """What ``%%capture NAME`` leaves in ``NAME``: the cell's stdout, stderr and displays."""

    def __init__(self, stdout: StringIO | None, stderr: StringIO | None) -> None:
        self._stdout, self._stderr = stdout, stderr
        self.outputs: list = []

    @property
    def stdout(self) -> str:
        return self._stdout.getvalue() if self._stdout is not None else ""

    @property
    def stderr(self) -> str:
        return self._stderr.getvalue() if self._stderr is not None else ""

    def __str__(self) -> str:
        return self.stdout

    def show(self) -> None:
        """Write what was captured, as if it had not been."""
        sys.stdout.write(self.stdout)
        sys.stderr.write(self.stderr)
        show = getattr(builtins, "display", None)
        for output in self.outputs:
            if show is not None:
                show(output)

    __call__ = show


class RawOutput:
    """A ``%%html``/``%%markdown``/... cell's body, for display() to keep as that type."""

    def __init__(self, mime: str, body: str) -> None:
        self.mime, self.body = mime, body

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict:
        return {self.mime: self.body, "text/plain": f"<{self.mime} output>"}

    def __repr__(self) -> str:
        return f"<{self.mime} output>"


class Timing:
    """IPython's ``%time`` around a statement: the clocks read before it, and the times printed
    after it (``clocks``, ``print_times``: bootstrap_cells', through the cells). An exception
    goes to ``shown``, not up, as IPython's ``%time`` shows it and lets the cell go on (its
    traceback printed, the run failed at its end, as papermill fails it); leaving the run
    (``SystemExit``, ``KeyboardInterrupt``) goes through."""

    def __init__(self, clocks: Callable[[], tuple], print_times: Callable[[tuple], None],
                 shown: Callable[[str, BaseException], None]) -> None:
        self.clocks, self.print_times, self.shown = clocks, print_times, shown
        self.started: tuple = ()

    def __enter__(self) -> Timing:
        self.started = self.clocks()
        return self

    def __exit__(self, kind: object, exc: BaseException | None, trace: object) -> bool:
        if exc is None:
            self.print_times(self.started)
            return False
        if not isinstance(exc, Exception):
            return False
        self.shown("the %time statement", exc)  # its traceback printed; the run fails at its end
        return True
