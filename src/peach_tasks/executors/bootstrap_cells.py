"""What only some task runs need of ``bootstrap._Cells``, loaded by bootstrap.py on first use
(standard library only): bootstrap.py itself is compiled at every task's start, this file
only when a notebook awaits at top level, uses magics, shows a cell's result or fails.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing is not imported at run time
if TYPE_CHECKING:
    from types import CodeType
    from typing import Any


def statements(source: str, name: str, state: list, allow_await: int, future_flags: int) -> list[CodeType]:
    """The cell compiled statement by statement, as IPython compiles a cell: a ``from
    __future__`` import after other statements is then valid and holds for what follows
    (each statement is compiled with the flags of the imports before it)."""
    import _ast  # the compiler's own node types: the ast module would import more

    tree = compile(source, name, "exec", _ast.PyCF_ONLY_AST | state[0] | allow_await, True)
    return _each(tree.body, name, state, allow_await, future_flags)


def _each(nodes: list, name: str, state: list, allow_await: int, future_flags: int) -> list[CodeType]:
    import _ast

    codes = []
    for node in nodes:
        code = compile(_ast.Module([node], []), name, "exec", state[0] | allow_await, True)
        state[0] |= code.co_flags & future_flags
        codes.append(code)
    return codes


def shown(source: str, name: str, state: list, allow_await: int, future_flags: int) -> list[CodeType]:
    """The cell compiled as IPython runs a cell whose result it shows: its statements but
    the last as usual, the last (an expression) in "single" mode, which hands its value to
    ``sys.displayhook``. Compiled from the cell's own syntax tree, so a traceback shows its
    lines as written, with Python's carets under the right columns.
    ``notebook.shows_last_expression`` chose the cell; one that does not end with an
    expression any more (cannot happen) is compiled as usual."""
    import _ast

    tree = compile(source, name, "exec", _ast.PyCF_ONLY_AST | state[0] | allow_await, True)
    last = tree.body.pop() if tree.body else None
    codes: list[CodeType] = []
    if tree.body:
        try:
            codes.append(compile(tree, name, "exec", state[0] | allow_await, True))
            state[0] |= codes[0].co_flags & future_flags
        except SyntaxError:  # a future import after other statements (else the same error again)
            codes = _each(tree.body, name, state, allow_await, future_flags)
    if isinstance(last, _ast.Expr):
        codes.append(compile(_ast.Interactive([last]), name, "single", state[0] | allow_await, True))
    elif last is not None:
        codes.extend(_each([last], name, state, allow_await, future_flags))
    return codes


def interactive(source: str, name: str, state: list, allow_await: int, future_flags: int,
                mode: str) -> list[CodeType]:
    """The cell compiled for IPython's ``ast_node_interactivity`` ``mode``: which statements
    run in "single" mode, which hands an expression's value to ``sys.displayhook`` (inside a
    loop too): ``all`` every one, ``last`` the last, ``last_expr_or_assign`` the last
    expression or the value a last assignment gave its name, ``none`` none. A cell ending
    with ``;`` shows nothing, as IPython's display hook then stays quiet."""
    import _ast

    tree = compile(source, name, "exec", _ast.PyCF_ONLY_AST | state[0] | allow_await, True)
    nodes = list(tree.body)
    if mode == "last_expr_or_assign" and nodes:
        last = nodes[-1]
        target = getattr(last, "target", None) or (last.targets[0] if isinstance(last, _ast.Assign)
                                                   and len(last.targets) == 1 else None)
        if isinstance(last, (_ast.Assign, _ast.AugAssign, _ast.AnnAssign)) and isinstance(target, _ast.Name) \
                and getattr(last, "value", None) is not None:
            shown_name = _ast.Expr(_ast.Name(target.id, _ast.Load()))
            for node in (shown_name, shown_name.value):
                node.lineno, node.col_offset = last.lineno, last.col_offset
                node.end_lineno, node.end_col_offset = last.end_lineno, last.end_col_offset
            nodes.append(shown_name)
    if _quiet(source) or mode not in ("all", "last", "last_expr_or_assign"):
        single: list = []
    elif mode == "all":
        single = nodes
    elif mode == "last":
        single = nodes[-1:]
    else:
        single = nodes[-1:] if nodes and isinstance(nodes[-1], _ast.Expr) else []
    chosen = {id(node) for node in single}
    codes: list[CodeType] = []
    for node in nodes:
        if id(node) in chosen:
            code = compile(_ast.Interactive([node]), name, "single", state[0] | allow_await, True)
            state[0] |= code.co_flags & future_flags
            codes.append(code)
        else:
            codes.extend(_each([node], name, state, allow_await, future_flags))
    return codes


def _quiet(source: str) -> bool:
    """The cell's last token is ``;`` (a comment after it aside), which quiets IPython's
    display hook for the whole cell."""
    import io
    import tokenize

    last = None
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type not in (tokenize.NEWLINE, tokenize.NL, tokenize.COMMENT, tokenize.ENDMARKER,
                                  tokenize.INDENT, tokenize.DEDENT):
                last = token
    except (tokenize.TokenError, SyntaxError):
        return False
    return last is not None and last.string == ";"


def clocks() -> tuple[float, float, float]:
    """Wall, user CPU and system CPU seconds now (``%%time``'s start and end)."""
    import resource
    import time

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), usage.ru_utime, usage.ru_stime


def print_times(started: tuple[float, float, float]) -> None:
    """What IPython's ``%%time`` prints after the cell it ran (this process's CPU, as its)."""
    wall, user, system = (end - start for end, start in zip(clocks(), started))
    print(f"CPU times: user {_timespan(user)}, sys: {_timespan(system)}, total: {_timespan(user + system)}")
    print(f"Wall time: {_timespan(wall)}")


