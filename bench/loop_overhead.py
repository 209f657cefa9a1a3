#!/usr/bin/env python
"""Per-task overhead of an organisation's loop, sandboxed and not, as ratios against baselines of the same run.

    python bench/loop_overhead.py [--tasks 200] [--rounds 10] [--json]

Builds, in a temporary folder, a real git repository with one organisation (``bench``)
and N trivial python tasks (each its own notebook whose one code cell is
``def task_K(): return K``), syncs it once with the real scheduler (this builds the
organisation's empty uv environment and is not timed) and times one iteration of the
``bench`` loop (``Scheduler.make_loop("bench").tick()``) in each isolation mode:
``isolation: sandbox`` (every run in its bubblewrap sandbox and cgroup, the default) and
``isolation: none`` (plain processes). A task does no work, so the time per task is the
scheduler's overhead. Both modes use the same repository, environment and store; the
mode is the scheduler's ``sandbox`` (what ``start_isolation`` found, or None).

The baselines are measured in the same invocation, because absolute numbers mean little
on a noisy machine:

  (a) interpreter start:  ``env_python -I -c pass``
  (b) floor:              ``env_python -I floor.py NOTEBOOK METHOD``, a minimal notebook
                          runner (read the JSON, find the cell, exec it, call the method);
                          never sandboxed: the floor is what a bare runner costs
  (c) papermill:          ``papermill.execute_notebook`` of the same notebook, when the
                          optional extra is installed (``pip install -e '.[bench]'``)

and, as diagnostics only, the task process alone: ``env_python -I bootstrap.py`` fed the
request the python executor would send, which splits the scheduler's time into the task
process's and the rest; and the same in its sandbox (the launcher + bubblewrap command line
the executor would run, its cgroup made before and removed after, neither timed), which
splits the sandbox's cost into its processes' and the scheduler's work around them.

To give every measurement the same noise (the machine is shared), the iteration of each
mode is cut into ``--rounds`` rounds of N/rounds tasks (one ``tick()`` over them, the
loop's ``keep``); each round runs its share of the baselines, then both modes, in an order
that alternates from round to round. Per-task figures are medians over the runs but the
first of each tick (it also holds the tick's set-up). ``--rounds 1`` is one iteration per mode.

``env_python`` is the organisation's environment's interpreter, the one tasks run in.
A second, instrumented pass (``--no-breakdown`` skips it), in rounds too, wraps the loop's
steps with timers to split the per-task time of each mode into its parts. Targets:
scheduler/floor <= 1.5 in both modes, papermill/scheduler >= 30. Nothing here is asserted:
it is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Callable

from common import (
    REPO,
    Events,
    commit_repository,
    definitions,
    environment,
    load_average,
    median,
    ms,
    notebook,
    opened_scheduler,
    papermill_runs,
    say,
    workspace,
    write_settings,
)
from common import mode_loop as common_mode_loop

ORG = "bench"
FLOOR_TARGET = 1.5  # scheduler / floor must stay at or below this
PAPERMILL_TARGET = 30.0  # papermill / scheduler must stay at or above this

FLOOR_SCRIPT = textwrap.dedent('''\
    """Minimal notebook runner: the least any scheduler must do to run one cell's method."""
    import json
    import sys

    path, method = sys.argv[1], sys.argv[2]
    with open(path, encoding="utf-8") as handle:
        cells = json.load(handle)["cells"]
    for cell in cells:
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source
        if cell.get("cell_type") == "code" and f"def {method}(" in source:
            namespace = {"__name__": "__main__"}
            exec(compile(source, path, "exec"), namespace)
            namespace[method]()
            break
    else:
        sys.exit(f"{method} is not defined in {path}")
