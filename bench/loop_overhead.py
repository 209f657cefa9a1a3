#!/usr/bin/env python
"""Per-task overhead of an organisation's loop, as ratios against baselines of the same run.

    python bench/loop_overhead.py [--tasks 200] [--json]

Builds, in a temporary folder, a real git repository with one organisation (``bench``)
and N trivial python tasks (each its own notebook whose one code cell is
``def task_K(): return K``), syncs it once with the real scheduler (this builds the
organisation's empty uv environment and is not timed) and times ONE iteration of the
``bench`` loop (``Scheduler.make_loop("bench").tick()``). A task does no work, so the
time per task is the scheduler's overhead.

The baselines are measured in the same invocation, because absolute numbers mean little
on a noisy machine, half of each before and half after the timed iteration:

  (a) interpreter start:  ``env_python -I -c pass``
  (b) floor:              ``env_python -I floor.py NOTEBOOK METHOD``, a minimal notebook
                          runner (read the JSON, find the cell, exec it, call the method)
  (c) papermill:          ``papermill.execute_notebook`` of the same notebook, when the
                          optional extra is installed (``pip install -e '.[bench]'``)

and, as a diagnostic only, the task process alone: ``env_python -I bootstrap.py`` fed the
request the python executor would send, which splits the scheduler's time into the task
process's and the rest.

``env_python`` is the organisation's environment's interpreter, the one tasks run in.
A second, instrumented iteration (``--no-breakdown`` skips it) wraps the loop's steps
with timers to split the per-task time into its parts. Targets: scheduler/floor <= 1.5,
papermill/scheduler >= 30. Nothing here is asserted: it is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Callable

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


def say(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# -- the repository ---------------------------------------------------------------
def git(repo: Path, *args: str) -> None:
    env = dict(os.environ, GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@peach.invalid",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@peach.invalid")
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env)


def build_repository(root: Path, count: int) -> list[tuple[str, Path, str]]:
    """The git repository of ``count`` tasks; returns (task, notebook path, method) each."""
    from peach_tasks.demo import notebook_json

    repo = root / "algos"
    (repo / "notebooks").mkdir(parents=True)
    width = max(3, len(str(count - 1)))
    tasks, definitions = [], {}
    for i in range(count):
        name = f"t{i:0{width}d}"
        method = f"task_{i}"
        notebook = repo / "notebooks" / f"{name}.ipynb"
        notebook.write_text(notebook_json([("code", f"def {method}():\n    return {i}\n")]))
        definitions[name] = {"executor": "python", "notebook": f"notebooks/{name}.ipynb", "method": method}
        tasks.append((name, notebook, method))
    import yaml

    (repo / "peach.yaml").write_text(yaml.safe_dump({"codops": ORG, "tasks": definitions}, sort_keys=False))
    git(repo, "init", "--quiet", "--initial-branch=master")
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", "bench tasks")
    (root / "scheduler.yaml").write_text(yaml.safe_dump({
        "state_dir": "state",
        "repositories": [{"url": "algos", "branch": "master"}],
        "loop": {"min_iteration_seconds": 0},
    }, sort_keys=False))
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
    from peach_tasks.notebook import extract_code

    requests = []
    for i in range(runs):
        name, notebook, method = tasks[i % len(tasks)]
        code = extract_code(notebook, method, False, display_name=f"notebooks/{notebook.name}").source
        requests.append(json.dumps({
            "code": code, "method": method, "filename": f"notebooks/{notebook.name}", "cwd": str(notebook.parent),
            "result_path": str(work / f"result-{i}.json"), "payload": None, "has_payload": False,
            "max_result_bytes": DEFAULT_MAX_RESULT_BYTES,
        }).encode())
    return requests


def papermill_runs(notebook: Path, out_dir: Path, runs: int) -> tuple[list[float] | None, str | None]:
    """Seconds per ``execute_notebook`` (after one untimed warm-up), or why there are none."""
    try:
        import papermill
    except ImportError:
        return None, "not installed (pip install -e '.[bench]')"
    import warnings

    times: list[float] = []
    # The kernel writes warnings to our stderr (fd 2): keep them in a file instead.
    stderr_log = out_dir / "stderr.txt"
    saved = os.dup(2)
    try:
        with open(stderr_log, "wb") as sink, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nbformat's missing cell id warning, at every run
            os.dup2(sink.fileno(), 2)
            for i in range(runs + 1):
                started = time.perf_counter()
                try:
                    papermill.execute_notebook(str(notebook), str(out_dir / f"out-{i}.ipynb"), kernel_name="python3",
                                               progress_bar=False, log_output=False, cwd=str(notebook.parent))
                except Exception as exc:  # e.g. no kernel: report it, the rest of the benchmark stands
                    first = str(exc).splitlines()[0] if str(exc) else ""
                    return None, f"failed: {type(exc).__name__}: {first} (kernel output: {stderr_log})"
                if i:  # the first run imports papermill's machinery and warms the kernel's files
                    times.append(time.perf_counter() - started)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    return times, None


# -- the scheduler ------------------------------------------------------------------
class Events:
    """``on_run`` callback: when (perf_counter) each run of the loop ended, and its id."""

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.run_ids: list[int] = []

    def __call__(self, event: Any) -> None:
        self.ends.append(time.perf_counter())
        self.run_ids.append(event.run_id)


def timed_tick(scheduler: Any, events: Events) -> tuple[float, int, list[float]]:
    """One iteration; returns its wall time, the runs and each run's cycle time.

    A cycle is end of the previous run -> end of this run as the loop sees it (start_run
    ... finish_run): everything the loop does per task. The first run's cycle starts at
    the tick and so also holds the iteration's set-up (marking every task PENDING).
    """
    events.ends.clear()
    events.run_ids.clear()
    loop = scheduler.make_loop(ORG)
    started = time.perf_counter()
    ran = loop.tick()
    wall = time.perf_counter() - started
    marks = [started, *events.ends]
    return wall, ran, [b - a for a, b in zip(marks, marks[1:])]


def store_timings(store: Any, run_ids: list[int]) -> dict[str, Any]:
    """From the store: per-run duration_s, and the gaps between consecutive started_at."""
    from datetime import datetime

    rows = [store.run(run_id) for run_id in run_ids]
    statuses = collections.Counter(r["status"] for r in rows)
    durations = [r["duration_s"] for r in rows if r["duration_s"] is not None]
    starts = [datetime.fromisoformat(r["started_at"].replace("Z", "+00:00")) for r in rows]
    gaps = [(b - a).total_seconds() for a, b in zip(starts, starts[1:])]
    return {"statuses": dict(statuses), "duration_s": durations, "start_gaps": gaps}


# -- the instrumented iteration -------------------------------------------------------
class Probe:
    """Accumulates, per run of the loop, the time spent in wrapped functions.

    Only calls on the loop's own thread count (the log flusher thread also flushes).
    A run's times are closed by the ``on_run`` callback, which the loop calls last.
    """

    def __init__(self) -> None:
        self.thread = threading.get_ident()
        self.current: dict[str, float] = collections.defaultdict(float)
        self.per_run: list[dict[str, float]] = []
        self.last_end = 0.0
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: Any, attr: str, label: str) -> None:
        original = getattr(owner, attr)
        had_own = attr in getattr(owner, "__dict__", {})
        current, thread = self.current, self.thread

        def timed(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() != thread:
                return original(*args, **kwargs)
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                current[label] += time.perf_counter() - started

        if isinstance(owner, type):  # a function in a class body, so it still binds
            def method(self_: Any, *args: Any, **kwargs: Any) -> Any:
                return timed(self_, *args, **kwargs)

            own = owner.__dict__.get(attr)
            original = getattr(owner, attr)  # inherited or own; called with self_ first
            setattr(owner, attr, method)
            self._undo.append(lambda: setattr(owner, attr, own) if own is not None else delattr(owner, attr))
            return
        setattr(owner, attr, timed)
        if had_own:
            self._undo.append(lambda: setattr(owner, attr, original))
        else:
            self._undo.append(lambda: delattr(owner, attr))

    def on_run(self, _event: Any) -> None:
        now = time.perf_counter()
        self.current["cycle"] = now - self.last_end
        self.per_run.append(dict(self.current))
        self.current.clear()
        self.last_end = now

    def restore(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()


# Parts of one run, outermost first; "rest" lines are what the parent part holds
# besides its listed children. Labels name what the time is.
BREAKDOWN = [
    ("cycle", None, "whole cycle (end of previous run -> end of this run)"),
    ("start_run", "cycle", "store.start_run: insert run + mark task RUNNING (1 transaction)"),
    ("log_writer", "cycle", "store.log_writer"),
    ("extract", "cycle", "extract_code: read notebook JSON, find cell, neutralise magics, compile"),
    ("env_current", "cycle", "envs.current: resolve env symlink + read peach-env.json"),
    ("task_env", "cycle", "Loop.task_environment"),
    ("executor", "cycle", "PythonExecutor.run"),
    ("run_process", "executor", "run_process"),
    ("popen", "run_process", "subprocess.Popen: fork/exec until exec succeeded"),
    ("reader_start", "run_process", "start the output reader thread (the child already runs)"),
    ("writer_start", "run_process", "start the stdin writer thread (the child already runs)"),
    ("wait_exit", "run_process", "child alive after both: interpreter start + bootstrap + task"),
    ("terminate", "run_process", "after exit: leftover search (_terminate)"),
    ("marker_scan", "terminate", "find_marked: /proc/*/environ scan for the run's marker"),
    ("group_scan", "terminate", "_group_members: killpg(pgid, 0) probe"),
    ("finish", "run_process", "_finish: join output reader and stdin writer threads"),
    ("finish_run", "cycle", "store.finish_run: log lines + select + update run + task state (1 transaction)"),
    ("log_close", "finish_run", "LogWriter.close: the run's log lines, inside finish_run's transaction"),
]


def instrumented_tick(scheduler: Any) -> dict[str, dict[str, float]]:
    from peach_tasks import loops as loops_mod
    from peach_tasks.executors import process as process_mod
    from peach_tasks.executors import python as python_mod
    from peach_tasks.store.logs import LogWriter

    probe = Probe()
    store, envs = scheduler.store, scheduler.envs
    probe.wrap(store, "start_run", "start_run")
    probe.wrap(store, "log_writer", "log_writer")
    probe.wrap(store, "finish_run", "finish_run")
    probe.wrap(LogWriter, "close", "log_close")
    probe.wrap(loops_mod, "extract_code", "extract")
    probe.wrap(envs, "current", "env_current")
    from peach_tasks.model import Executor

    probe.wrap(scheduler.executors[Executor.PYTHON], "run", "executor")
    probe.wrap(python_mod, "run_process", "run_process")
    probe.wrap(process_mod, "_wait_for_exit", "wait_exit")
    probe.wrap(process_mod, "_terminate", "terminate")
    probe.wrap(process_mod, "find_marked", "marker_scan")
    probe.wrap(process_mod, "_group_members", "group_scan")
    probe.wrap(process_mod, "_finish", "finish")
    # Popen through a stand-in module object, so only process.py's calls are timed.
    real_subprocess = process_mod.subprocess
    shim = type(sys)("subprocess_shim")
    shim.__dict__.update(real_subprocess.__dict__)
    process_mod.subprocess = shim
    probe.wrap(shim, "Popen", "popen")
    # The stdin writer is a plain threading.Thread: give process.py a timed subclass.
    real_threading = process_mod.threading
    threads = type(sys)("threading_shim")
    threads.__dict__.update(real_threading.__dict__)
    threads.Thread = type("Thread", (real_threading.Thread,), {})
    process_mod.threading = threads
    probe.wrap(threads.Thread, "start", "writer_start")
    probe.wrap(process_mod._Reader, "start", "reader_start")

    old_on_run = scheduler.on_run
    scheduler.on_run = probe.on_run
    try:
        loop = scheduler.make_loop(ORG)
        probe.wrap(loop, "task_environment", "task_env")
        probe.last_end = time.perf_counter()
        loop.tick()
    finally:
        scheduler.on_run = old_on_run
        probe.restore()
        process_mod.subprocess = real_subprocess
        process_mod.threading = real_threading

    runs = probe.per_run[1:] or probe.per_run  # the first also holds the iteration's set-up
    parts: dict[str, dict[str, float]] = {}
    for key, parent, label in BREAKDOWN:
        parts[key] = {"median_ms": ms(median([r.get(key, 0.0) for r in runs])), "parent": parent, "label": label}
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
        description="Measure the loop's per-task overhead against baselines run in the same invocation.",
        epilog="Targets: scheduler/floor <= 1.5, papermill/scheduler >= 30. "
               "papermill is optional: pip install -e '.[bench]'.")
    parser.add_argument("--tasks", type=int, default=200, metavar="N",
                        help="tasks in the organisation, all run in one iteration (default 200)")
    parser.add_argument("--baseline-runs", type=int, default=None, metavar="M",
                        help="runs of baselines (a) and (b) each (default: N, at least 50)")
    parser.add_argument("--papermill-runs", type=int, default=10, metavar="P",
                        help="timed papermill runs, after one warm-up (default 10; 0 skips papermill)")
    parser.add_argument("--no-breakdown", action="store_true",
                        help="skip the second, instrumented iteration that splits the per-task time")
    parser.add_argument("--keep", metavar="DIR", help="build in DIR (must not exist) and keep it")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    if args.tasks < 2:
        parser.error("--tasks must be at least 2")
    if args.baseline_runs is not None and args.baseline_runs < 2:
        parser.error("--baseline-runs must be at least 2")
    baseline_runs = args.baseline_runs or max(args.tasks, 50)

    bench_started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if args.keep:
            root = Path(args.keep).resolve()
            root.mkdir(parents=True)
        else:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="peach-bench-")))
        result = run(root, args.tasks, baseline_runs, args.papermill_runs, not args.no_breakdown)
    result["bench_seconds"] = round(time.perf_counter() - bench_started, 1)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


def run(root: Path, count: int, baseline_runs: int, papermill_count: int, breakdown: bool) -> dict[str, Any]:
    from peach_tasks.scheduler import Scheduler
    from peach_tasks.settings import load_settings
    from peach_tasks.store import Store

    say(f"building a git repository of {count} tasks in {root}")
    tasks = build_repository(root, count)
    settings = load_settings(root / "scheduler.yaml")
    store = Store.open(settings.database_url)
    events = Events()
    scheduler = Scheduler(settings, store, progress=say, on_run=events)
    try:
        scheduler.recover()
        say("sync (builds the organisation's empty uv environment; not timed)")
        synced = time.perf_counter()
        snapshot = scheduler.sync()
        sync_seconds = time.perf_counter() - synced
        if len(snapshot.loops.get(ORG, ())) != count:
            raise SystemExit(f"expected {count} tasks in loop {ORG!r}, the snapshot has "
                             f"{len(snapshot.loops.get(ORG, ()))}; problems: {store.problems()}")
        env = scheduler.envs.current(ORG)
        if env is None:
            raise SystemExit(f"no environment for {ORG!r}: {store.problems()}")
        python = str(env.python)
        floor = root / "floor.py"
        floor.write_text(FLOOR_SCRIPT)

        from peach_tasks.executors.python import BOOTSTRAP

        bare = [[python, "-I", "-c", "pass"]] * baseline_runs
        boot_dir = root / "bootstrap-results"
        boot_dir.mkdir()
        requests = bootstrap_requests(tasks, baseline_runs, boot_dir)
        boot_argv = [python, "-I", str(BOOTSTRAP)]

        def boot(start: int, stop: int) -> list[float]:
            return [time_command(boot_argv, tasks[i % count][1].parent, requests[i]) for i in range(start, stop)]
        floors = [[python, "-I", str(floor), str(tasks[i % count][1]), tasks[i % count][2]]
                  for i in range(baseline_runs)]
        half = baseline_runs // 2
        say("warming up")
        warm = min(5, baseline_runs)
        sample(bare[:warm] + floors[:warm], root)
        boot(0, warm)
        say(f"baselines (a), (b) and bootstrap alone: first {half} runs each")
        bare_t = sample(bare[:half], root)
        floor_t = sample(floors[:half], root)
        boot_t = boot(0, half)

        say(f"scheduler: one iteration of {count} tasks")
        wall, ran, cycles = timed_tick(scheduler, events)
        from_store = store_timings(store, list(events.run_ids))

        say(f"baselines (a), (b) and bootstrap alone: last {baseline_runs - half} runs each")
        bare_t += sample(bare[half:], root)
        floor_t += sample(floors[half:], root)
        boot_t += boot(half, baseline_runs)

        parts = None
        if breakdown:
            say(f"scheduler: a second, instrumented iteration of {count} tasks (breakdown)")
            parts = instrumented_tick(scheduler)

        pm_times, pm_note = None, "skipped (--papermill-runs 0)"
        if papermill_count > 0:
            say(f"papermill: {papermill_count} runs after a warm-up")
            pm_dir = root / "papermill"
            pm_dir.mkdir()
            pm_times, pm_note = papermill_runs(tasks[0][1], pm_dir, papermill_count)
    finally:
        scheduler.close()
        store.close()

    per_task = median(cycles[1:])  # the first cycle also holds the iteration's set-up
    floor_med, bare_med = median(floor_t), median(bare_t)
    pm_med = median(pm_times) if pm_times else None
    result: dict[str, Any] = {
        "tasks": count,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cpus": os.cpu_count(),
        "env_python": python,
        "sync_seconds_untimed": round(sync_seconds, 2),
        "scheduler": {
            "measure": "per-task cycle = end of one run to end of the next as the loop sees it "
                       "(start_run ... finish_run, via on_run), median over runs 2..N",
            "ran": ran,
            "statuses": from_store["statuses"],
            "tick_wall_s": round(wall, 3),
            "wall_per_task_ms": ms(wall / max(ran, 1)),
            "cycle_median_ms": ms(per_task),
            "cycle_p90_ms": ms(statistics.quantiles(cycles[1:], n=10)[-1]) if len(cycles) > 11 else None,
            "first_cycle_ms": ms(cycles[0]) if cycles else None,
            "run_duration_median_ms": ms(median(from_store["duration_s"])),
            "started_at_gap_median_ms": ms(median(from_store["start_gaps"])),
        },
        "baselines": {
            "bare_interpreter": {"command": "env_python -I -c pass", "runs": len(bare_t),
                                 "median_ms": ms(bare_med)},
            "floor": {"command": "env_python -I floor.py NOTEBOOK METHOD", "runs": len(floor_t),
                      "median_ms": ms(floor_med)},
            "papermill": {"command": "papermill.execute_notebook(kernel_name='python3'), in-process",
                          "runs": len(pm_times or []), "median_ms": ms(pm_med), "note": pm_note},
            # Not a target, a diagnostic: the task process alone, as the executor starts it.
            "bootstrap_alone": {"command": "env_python -I bootstrap.py < request JSON", "runs": len(boot_t),
                                "median_ms": ms(median(boot_t))},
        },
        "ratios": {
            "scheduler_over_floor": round(per_task / floor_med, 3) if per_task and floor_med else None,
            "scheduler_over_bare": round(per_task / bare_med, 3) if per_task and bare_med else None,
            "papermill_over_scheduler": round(pm_med / per_task, 1) if pm_med and per_task else None,
        },
        "targets": {"scheduler_over_floor_max": FLOOR_TARGET, "papermill_over_scheduler_min": PAPERMILL_TARGET},
        "breakdown": parts,
    }
    result["scheduler"]["overhead_over_floor_ms"] = ms(per_task - floor_med) if per_task and floor_med else None
    return result


def print_table(r: dict[str, Any]) -> None:
    s, b, q = r["scheduler"], r["baselines"], r["ratios"]

    def row(name: str, value: Any, note: str = "") -> None:
        shown = "-" if value is None else (f"{value:10.2f}" if isinstance(value, float) else f"{value:>10}")
        print(f"  {name:<34}{shown:>10}  {note}")

    print(f"peach-tasks loop overhead: {r['tasks']} tasks, {r['python']}, {r['cpus']} cpus "
          f"(sync {r['sync_seconds_untimed']}s, not timed)")
    print(f"  statuses: {s['statuses']}")
    print("median per task (ms)")
    row("scheduler, per-task cycle", s["cycle_median_ms"], "end of run k-1 -> end of run k, runs 2..N")
    row("scheduler, tick wall / N", s["wall_per_task_ms"], f"one iteration: {s['tick_wall_s']} s")
    row("scheduler, store started_at gap", s["started_at_gap_median_ms"], "consecutive runs' started_at")
    row("scheduler, store duration_s", s["run_duration_median_ms"], "start_run -> finish_run, both excluded")
    row("scheduler, cycle p90", s["cycle_p90_ms"])
    row("(a) bare interpreter", b["bare_interpreter"]["median_ms"],
        f"{b['bare_interpreter']['command']}, {b['bare_interpreter']['runs']} runs")
    row("(b) floor", b["floor"]["median_ms"], f"{b['floor']['command']}, {b['floor']['runs']} runs")
    pm = b["papermill"]
    if pm["median_ms"] is None:
        print(f"  {'(c) papermill':<34}{'-':>10}  papermill: {pm['note']}")
    else:
        row("(c) papermill", pm["median_ms"], f"{pm['command']}, {pm['runs']} runs")
    bs = b["bootstrap_alone"]
    row("(diagnostic) bootstrap.py alone", bs["median_ms"], f"{bs['command']}, {bs['runs']} runs")
    print("ratios")

    def ratio(name: str, value: float | None, target: str, ok: bool | None) -> None:
        verdict = "" if ok is None else ("ok" if ok else "MISSED")
        row(name, value, f"target {target} {verdict}")

    sf = q["scheduler_over_floor"]
    ratio("scheduler / floor", sf, f"<= {FLOOR_TARGET}", None if sf is None else sf <= FLOOR_TARGET)
    row("scheduler / bare interpreter", q["scheduler_over_bare"])
    ps = q["papermill_over_scheduler"]
    ratio("papermill / scheduler", ps, f">= {PAPERMILL_TARGET:g}", None if ps is None else ps >= PAPERMILL_TARGET)
    row("scheduler - floor (ms)", s["overhead_over_floor_ms"])
    if s["cycle_median_ms"] is not None and bs["median_ms"] is not None:
        row("scheduler - bootstrap alone (ms)", round(s["cycle_median_ms"] - bs["median_ms"], 3),
            "what the scheduler adds around the task process")
    parts = r.get("breakdown")
    if parts:
        print("per-task breakdown, instrumented second iteration (median ms over runs 2..N)")
        def show(key: str, depth: int) -> None:
            label = next(text for k, _, text in BREAKDOWN if k == key)
            print(f"  {'  ' * depth}{parts[key]['median_ms']:8.2f}  {label}")
            for child in [k for k, p, _ in BREAKDOWN if p == key]:
                show(child, depth + 1)
            if "rest_ms" in parts[key]:
                print(f"  {'  ' * (depth + 1)}{parts[key]['rest_ms']:8.2f}  (rest of {key})")

        show("cycle", 0)
        print("  (medians of parts need not add up to the median of the whole)")
    print(f"benchmark took {r['bench_seconds']} s")


if __name__ == "__main__":
    sys.exit(main())