def print_error(exc: BaseException, files: set) -> None:
    """The traceback of an error IPython shows and goes on after (``%time``'s, ``%%time``'s),
    from the notebook's first frame (``files``: the cells' names), on stderr: the run's log."""
    import traceback

    trace = exc.__traceback__
    while trace is not None and trace.tb_frame.f_code.co_filename not in files:
        trace = trace.tb_next
    sys.stdout.flush()
    traceback.print_exception(type(exc), exc, trace or exc.__traceback__)


def _timespan(seconds: float) -> str:
    """A duration as IPython writes one: three significant digits in s, ms, µs or ns, and
    from a minute on in days, hours, minutes and seconds (``1min 5s``)."""
    if seconds >= 60.0:
        parts = []
        left = seconds
        for suffix, length in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
            count = int(left // length)
            if count:
                parts.append(f"{count}{suffix}")
                left -= count * length
            if left < 1:
                break
        return " ".join(parts)
    scale = 0
    while scale < 3 and 0 < seconds * 1000 ** scale < 1:
        scale += 1
    if seconds <= 0:
        scale = 3
    value = seconds * 1000 ** scale
    return f"{value:.3g} {('s', 'ms', 'µs', 'ns')[scale]}"


def past_its_error(cells: Any, execute: Any) -> Any:
    """``execute`` (one cell tagged ``raises-exception``) whose exception, as nbclient does,
    is shown and not raised: the run goes on with the next cell. As under papermill, whose
    check of the executed notebook takes no notice of the tag, the run then fails at its end
    (``cells.error_shown``). KeyboardInterrupt and SystemExit still end the run."""

    def run() -> None:
        try:
            execute()
        except Exception as exc:
            cells.error_shown("a cell tagged raises-exception", exc, where(cells, exc))
    return run


async def _await(awaitable: Any) -> Any:
    return await awaitable  # run_until_complete takes coroutines and futures; this takes any awaitable


def wait(cells: Any, awaitable: object) -> object:
    """Run ``awaitable`` to its end in the run's event loop (made on first use, kept for
    the run: what a cell starts, a later cell may await, as in a kernel)."""
    import asyncio

    if cells.loop is None:
        cells.loop = _current_loop(asyncio)
    return cells.loop.run_until_complete(_await(awaitable))


def _current_loop(asyncio: Any) -> Any:
    """The thread's event loop if the notebook already made one (``asyncio.ensure_future``
    in a cell without ``await`` schedules its task on it, to run when a later cell awaits,
    as the kernel's one loop would), else a new one, made the thread's."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "there is no current event loop"
        try:
            loop = asyncio.get_event_loop_policy().get_event_loop()
        except RuntimeError:  # not the main thread: no loop is made implicitly
            loop = None
    if loop is None or loop.is_closed() or loop.is_running():
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop


def close(cells: Any) -> None:
    """End the run's event loop as ``asyncio.run`` ends its own: tasks still pending are
    cancelled, async generators closed."""
    import asyncio

    loop, cells.loop = cells.loop, None
    try:
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def where(cells: Any, exc: BaseException) -> str | None:
    """"NOTEBOOK cell N line L": the innermost frame of the notebook's own code in the
    traceback (or the cell whose magic failed)."""
    found = None
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if name in cells.files and name != cells.filename:
            found = f"{name} line {tb.tb_lineno}"
        tb = tb.tb_next
    if found is None and isinstance(exc, SyntaxError) and exc.filename in cells.files \
            and exc.filename != cells.filename:
        found = f"{exc.filename} line {exc.lineno}"
    return found or cells.failed_in


def show_result(value: object, cells: Any = None) -> None:
    """A cell's result (not None), as Jupyter shows it (``Out[n]``): kept as an output by
    ``display()``, then remembered as IPython's display hook remembers it, in this order (so
    ``Out`` shown does not hold itself): ``_N`` and ``Out[N]``, N the cell's execution count,
    and ``_`` (``__`` and ``___`` the two before) unless the result is ``Out`` itself, the
    notebook assigned one of these names itself (``for _ in ...``), or ``_`` is a builtin
    (gettext's)."""
    import builtins

    show = getattr(builtins, "display", None)  # its text as IPython writes it, %precision included
    if show is None:
        sys.__displayhook__(value)
    elif getattr(show, "peach_display", False):  # an error showing it fails the cell (papermill stops there)
        show(value, _peach_result=True)
    else:  # a display the notebook put in builtins itself
        show(value)
    namespace = getattr(cells, "namespace", None)
    if not (isinstance(namespace, dict) and cells.count):  # code run as one piece (no cells): as before
        builtins._ = value  # type: ignore[attr-defined]
        return
    if value is not cells.out:
        ours = cells.unders  # what _, __ and ___ were last set to here
        untouched = all(namespace[name] is mine for name, mine in zip(("_", "__", "___"), ours) if name in namespace)
        cells.unders = (value, ours[0], ours[1])
        if untouched and "_" not in vars(builtins):
            namespace["_"], namespace["__"], namespace["___"] = cells.unders
    namespace[f"_{cells.count}"] = cells.out[cells.count] = value


def start_shell(cells: Any, runs: dict, module: Any) -> None:
    """Start the small IPython stand-in (``module``: ``notebook_shell.py``, loaded by
    bootstrap.py) and make ``get_ipython`` a builtin, as it is in IPython."""
    import builtins

    cells.shell = module.Shell(cells, runs)
    builtins.get_ipython = lambda: cells.shell  # type: ignore[attr-defined]
