"""What a sandboxed or replicated task process does before its task, loaded by
``bootstrap.py`` only when its command line or request asks for it (standard library only).

A sandbox started ahead may also import the next task's modules while it waits
(``--preload A,B``, chosen by ``preload.py``): only those of its standard library and
site-packages; one that fails is forgotten, and the run imports it itself. What they print
is kept aside and replayed into the run's log once the run took its request.

A sandbox started ahead (``warm.py``) runs bootstrap.py with ``--ack FD``: it takes the
request, writes one byte on FD and closes it before anything of the task runs, then takes
the request's ``env`` (the whole environment) and enters its ``cwd``. In a sandbox the
checkout's private copy is made while the interpreter starts (``--copy PID DONE``, see
``sandbox.TASK_STEP_BESIDE``): nothing of the task runs before that copy ended whole. With
replicas, a task dies with the scheduler that started it (``die_with_parent``).
"""

from __future__ import annotations

import os
import sys


def accept(fd: str, request: dict) -> int:
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


def wait_for_copy(args: list[str], cwd: str | None) -> int:
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


def die_with(parent_pid: int) -> None:
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


# What imports ahead may print before the run's request is kept in a file of the sandbox's
# private /tmp (charged to its memory limit) and replayed into the run's log up to this much:
# nobody reads the sandbox's output before the run takes it, so writing to it then could fill
# the pipe and block the sandbox for good.
MAX_REPLAY = 1 << 20


def preload(names: list[str]) -> int | None:
    """Import ``names`` before the request comes, each one found in the standard library or
    the environment's site-packages. A failed import is forgotten: the run tries again.

    What the imports print (Python's streams and file descriptors 1 and 2 alike) goes to a
    file; the returned descriptor is for ``replay`` once the run took the request. None:
    no such file could be made, and nothing was imported."""
    import importlib
    from importlib.machinery import PathFinder

    try:
        path = f"/tmp/.peach-preload-{os.getpid()}"
        printed = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        os.unlink(path)
    except OSError:
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    os.dup2(printed, 1)
    os.dup2(printed, 2)
    try:
        roots = _library_roots()
        for name in names:
            top = name.partition(".")[0]
            if not all(part.isidentifier() for part in name.split(".")):
                continue
            if top not in sys.modules:
                spec = PathFinder.find_spec(top)
                where = None
                if spec is not None:
                    where = spec.origin if spec.origin not in (None, "namespace") else \
                        next(iter(spec.submodule_search_locations or ()), None)
                if not where or not os.path.realpath(where).startswith(roots):
                    continue  # not the environment's (bootstrap's own folder, a path of the task's)
            try:
                importlib.import_module(name)
            except BaseException:  # noqa: BLE001, S112 - SystemExit too: the run imports it and sees why
                continue
        if "matplotlib.pyplot" in sys.modules:
            global figure_drawn_ahead
            figure_drawn_ahead = _draw_one_figure()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
    # What the imports left goes out of the cyclic collector's sight (as in a process forked
    # after its imports): the run's collections, and the interpreter's at its exit (about 50 ms
    # with matplotlib loaded), walk only what the run made. Their garbage first; the run's own
    # objects are collected and finalized as usual.
    import gc

    gc.collect()
    gc.freeze()
    return printed


figure_drawn_ahead = False  # by preload, for the tests: a failed draw is otherwise silent


def _draw_one_figure() -> bool:
    """Draw a throwaway figure to PNG as a run shows one, outside pyplot (its figure numbers,
    its current figure and the run's outputs are untouched): a run's first figure then finds
    the font files open, the glyphs cached and the drawing code warm. Measured on a 2-core
    machine, that first figure (a plot, a title, the PNG) took 70 ms with the imports alone
    ahead and 61 ms after this (bench/README.md). Nothing of it may reach the run's log:
    matplotlib's warnings and log records are held back, and any failure is forgotten
    (False)."""
    import io
    import logging
    import warnings

    held = logging.root.manager.disable  # every logger's records, a child's own level notwithstanding
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure

            figure = Figure()
            axes = figure.add_subplot()
            axes.plot([1, 2, 3], [3, 1, 2])
            axes.set_title("peach")
            FigureCanvasAgg(figure).print_figure(io.BytesIO(), format="png", bbox_inches="tight")
        return True
    except Exception:  # noqa: BLE001 - an optimisation only: the run draws as it would anyway
        return False
    finally:
        logging.disable(held)


def replay(printed: int) -> None:
    """Write what the imports ahead printed to the run's output (at most ``MAX_REPLAY`` bytes)."""
    try:
        size = os.lseek(printed, 0, os.SEEK_END)
        os.lseek(printed, 0, os.SEEK_SET)
        left = min(size, MAX_REPLAY)
        while left > 0:
            chunk = os.read(printed, min(left, 65536))
            if not chunk:
                break
            left -= len(chunk)
            _write_all(chunk)
        if size > MAX_REPLAY:
            _write_all(f"\npeach-tasks: {size - MAX_REPLAY} more bytes printed by the imports ahead were cut\n"
                       .encode())
    except OSError:
        pass
    finally:
        os.close(printed)


def _write_all(data: bytes) -> None:
    while data:
        data = data[os.write(1, data):]


def _library_roots() -> tuple[str, ...]:
    """The interpreter's standard library and its environment's site-packages."""
    stdlib = os.path.dirname(os.__file__)
    roots = [stdlib]
    site = sys.modules.get("site")
    if site is not None:
        try:
            roots += site.getsitepackages()
        except AttributeError:
            pass
    return tuple(os.path.join(os.path.realpath(root), "") for root in roots)
