"""What a sandboxed or replicated task process does before its task, loaded by
``bootstrap.py`` only when its command line or request asks for it (standard library only).

A sandbox started ahead may also import the next task's modules while it waits
(``--preload A,B``, chosen by ``preload.py``): only those of its standard library and
site-packages; one that fails is forgotten, and the run imports it itself.

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


def preload(names: list[str]) -> None:
    """Import ``names`` before the request comes, each one found in the standard library or
    the environment's site-packages; what an import prints goes to the run's log, as it
    would when the run imports it. A failed import is forgotten: the run tries again."""
    import importlib
    from importlib.machinery import PathFinder

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