''')


# -- the repository ---------------------------------------------------------------
def build_repository(root: Path, count: int) -> list[tuple[str, Path, str]]:
    """The git repository of ``count`` tasks and scheduler.yaml; returns (task, notebook path, method) each."""
    width = max(3, len(str(count - 1)))
    tasks, files, tasks_yaml = [], {}, {}
    for i in range(count):
        name = f"t{i:0{width}d}"
        method = f"task_{i}"
        files[f"notebooks/{name}.ipynb"] = notebook([f"def {method}():\n    return {i}\n"])
        tasks_yaml[name] = {"executor": "python", "notebook": f"notebooks/{name}.ipynb", "method": method}
        tasks.append((name, root / REPO / "notebooks" / f"{name}.ipynb", method))
    files["peach.yaml"] = definitions(ORG, tasks_yaml)
    commit_repository(root, files)
    write_settings(root)
    return tasks


# -- baselines ----------------------------------------------------------------------
def time_command(argv: list[str], cwd: Path, stdin: bytes | None = None) -> float:
    started = time.perf_counter()
    if stdin is None:
        subprocess.run(argv, cwd=cwd, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    else:
        subprocess.run(argv, cwd=cwd, check=True, input=stdin, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def sample(commands: list[list[str]], cwd: Path) -> list[float]:
    return [time_command(argv, cwd) for argv in commands]


def bootstrap_requests(tasks: list[tuple[str, Path, str]], runs: int, work: Path) -> list[bytes]:
    """What the python executor writes to bootstrap.py's stdin, for ``runs`` runs."""
    from peach_tasks.executors.python import DEFAULT_MAX_RESULT_BYTES
    from peach_tasks.sources.notebook import extract_code

    requests = []
    for i in range(runs):
        name, notebook, method = tasks[i % len(tasks)]
        extracted = extract_code(notebook, method, False, display_name=f"notebooks/{notebook.name}")
        requests.append(json.dumps({
            "code": extracted.source, "program": extracted.request(), "method": method, "filename": f"notebooks/{notebook.name}", "cwd": str(notebook.parent),
            "result_path": str(work / f"result-{i}.json"), "payload": None, "has_payload": False,
            "max_result_bytes": DEFAULT_MAX_RESULT_BYTES,
        }).encode())
    return requests


class SandboxedBootstrap:
    """Diagnostic: bootstrap.py in the sandbox a run of the loop would get, started alone.

    The loop's own ``_sandboxed`` and ``Job.sandbox_plan`` make the run's folders and plan
    (run ids from 10**9 up, never the store's); the cgroup is made before and removed after
    each start, untimed: what is timed is the launcher + bubblewrap process chain to its end.
    """

    def __init__(self, loop: Any, sandbox: Any, task: Any, env: Any, notebook: Path, method: str) -> None:
        from peach_tasks.sources.notebook import extract_code

        self.loop, self.sandbox, self.task, self.env = loop, sandbox, task, env
        self.notebook, self.method = notebook, method
        extracted = extract_code(notebook, method, False, display_name=task.spec.notebook)
        self.code, self.program = extracted.source, extracted.request()
        self.count = 0

    def __call__(self) -> float:
        import shutil

        from peach_tasks.executors.base import Job
        from peach_tasks.executors.bytecode import task_argv
        from peach_tasks.executors.python import DEFAULT_MAX_RESULT_BYTES

        self.count += 1
        run_id = 10**9 + os.getpid() * 1000 + self.count
        fields = self.loop._sandboxed(self.task, run_id, self.env.path,
                                     bridge=self.loop._redis_bridge(self.task.spec.codops))
        job = Job(run_id=run_id, codops=ORG, task=self.task.spec.name, code=self.code, program=self.program, method=self.method,
                  filename=self.task.spec.notebook, interpreter=self.env.python, cwd=self.notebook.parent,
                  timeout=60.0, grace=1.0, marker=f"bench-sandbox-{run_id}", **fields)
        work_dir = fields["work_dir"]
        plan = job.sandbox_plan(work_dir)
        request = json.dumps({
            "code": self.code, "program": self.program, "method": self.method, "filename": self.task.spec.notebook,
            "cwd": str(self.notebook.parent), "result_path": str(work_dir / "result.json"), "payload": None,
            "has_payload": False, "max_result_bytes": DEFAULT_MAX_RESULT_BYTES,
        }).encode()
        group = self.sandbox.create_group(plan)
        try:
            argv = self.sandbox.command(plan, task_argv(self.env.python), self.notebook.parent,
                                        group, copy_beside=True)  # as the python executor starts it
            return time_command(argv, self.notebook.parent, request)
        finally:
            group.kill()
            group.remove()
            shutil.rmtree(work_dir, ignore_errors=True)
            shutil.rmtree(self.loop.trigger_root / str(run_id), ignore_errors=True)


# -- the scheduler ------------------------------------------------------------------
# isolation: sandbox (the default: the loop starts each next task's sandbox ahead, warm.py);
# the same with every sandbox started when its run starts ("cold", as before warm starts:
# the baseline of what starting ahead saves); isolation: none.
MODES = ("sandbox", "cold", "none")
SANDBOXED = ("sandbox", "cold")


def mode_loop(scheduler: Any, sandbox: Any, keys: list[tuple[str, str]], mode: str = "sandbox") -> Any:
    """The ``bench`` loop over ``keys`` only, in ``mode`` (``MODES``) with the host's ``sandbox``."""
    return common_mode_loop(scheduler, ORG, sandbox if mode in SANDBOXED else None, keys,
                            start_ahead=mode != "cold")


def timed_tick(loop: Any, events: Events) -> tuple[float, int, list[float], list[int]]:
    """One iteration; returns its wall time, the runs, each run's cycle time and the run ids.

    A cycle is end of the previous run -> end of this run as the loop sees it (start_run
    ... finish_run): everything the loop does per task. The first run's cycle starts at
    the tick and so also holds the iteration's set-up (marking every task PENDING).
    """
    events.ends.clear()
    events.run_ids.clear()
    started = time.perf_counter()
    ran = loop.tick()
    wall = time.perf_counter() - started
    marks = [started, *events.ends]
    return wall, ran, [b - a for a, b in zip(marks, marks[1:])], list(events.run_ids)


def store_timings(store: Any, run_ids: list[int]) -> dict[str, Any]:
    """From the store: per-run duration_s, and the gaps between consecutive started_at
    (within a tick: ``run_ids`` is a list of each tick's ids)."""
    from datetime import datetime

    rows = [[store.run(run_id) for run_id in tick] for tick in run_ids]
    statuses = collections.Counter(r["status"] for tick in rows for r in tick)
    durations = [r["duration_s"] for tick in rows for r in tick if r["duration_s"] is not None]
    gaps = []
    for tick in rows:
        starts = [datetime.fromisoformat(r["started_at"].replace("Z", "+00:00")) for r in tick]
        gaps += [(b - a).total_seconds() for a, b in zip(starts, starts[1:])]
    return {"statuses": dict(statuses), "duration_s": durations, "start_gaps": gaps}


# -- the instrumented iteration -------------------------------------------------------
class Probe:
    """Accumulates, per run of the loop, the time spent in wrapped functions (``Instrumented``
    wraps them; only calls on the loop's own thread count: the log flusher thread also flushes).
    A run's times are closed by the ``on_run`` callback, which the loop calls last; the
    first run after ``start_tick()`` is marked, as it also holds the tick's set-up.
    """

    def __init__(self) -> None:
        self.current: dict[str, float] = collections.defaultdict(float)
        self.per_run: list[dict[str, float]] = []
        self.first: list[bool] = []
        self.last_end = 0.0
        self._first_next = True

    def start_tick(self) -> None:
        self.current.clear()
        self.last_end = time.perf_counter()
        self._first_next = True

    def on_run(self, _event: Any) -> None:
        now = time.perf_counter()
        self.current["cycle"] = now - self.last_end
        self.per_run.append(dict(self.current))
        self.first.append(self._first_next)
        self._first_next = False
        self.current.clear()
        self.last_end = now

    def runs(self) -> list[dict[str, float]]:
        """Every run but the first of each tick (all of them if that leaves none)."""
        kept = [r for r, first in zip(self.per_run, self.first) if not first]
        return kept or self.per_run


# Parts of one run, outermost first; "rest" lines are what the parent part holds
# besides its listed children. Labels name what the time is. Parts of one mode only
# are 0.00 in the other.
BREAKDOWN = [
    ("cycle", None, "whole cycle (end of previous run -> end of this run)"),
    ("start_run", "cycle", "store.start_run: insert run + mark task RUNNING (1 transaction)"),
    ("log_writer", "cycle", "store.log_writer"),
    ("rmtree", "cycle", "shutil.rmtree in the loop: trigger folder before, work folder after (sandbox)"),
    ("extract", "cycle", "extract_code: read notebook JSON, find cell, magics, compile"),
    ("env_current", "cycle", "envs.current: resolve env symlink + read peach-env.json"),
    ("task_env", "cycle", "Loop.task_environment"),
    ("sandboxed", "cycle", "Loop._sandboxed: mkdir + chown run folders, the plan (sandbox)"),
    ("executor", "cycle", "PythonExecutor.run"),
    ("sandbox_plan", "executor", "Job.sandbox_plan: chown work folder, interpreter home, paths (sandbox)"),
    ("run_process", "executor", "run_process"),
    ("create_group", "run_process", "Sandbox.create_group: mkdir cgroup(s) + write limits (sandbox)"),
    ("command", "run_process", "Sandbox.command: the launcher + bubblewrap argv (sandbox)"),
    ("hand_over", "run_process", "WarmSandbox.hand_over: limits, request, until it took it (sandbox)"),
    ("prepare_next", "hand_over", "Loop._prepare_next: the next task's sandbox started ahead (sandbox)"),
    ("warm_start", "prepare_next", "PythonExecutor.prepare: its folders, cgroup, command line and Popen"),
    ("popen", "run_process", "subprocess.Popen: fork/exec until exec succeeded"),
    ("reader_start", "run_process", "start the output reader thread (the child already runs)"),
    ("writer_start", "run_process", "start the stdin writer thread (the child already runs)"),
    ("wait_exit", "run_process", "child alive after both: [launcher + bwrap + init + setpriv + cp +] "
                                 "interpreter start + bootstrap + task"),
    ("terminate", "run_process", "after exit: leftover search (_terminate) (none)"),
    ("marker_scan", "terminate", "find_marked: /proc/*/environ scan for the run's marker"),
    ("group_scan", "terminate", "_group_members: killpg(pgid, 0) probe"),
    ("drain", "run_process", "_drain: wait for the cgroup to empty, kill what stands (sandbox)"),
    ("usage", "run_process", "group.usage: read peak memory + CPU from the cgroup (sandbox)"),
    ("remove", "run_process", "group.remove: rmdir the cgroup(s) (sandbox)"),
    ("finish", "run_process", "_finish: join output reader and stdin writer threads"),
    ("read_result", "executor", "read_result: the task's result file, safely"),
    ("collect", "cycle", "Loop._collect_requests: the run's trigger folder"),
    ("finish_run", "cycle", "store.finish_run: log lines + select + update run + task state (1 transaction)"),
    ("log_close", "finish_run", "LogWriter.close: the run's log lines, inside finish_run's transaction"),
]


class Instrumented:
    """The loop's steps wrapped with timers, one ``Probe`` per mode (``use`` picks it)."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.probes = {mode: Probe() for mode in MODES}
        self.probe = self.probes[MODES[0]]
        self._undo: list[Callable[[], None]] = []

    def use(self, mode: str) -> Probe:
        self.probe = self.probes[mode]
        return self.probe

    def wrap(self, owner: Any, attr: str, label: str) -> None:
        """Time ``owner.attr`` into whichever probe is in use when it is called."""
        original = getattr(owner, attr)
        had_own = attr in getattr(owner, "__dict__", {})
        bench = self
        thread = threading.get_ident()

        def timed(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() != thread:
                return original(*args, **kwargs)
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                bench.probe.current[label] += time.perf_counter() - started

        if isinstance(owner, type):  # a function in a class body, so it still binds
            def method(self_: Any, *args: Any, **kwargs: Any) -> Any:
                return timed(self_, *args, **kwargs)

            own = owner.__dict__.get(attr)
            setattr(owner, attr, method)
            self._undo.append(lambda: setattr(owner, attr, own) if own is not None else delattr(owner, attr))
            return
        setattr(owner, attr, timed)
        self._undo.append((lambda: setattr(owner, attr, original)) if had_own else (lambda: delattr(owner, attr)))

    def shim(self, module: Any, name: str) -> Any:
        """``module.name`` (a module) replaced, for ``module`` only, by a copy to wrap in."""
        real = getattr(module, name)
        copy = type(sys)(f"{name}_shim")
        copy.__dict__.update(real.__dict__)
        setattr(module, name, copy)
        self._undo.append(lambda: setattr(module, name, real))
        return copy

    def __enter__(self) -> "Instrumented":
        from peach_tasks.executors import cgroups as cgroups_mod
        from peach_tasks.executors import process as process_mod
        from peach_tasks.executors import python as python_mod
        from peach_tasks.executors.base import Job
        from peach_tasks.executors.sandbox import Sandbox
        from peach_tasks.executors.warm import WarmSandbox
        from peach_tasks.model import Executor
        from peach_tasks.scheduling import loop_warm as loop_warm_mod
        from peach_tasks.scheduling import loops as loops_mod
        from peach_tasks.store.logs import LogWriter

        scheduler = self.scheduler
        store, envs = scheduler.store, scheduler.envs
        self.wrap(store, "start_run", "start_run")
        self.wrap(store, "log_writer", "log_writer")
        self.wrap(store, "finish_run", "finish_run")
        self.wrap(LogWriter, "close", "log_close")
        self.wrap(loops_mod, "extract_code", "extract")
        self.wrap(envs, "current", "env_current")
        self.wrap(loops_mod.Loop, "task_environment", "task_env")
        self.wrap(loops_mod.Loop, "_sandboxed", "sandboxed")
        self.wrap(loops_mod.Loop, "_collect_requests", "collect")
        self.wrap(self.shim(loops_mod, "shutil"), "rmtree", "rmtree")
        self.wrap(self.shim(loop_warm_mod, "shutil"), "rmtree", "rmtree")  # an unused warm sandbox's folders
        self.wrap(scheduler.executors[Executor.PYTHON], "run", "executor")
        self.wrap(Job, "sandbox_plan", "sandbox_plan")
        self.wrap(python_mod, "run_process", "run_process")
        self.wrap(python_mod, "read_result", "read_result")
        self.wrap(Sandbox, "create_group", "create_group")
        self.wrap(loops_mod.Loop, "_prepare_next", "prepare_next")
        self.wrap(WarmSandbox, "hand_over", "hand_over")
        self.wrap(scheduler.executors[Executor.PYTHON], "prepare", "warm_start")
        self.wrap(Sandbox, "command", "command")
        for group_class in (cgroups_mod.RunGroupV1, cgroups_mod.RunGroupV2):
            self.wrap(group_class, "usage", "usage")
            self.wrap(group_class, "remove", "remove")
        self.wrap(process_mod, "_wait_for_exit", "wait_exit")
        self.wrap(process_mod, "_terminate", "terminate")
        self.wrap(process_mod, "find_marked", "marker_scan")
        self.wrap(process_mod, "_group_members", "group_scan")
        self.wrap(process_mod, "_drain", "drain")
        self.wrap(process_mod, "_finish", "finish")
        # Popen through a stand-in module object, so only process.py's calls are timed.
        self.wrap(self.shim(process_mod, "subprocess"), "Popen", "popen")
        # The stdin writer is a plain threading.Thread: give process.py a timed subclass.
        threads = self.shim(process_mod, "threading")
        threads.Thread = type("Thread", (threading.Thread,), {})
        self.wrap(threads.Thread, "start", "writer_start")
        self.wrap(process_mod.Reader, "start", "reader_start")
        self._old_on_run = scheduler.on_run
        scheduler.on_run = lambda event: self.probe.on_run(event)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.scheduler.on_run = self._old_on_run
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()

    def tick(self, mode: str, loop: Any) -> None:
        self.use(mode).start_tick()
        loop.tick()

    def parts(self, mode: str) -> dict[str, dict[str, float]]:
        runs = self.probes[mode].runs()
        parts: dict[str, dict[str, float]] = {}
        for key, parent, label in BREAKDOWN:
            parts[key] = {"median_ms": ms(median([r.get(key, 0.0) for r in runs])), "parent": parent,
                          "label": label}
        # What each parent holds besides its listed children, per run, then the median.
        for key, _, _ in BREAKDOWN:
            children = [k for k, p, _ in BREAKDOWN if p == key]
            if children:
                rest = [r.get(key, 0.0) - sum(r.get(c, 0.0) for c in children) for r in runs]
                parts[key]["rest_ms"] = ms(median(rest))
        return parts


# -- main ---------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Measure the loop's per-task overhead, with isolation on and off, against baselines "
                    "run in the same invocation.",
        epilog="Targets: scheduler/floor <= 1.5 (either isolation), papermill/scheduler >= 30. "
               "papermill is optional: pip install -e '.[bench]'.")
    parser.add_argument("--tasks", type=int, default=200, metavar="N",
                        help="tasks in the organisation, all run in one iteration per mode (default 200)")
    parser.add_argument("--rounds", type=int, default=10, metavar="R",
                        help="rounds the iterations and baselines are interleaved in (default 10)")
    parser.add_argument("--baseline-runs", type=int, default=None, metavar="M",
                        help="runs of baselines (a) and (b) each (default: N, at least 50)")
    parser.add_argument("--papermill-runs", type=int, default=10, metavar="P",
                        help="timed papermill runs, after one warm-up (default 10; 0 skips papermill)")
    parser.add_argument("--no-breakdown", action="store_true",
                        help="skip the second, instrumented pass that splits the per-task time")
    parser.add_argument("--keep", metavar="DIR", help="build in DIR (must not exist) and keep it")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    if args.tasks < 2:
        parser.error("--tasks must be at least 2")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.baseline_runs is not None and args.baseline_runs < 2:
        parser.error("--baseline-runs must be at least 2")
    baseline_runs = args.baseline_runs or max(args.tasks, 50)
    rounds = min(args.rounds, args.tasks // 2, baseline_runs)  # at least 2 tasks and 1 baseline run a round

    bench_started = time.perf_counter()
    with workspace(args.keep, "peach-bench-") as root:
        result = run(root, args.tasks, rounds, baseline_runs, args.papermill_runs, not args.no_breakdown)
    result["bench_seconds"] = round(time.perf_counter() - bench_started, 1)
    result["load_average_end"] = load_average()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


def shares(total: int, parts: int) -> list[tuple[int, int]]:
    """``range(total)`` cut into ``parts`` consecutive (start, stop) pieces of near equal size."""
    cuts = [total * i // parts for i in range(parts + 1)]
    return list(zip(cuts, cuts[1:]))


def run(root: Path, count: int, rounds: int, baseline_runs: int, papermill_count: int,
        breakdown: bool) -> dict[str, Any]:
    load_start = load_average()
    say(f"building a git repository of {count} tasks in {root} (load average {load_start})")
    tasks = build_repository(root, count)
    events = Events()
    with opened_scheduler(root / "scheduler.yaml", progress=say, on_run=events) as scheduler:
        store = scheduler.store
        sandbox, unsandboxed = scheduler.sandbox, scheduler._unsandboxed
        modes = [m for m in MODES if m not in SANDBOXED or sandbox is not None]
        if sandbox is None:
            say(f"no sandbox on this host, only isolation: none is measured: {unsandboxed}")
        say("sync (builds the organisation's empty uv environment; not timed)")
        synced = time.perf_counter()
        snapshot = scheduler.sync()
        sync_seconds = time.perf_counter() - synced
        keys = sorted(snapshot.loops.get(ORG, ()))
        if len(keys) != count:
            raise SystemExit(f"expected {count} tasks in loop {ORG!r}, the snapshot has "
                             f"{len(keys)}; problems: {store.problems()}")
        env = environment(scheduler, ORG)
        python = str(env.python)
        floor = root / "floor.py"
        floor.write_text(FLOOR_SCRIPT)

        from peach_tasks.executors.bytecode import task_argv

        bare = [[python, "-I", "-c", "pass"]] * baseline_runs
        boot_dir = root / "bootstrap-results"
        boot_dir.mkdir()
        requests = bootstrap_requests(tasks, baseline_runs, boot_dir)
        boot_argv = task_argv(python)  # as the python executor starts it (bootstrap.py from its bytecode)

        def boot(start: int, stop: int) -> list[float]:
            return [time_command(boot_argv, tasks[i % count][1].parent, requests[i]) for i in range(start, stop)]
        floors = [[python, "-I", str(floor), str(tasks[i % count][1]), tasks[i % count][2]]
                  for i in range(baseline_runs)]
        boxed = None
        if sandbox is not None:
            first = snapshot.tasks[keys[0]]
            boxed = SandboxedBootstrap(mode_loop(scheduler, sandbox, []), sandbox, first, env,
                                       first.checkout.path / first.spec.notebook, first.spec.method)
        say("warming up")
        warm = min(5, baseline_runs)
        sample(bare[:warm] + floors[:warm], root)
        boot(0, warm)
        for _ in range(warm if boxed else 0):
            boxed()

        bare_t: list[float] = []
        floor_t: list[float] = []
        boot_t: list[float] = []
        boxed_t: list[float] = []
        timed: dict[str, dict[str, Any]] = {m: {"wall": 0.0, "ran": 0, "cycles": [], "first": [], "run_ids": []}
                                            for m in modes}
        slices = shares(count, rounds)
        runs_of = shares(baseline_runs, rounds)
        say(f"{rounds} rounds: baselines (a), (b), bootstrap alone"
            f"{' and in its sandbox' if boxed else ''} ({baseline_runs} runs each in all), then one tick "
            f"of ~{count // rounds} tasks per mode ({', '.join(modes)}), alternating")
        for r, ((lo, hi), (b_lo, b_hi)) in enumerate(zip(slices, runs_of)):
            for i in range(b_lo, b_hi):  # the baselines interleaved with each other too
                bare_t.append(time_command(bare[i], root))
                floor_t.append(time_command(floors[i], root))
                boot_t += boot(i, i + 1)
                if boxed:
                    boxed_t.append(boxed())
            for mode in (modes if r % 2 == 0 else modes[::-1]):
                loop = mode_loop(scheduler, sandbox, keys[lo:hi], mode)
                wall, ran, cycles, run_ids = timed_tick(loop, events)
                t = timed[mode]
                t["wall"] += wall
                t["ran"] += ran
                t["first"].append(cycles[0])
                t["cycles"] += cycles[1:]  # the first cycle also holds the tick's set-up
                t["run_ids"].append(run_ids)
        from_store = {mode: store_timings(store, timed[mode]["run_ids"]) for mode in modes}

        parts: dict[str, Any] | None = None
        if breakdown:
            say(f"a second, instrumented pass of {count} tasks per mode in {rounds} rounds (breakdown)")
            with Instrumented(scheduler) as probe:
                for r, (lo, hi) in enumerate(slices):
                    for mode in (modes if r % 2 == 0 else modes[::-1]):
                        probe.tick(mode, mode_loop(scheduler, sandbox, keys[lo:hi], mode))
            parts = {mode: probe.parts(mode) for mode in modes}

        pm_times, pm_note = None, "skipped (--papermill-runs 0)"
        if papermill_count > 0:
            say(f"papermill: {papermill_count} runs after a warm-up")
            pm_dir = root / "papermill"
            pm_dir.mkdir()
            pm_times, pm_note = papermill_runs(tasks[0][1], pm_dir, papermill_count)

    floor_med, bare_med = median(floor_t), median(bare_t)
    boot_med, boxed_med = median(boot_t), median(boxed_t)
    pm_med = median(pm_times) if pm_times else None
    sched: dict[str, Any] = {}
    ratios: dict[str, Any] = {}
    for mode in modes:
        t = timed[mode]
        cycles = t["cycles"]
        per_task = median(cycles)
        stored = from_store[mode]
        sched[mode] = {
            "ran": t["ran"],
            "ticks": len(t["run_ids"]),
            "statuses": stored["statuses"],
            "tick_wall_s": round(t["wall"], 3),
            "wall_per_task_ms": ms(t["wall"] / max(t["ran"], 1)),
            "cycle_median_ms": ms(per_task),
            "cycle_p90_ms": ms(statistics.quantiles(cycles, n=10)[-1]) if len(cycles) > 11 else None,
            "first_cycle_median_ms": ms(median(t["first"])),
            "run_duration_median_ms": ms(median(stored["duration_s"])),
            "started_at_gap_median_ms": ms(median(stored["start_gaps"])),
            "overhead_over_floor_ms": ms(per_task - floor_med) if per_task and floor_med else None,
            "over_bootstrap_alone_ms": ms(per_task - boot_med) if per_task and boot_med else None,
        }
        ratios[mode] = {
            "scheduler_over_floor": round(per_task / floor_med, 3) if per_task and floor_med else None,
            "scheduler_over_bare": round(per_task / bare_med, 3) if per_task and bare_med else None,
            "papermill_over_scheduler": round(pm_med / per_task, 1) if pm_med and per_task else None,
        }
    if "sandbox" in sched and "none" in sched:
        a, b, c = timed["sandbox"]["cycles"], timed["none"]["cycles"], timed["cold"]["cycles"]
        sched["sandbox_minus_none_ms"] = ms(median(a) - median(b))
        sched["cold_minus_none_ms"] = ms(median(c) - median(b))
        sched["cold_minus_sandbox_ms"] = ms(median(c) - median(a))
    return {
        "tasks": count,
        "rounds": rounds,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cpus": os.cpu_count(),
        "load_average_start": load_start,
        "env_python": python,
        "sync_seconds_untimed": round(sync_seconds, 2),
        "modes": modes,
        "sandbox_unavailable": unsandboxed if sandbox is None else None,
        "measure": "per-task cycle = end of one run to end of the next as the loop sees it "
                   "(start_run ... finish_run, via on_run), median over the runs but the first of each tick",
        "scheduler": sched,
        "baselines": {
            "bare_interpreter": {"command": "env_python -I -c pass", "runs": len(bare_t),
                                 "median_ms": ms(bare_med)},
            "floor": {"command": "env_python -I floor.py NOTEBOOK METHOD", "runs": len(floor_t),
                      "median_ms": ms(floor_med)},
            "papermill": {"command": "papermill.execute_notebook(kernel_name='python3'), in-process",
                          "runs": len(pm_times or []), "median_ms": ms(pm_med), "note": pm_note},
            # Not targets, diagnostics: the task process alone, as the executor starts it.
            "bootstrap_alone": {"command": "env_python -I bootstrap.py < request JSON", "runs": len(boot_t),
                                "median_ms": ms(boot_med)},
            "bootstrap_sandboxed": {"command": "launcher + bwrap ... env_python -I bootstrap.py < request JSON "
                                               "(cgroup made and removed untimed)", "runs": len(boxed_t),
                                    "median_ms": ms(boxed_med)},
        },
        "ratios": ratios,
        "targets": {"scheduler_over_floor_max": FLOOR_TARGET, "papermill_over_scheduler_min": PAPERMILL_TARGET},
        "breakdown": parts,
    }


def print_table(r: dict[str, Any]) -> None:
    modes, b, q = r["modes"], r["baselines"], r["ratios"]
    s = r["scheduler"]

    def row(name: str, values: list[Any], note: str = "") -> None:
        shown = ["-" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v)) for v in values]
        print(f"  {name:<34}{''.join(f'{v:>10}' for v in shown)}  {note}")

    def per_mode(name: str, key: str, note: str = "", table: dict[str, Any] = s) -> None:
        row(name, [table[m][key] for m in modes], note)

    print(f"peach-tasks loop overhead: {r['tasks']} tasks per mode in {r['rounds']} rounds, {r['python']}, "
          f"{r['cpus']} cpus, load average {r['load_average_start']} -> {r.get('load_average_end')} "
          f"(sync {r['sync_seconds_untimed']}s, not timed)")
    if r["sandbox_unavailable"]:
        print(f"  isolation: sandbox NOT measured, no sandbox here: {r['sandbox_unavailable']}")
    for m in modes:
        print(f"  isolation: {m}: statuses {s[m]['statuses']}")
    print(f"median per task (ms)              {''.join(f'{m:>10}' for m in modes)}")
    per_mode("scheduler, per-task cycle", "cycle_median_ms", "end of run k-1 -> end of run k, but each tick's first")
    per_mode("scheduler, tick wall / N", "wall_per_task_ms", "sum of the ticks' wall times / runs")
    per_mode("scheduler, store started_at gap", "started_at_gap_median_ms", "consecutive runs' started_at")
    per_mode("scheduler, store duration_s", "run_duration_median_ms", "start_run -> finish_run, both excluded")
    per_mode("scheduler, cycle p90", "cycle_p90_ms")
    if "sandbox_minus_none_ms" in s:
        row("sandbox - none", [s["sandbox_minus_none_ms"]], "what isolation costs per task")
        row("cold - none", [s["cold_minus_none_ms"]], "what it costs when every sandbox starts with its run")
        row("cold - sandbox", [s["cold_minus_sandbox_ms"]], "what starting the next sandbox ahead saves")
    print("baselines (ms, the same for every mode)")
    row("(a) bare interpreter", [b["bare_interpreter"]["median_ms"]],
        f"{b['bare_interpreter']['command']}, {b['bare_interpreter']['runs']} runs")
    row("(b) floor", [b["floor"]["median_ms"]], f"{b['floor']['command']}, {b['floor']['runs']} runs")
    pm = b["papermill"]
    if pm["median_ms"] is None:
        print(f"  {'(c) papermill':<34}{'-':>10}  papermill: {pm['note']}")
    else:
        row("(c) papermill", [pm["median_ms"]], f"{pm['command']}, {pm['runs']} runs")
    bs, bx = b["bootstrap_alone"], b["bootstrap_sandboxed"]
    row("(diagnostic) bootstrap.py alone", [bs["median_ms"]], f"{bs['command']}, {bs['runs']} runs")
    if bx["runs"]:
        row("(diagnostic) bootstrap.py sandboxed", [bx["median_ms"]], f"{bx['command']}, {bx['runs']} runs")
        row("  sandbox's processes alone", [round(bx["median_ms"] - bs["median_ms"], 3)],
            "sandboxed - alone: launcher, bubblewrap, init, setpriv, checkout copy")
    print(f"ratios                            {''.join(f'{m:>10}' for m in modes)}")
    sf = [q[m]["scheduler_over_floor"] for m in modes]
    verdicts = ", ".join(f"{m} {'-' if v is None else ('ok' if v <= FLOOR_TARGET else 'MISSED')}"
                         for m, v in zip(modes, sf))
    row("scheduler / floor", sf, f"target <= {FLOOR_TARGET}: {verdicts}")
    per_mode("scheduler / bare interpreter", "scheduler_over_bare", table=q)
    ps = [q[m]["papermill_over_scheduler"] for m in modes]
    verdicts = ", ".join(f"{m} {'-' if v is None else ('ok' if v >= PAPERMILL_TARGET else 'MISSED')}"
                         for m, v in zip(modes, ps))
    row("papermill / scheduler", ps, f"target >= {PAPERMILL_TARGET:g}: {verdicts}")
    per_mode("scheduler - floor (ms)", "overhead_over_floor_ms")
    per_mode("scheduler - bootstrap alone (ms)", "over_bootstrap_alone_ms", "what the scheduler adds around "
             "the task process")
    parts = r.get("breakdown")
    if parts:
        print("per-task breakdown, instrumented pass (median ms over the runs but each tick's first)")
        print(f"  {''.join(f'{m:>8}  ' for m in modes)}")

        def show(key: str, depth: int) -> None:
            label = next(text for k, _, text in BREAKDOWN if k == key)
            values = [parts[m][key]["median_ms"] for m in modes]
            if not any(values) and key not in ("cycle",):
                return  # a part neither mode has (e.g. the marker scan, which never runs here)
            print(f"  {''.join(f'{v:8.2f}  ' for v in values)}{'  ' * depth}{label}")
            for child in [k for k, p, _ in BREAKDOWN if p == key]:
                show(child, depth + 1)
            if "rest_ms" in parts[modes[0]][key]:
                rest = [parts[m][key]["rest_ms"] for m in modes]
                print(f"  {''.join(f'{v:8.2f}  ' for v in rest)}{'  ' * (depth + 1)}(rest of {key})")

        show("cycle", 0)
        print("  (medians of parts need not add up to the median of the whole)")
    print(f"benchmark took {r['bench_seconds']} s")


if __name__ == "__main__":
    sys.exit(main())
