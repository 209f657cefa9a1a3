#!/usr/bin/env python
"""What the scheduler adds to one Spark application, compared with the same app submitted by hand.

    python bench/spark_overhead.py [--runs 7] [--json]

Starts one Spark standalone cluster (a Master and a Worker from the pyspark package, on
127.0.0.1; ``tests/spark_cluster.py``), builds in a temporary folder a git repository
with one organisation (``spbench``, no dependencies) and one ``executor: spark`` task,
syncs it with the real scheduler and packs the organisation's environment (not timed).
Then, in the same invocation, it alternates two ways of running the same trivial job,
``spark.range(100).count()``, against that cluster:

  (a) by hand:    ``spark-submit --master <cluster> --deploy-mode client
                  --archives <env archive>#environment
                  --conf spark.pyspark.python=./environment/bin/python
                  --conf spark.pyspark.driver.python=<env python>
                  --conf spark.log.level=WARN <the scheduler's spark.conf> app.py``
                  where ``app.py`` makes a SparkSession, counts and stops it;
                  the wall time of the subprocess.
  (b) scheduled:  the task through ``Scheduler.make_loop("spbench").run_task(task)``,
                  timed from just before the run starts to just after ``finish_run``
                  (``run_task`` returns after ``finish_run`` and ``on_run``).

Both use the organisation's environment (``envs.current``) and its archive
(``envs.pack``) and the same Spark conf (``spark.executor.memory=512m``,
``spark.ui.enabled=false``). One untimed warm-up of each comes first; the timed pairs
alternate their order. Before every run the script waits (untimed) until the cluster
has no application and no core in use, so that no run waits for the previous run's
executor to go.

Two splits say where the time goes. (1) Inside spark-submit, for both: when the first
line of each milestone arrives (first JVM line, Hadoop, ``Running Spark version``) and
the job's own ``BENCH-MARK ready|counted <time.time()>`` prints, then the exit. The
by-hand output goes through a pipe stamped per line, the scheduler's through its log.
(2) The scheduled run, by timers wrapped around the scheduler's own steps (store writes,
Popen, the child's life, the leftover scan, the reader join; a few microseconds each
against seconds). Target: scheduled - by hand <= 0.5 s (medians). Spark runs vary by
seconds with the machine's load, so read the difference beside the pair differences
and the load average printed with it.
Nothing is asserted: it is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

from common import (
    commit_repository,
    definitions,
    environment,
    load_average,
    median,
    notebook,
    opened_scheduler,
    say,
    workspace,
    write_settings,
)

ORG = "spbench"
TASK = "count"
TARGET_S = 0.5  # scheduled - by hand must stay at or below this (medians)
SPARK_CONF = {"spark.executor.memory": "512m", "spark.ui.enabled": "false"}
HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"

# (a): the whole application, as a user would write it.
APP = textwrap.dedent('''\
    import time

    from pyspark.sql import SparkSession

    spark = SparkSession.builder.getOrCreate()
    print(f"BENCH-MARK ready {time.time():.6f}", flush=True)
    n = spark.range(100).count()
    print(f"BENCH-MARK counted {time.time():.6f}", flush=True)
    spark.stop()
''')

# (b): the notebook's one code cell; the scheduler's driver made ``spark`` before it runs.
CELL = textwrap.dedent('''\
    import time
    print(f"BENCH-MARK ready {time.time():.6f}", flush=True)


    def main():
        n = spark.range(100).count()
        print(f"BENCH-MARK counted {time.time():.6f}", flush=True)
        return n
''')
MARK = re.compile(r"BENCH-MARK (\w+) ([0-9]+\.[0-9]+)")
# Output lines that mark the steps of a client-mode start, first occurrence each, in order.
MILESTONES = [
    ("jvm", "Using incubator modules", "spawn -> first JVM line (launcher + find-spark-home + SparkSubmit JVM up)"),
    ("hadoop", "NativeCodeLoader", "-> SparkSubmit loads Hadoop (before the Python driver starts)"),
    ("context", "Running Spark version", "-> SparkContext starts (Python driver up, pyspark imported)"),
    ("ready", "BENCH-MARK ready", "-> SparkSession ready (the job's own code runs)"),
    ("counted", "BENCH-MARK counted", "-> count() done (waits for the executor to register)"),
    ("exit", None, "-> spark-submit exited (stop, JVM shutdown)"),
]
STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z ")


def rnd(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# -- set-up ---------------------------------------------------------------------------
def build_repository(root: Path, cluster: Any) -> None:
    commit_repository(root, {
        f"{TASK}.ipynb": notebook([CELL]),
        "peach.yaml": definitions(ORG, {TASK: {"executor": "spark", "notebook": f"{TASK}.ipynb", "method": "main"}}),
    }, "bench task")
    write_settings(root, timeouts={"task": 600},
                   spark={"master": cluster.master_url, "master_web_url": cluster.web_url, "conf": dict(SPARK_CONF)})


def wait_idle(web_url: str, limit: float = 120.0) -> float:
    """Wait until the cluster runs no application and uses no core; returns the seconds waited."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit:
        try:
            with urllib.request.urlopen(f"{web_url}/json/", timeout=10) as response:
                state = json.load(response)
        except OSError:
            state = None
        if state is not None and not state.get("activeapps") and \
                all(w.get("coresused", 0) == 0 for w in state.get("workers", [])):
            return time.perf_counter() - started
        time.sleep(0.1)
    raise SystemExit(f"the cluster did not become idle within {limit:g} s")


def milestones(spawned: float, lines: list[tuple[float, str]], exited: float) -> dict[str, float]:
    """Seconds from the spawn to each milestone: when its first line arrived (``exit``: exit seen).

    ``ready`` and ``counted`` use the time the job printed, the others the arrival stamp.
    """
    found: dict[str, float] = {}
    for stamp, text in lines:
        for key, needle, _ in MILESTONES:
            if needle and key not in found and needle in text:
                mark = MARK.search(text)
                found[key] = (float(mark.group(2)) if mark else stamp) - spawned
    found["exit"] = exited - spawned
    return found


def stamped_log(text: str) -> list[tuple[float, str]]:
    """A run's log from the store as (arrival time, line); stamps are UTC with milliseconds."""
    from datetime import datetime, timezone

    out = []
    for line in text.splitlines():
        match = STAMP.match(line)
        if match:
            when = datetime.fromisoformat(match.group(1)).replace(tzinfo=timezone.utc).timestamp()
            out.append((when, line[match.end():]))
    return out


# -- (a) by hand --------------------------------------------------------------------------
def by_hand(argv: list[str], cwd: Path, log: Path) -> dict[str, Any]:
    """Wall time of the subprocess; its output goes through a pipe, each line stamped on arrival."""
    lines: list[tuple[float, str]] = []

    def read(stream: Any) -> None:
        for raw in stream:
            lines.append((time.time(), raw.decode("utf-8", errors="replace").rstrip("\n")))

    spawned, started = time.time(), time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    reader = threading.Thread(target=read, args=(proc.stdout,), daemon=True)
    reader.start()
    code = proc.wait()
    wall = time.perf_counter() - started
    exited = time.time()
    reader.join(10)
    proc.stdout.close()  # type: ignore[union-attr]
    log.write_text("".join(f"{stamp:.3f} {text}\n" for stamp, text in lines))
    if code != 0:
        tail = "\n".join(text for _, text in lines[-40:])
        raise SystemExit(f"spark-submit by hand failed with {code}; its output:\n{tail}")
    return {"wall": wall, "milestones": milestones(spawned, lines, exited)}


# -- (b) scheduled ------------------------------------------------------------------------
class Timers:
    """Wraps functions to record, for the current run, how long each took and when it ended."""

    def __init__(self) -> None:
        self.run: dict[str, float] = {}
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: Any, attr: str, label: str, *, ended: str | None = None,
             began: str | None = None) -> None:
        original = getattr(owner, attr)
        run = self.run

        def timed(*args: Any, **kwargs: Any) -> Any:
            if began:
                run[began] = time.time()
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                run[label] = run.get(label, 0.0) + time.perf_counter() - started
                if ended:
                    run[ended] = time.time()

        had_own = attr in vars(owner)
        setattr(owner, attr, timed)
        self._undo.append((lambda: setattr(owner, attr, original)) if had_own else (lambda: delattr(owner, attr)))

    def restore(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()


def instrument(scheduler: Any, timers: Timers) -> None:
    from peach_tasks.executors import process as process_mod
    from peach_tasks.executors import spark as spark_mod
    from peach_tasks.model import Executor
    from peach_tasks.scheduling import loops as loops_mod
    from peach_tasks.store.logs import LogWriter

    store, envs = scheduler.store, scheduler.envs
    timers.wrap(store, "start_run", "start_run")
    timers.wrap(store, "finish_run", "finish_run")
    timers.wrap(loops_mod, "extract_code", "extract")
    timers.wrap(envs, "current", "envs_current")
    timers.wrap(envs, "pack", "pack")
    timers.wrap(scheduler.executors[Executor.SPARK], "run", "executor", began="executor_began",
                ended="executor_ended")
    timers.wrap(spark_mod, "run_process", "run_process", ended="run_process_ended")
    timers.wrap(process_mod, "_wait_for_exit", "wait_exit", ended="exit_seen")
    timers.wrap(process_mod, "_terminate", "terminate")
    timers.wrap(process_mod, "find_marked", "marker_scan")
    timers.wrap(process_mod, "_group_members", "group_scan")
    timers.wrap(process_mod, "_finish", "finish_join")
    # LogWriter.close is looked up on the class: replace it there, and put it back after.
    original_close = LogWriter.close
    run = timers.run

    def close(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original_close(self, *args, **kwargs)
        finally:
            run["log_close"] = run.get("log_close", 0.0) + time.perf_counter() - started

    LogWriter.close = close  # type: ignore[method-assign]
    timers._undo.append(lambda: setattr(LogWriter, "close", original_close))
    # Popen through a stand-in module object, so only process.py's calls are timed.
    real = process_mod.subprocess
    shim = type(sys)("subprocess_shim")
    shim.__dict__.update(real.__dict__)
    process_mod.subprocess = shim
    timers._undo.append(lambda: setattr(process_mod, "subprocess", real))
    timers.wrap(shim, "Popen", "popen", began="spawned")


def scheduled(scheduler: Any, store: Any, timers: Timers) -> dict[str, Any]:
    task = scheduler.snapshot.tasks[(ORG, TASK)]
    loop = scheduler.make_loop(ORG)
    timers.run.clear()
    began = time.time()
    started = time.perf_counter()
    outcome = loop.run_task(task)
    wall = time.perf_counter() - started
    ended = time.time()
    t = dict(timers.run)
    run_id = store.runs(ORG, TASK)[0]["id"]
    text = store.log(run_id) or ""
    if outcome.status.value != "SUCCESS":
        raise SystemExit(f"the scheduled run {run_id} ended {outcome.status.value}: {outcome.error}\n{text[-3000:]}")
    child = t["exit_seen"] - t["spawned"]
    # Scheduler-side split: what happened before the spawn, the child's life, and after.
    steps = {
        "outside_child": wall - child,
        "before_spawn": t["spawned"] - began,
        "start_run": t.get("start_run", 0.0),
        "extract": t.get("extract", 0.0),
        "envs_current": t.get("envs_current", 0.0),
        "pack": t.get("pack", 0.0),
        "executor_before_spawn": t["spawned"] - t["executor_began"],
        "popen": t.get("popen", 0.0),
        "child_alive": child,
        "after_exit_in_run_process": t["run_process_ended"] - t["exit_seen"],
        "terminate": t.get("terminate", 0.0),
        "marker_scan": t.get("marker_scan", 0.0),
        "group_scan": t.get("group_scan", 0.0),
        "finish_join": t.get("finish_join", 0.0),
        "executor_after_run_process": t["executor_ended"] - t["run_process_ended"],
        "after_executor": ended - t["executor_ended"],
        "log_close": t.get("log_close", 0.0),
        "finish_run": t.get("finish_run", 0.0),
    }
    return {"wall": wall, "run_id": run_id, "steps": steps, "log_lines": text.count("\n"),
            "milestones": milestones(t["spawned"], stamped_log(text), t["exit_seen"])}


# -- main ---------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Compare one trivial Spark application submitted by hand with the same code run as a "
                    "scheduled task, against one standalone cluster started for the purpose.",
        epilog=f"Target: scheduled - by hand <= {TARGET_S} s (medians). Needs pyspark and Java.")
    parser.add_argument("--runs", type=int, default=7, metavar="N",
                        help="timed runs of each, after one untimed warm-up of each (default 7)")
    parser.add_argument("--keep", metavar="DIR", help="build in DIR (must not exist) and keep it")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    sys.path.insert(0, str(TESTS))
    from spark_cluster import missing_reason, spark_home, start_cluster

    reason = missing_reason()
    if reason:
        raise SystemExit(f"cannot run: {reason}")
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # driver and cluster on loopback, both ways

    bench_started = time.perf_counter()
    with workspace(args.keep, "peach-spark-bench-") as root, contextlib.ExitStack() as stack:
        say("starting a Spark standalone cluster (Master + Worker, 2 cores, 2g)")
        up = time.perf_counter()
        cluster = start_cluster(root / "cluster")
        stack.callback(cluster.stop)
        say(f"cluster {cluster.master_url} up in {time.perf_counter() - up:.1f} s")
        result = run(root, cluster, spark_home(), args.runs)
    result["bench_seconds"] = round(time.perf_counter() - bench_started, 1)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


def run(root: Path, cluster: Any, home: Path, runs: int) -> dict[str, Any]:
    from peach_tasks.executors.spark import find_spark_submit

    load_start = load_average()
    build_repository(root, cluster)
    timers = Timers()
    with opened_scheduler(root / "scheduler.yaml", progress=say) as scheduler:
        store, settings = scheduler.store, scheduler.settings
        try:
            say("sync: builds the organisation's empty uv environment (not timed)")
            snapshot = scheduler.sync()
            if (ORG, TASK) not in snapshot.tasks:
                raise SystemExit(f"task {ORG}/{TASK} is not in the snapshot; problems: {store.problems()}")
            env = environment(scheduler, ORG)
            packed = time.perf_counter()
            archive = scheduler.envs.pack(env)  # the scheduled runs find it already there
            pack_seconds = time.perf_counter() - packed
            submit = find_spark_submit(settings.spark.submit)
            app = root / "app.py"
            app.write_text(APP)
            hand_argv = [submit, "--master", cluster.master_url, "--deploy-mode", "client",
                         "--archives", f"{archive}#environment",
                         "--conf", "spark.pyspark.python=./environment/bin/python",
                         "--conf", f"spark.pyspark.driver.python={env.python}",
                         "--conf", "spark.log.level=WARN"]
            for key, value in SPARK_CONF.items():
                hand_argv += ["--conf", f"{key}={value}"]
            hand_argv.append(str(app))
            logs = root / "by-hand-logs"
            logs.mkdir()
            instrument(scheduler, timers)

            hand: list[dict[str, Any]] = []
            sched: list[dict[str, Any]] = []
            idle_waits: list[float] = []

            def one_hand(label: str) -> dict[str, Any]:
                idle_waits.append(wait_idle(cluster.web_url))
                return by_hand(hand_argv, root, logs / f"{label}.txt")

            def one_sched() -> dict[str, Any]:
                idle_waits.append(wait_idle(cluster.web_url))
                return scheduled(scheduler, store, timers)

            say("warm-up: one of each (not timed)")
            warm_hand = one_hand("warm-up")
            warm_sched = one_sched()
            say(f"warm-up: by hand {warm_hand['wall']:.2f} s, scheduled {warm_sched['wall']:.2f} s")
            for i in range(runs):
                if i % 2 == 0:
                    hand.append(one_hand(f"run-{i}"))
                    sched.append(one_sched())
                else:
                    sched.append(one_sched())
                    hand.append(one_hand(f"run-{i}"))
                say(f"pair {i + 1}/{runs}: by hand {hand[-1]['wall']:.2f} s, scheduled {sched[-1]['wall']:.2f} s")
        finally:
            timers.restore()

    hand_walls, sched_walls = [r["wall"] for r in hand], [r["wall"] for r in sched]
    hand_med, sched_med = median(hand_walls), median(sched_walls)
    diff = sched_med - hand_med
    paired = [s - h for s, h in zip(sched_walls, hand_walls)]

    def med_of(rows: list[dict[str, Any]], group: str, key: str) -> float | None:
        return rnd(median([r[group][key] for r in rows if r[group].get(key) is not None]))

    def segments(rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Per milestone: median seconds since the spawn, and median of the step that ends there."""
        out: dict[str, Any] = {}
        for i, (key, _, _) in enumerate(MILESTONES):
            steps = []
            for r in rows:
                m = r["milestones"]
                prev = 0.0 if i == 0 else m.get(MILESTONES[i - 1][0])
                if key in m and prev is not None:
                    steps.append(m[key] - prev)
            out[key] = {"since_spawn_s": med_of(rows, "milestones", key), "step_s": rnd(median(steps)),
                        "step_runs_s": [rnd(v, 2) for v in steps]}
        return out

    return {
        "runs": runs,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cpus": os.cpu_count(),
        "load_average_start": load_start,
        "load_average": load_average(),
        "pyspark": _pyspark_version(),
        "spark_home": str(home),
        "master": cluster.master_url,
        "env_python": str(env.python),
        "archive": str(archive),
        "archive_mib": round(archive.stat().st_size / 2**20, 2) if archive.exists() else None,
        "pack_seconds_untimed": round(pack_seconds, 2),
        "spark_conf": SPARK_CONF,
        "by_hand": {"command": " ".join(hand_argv), "walls_s": [rnd(w) for w in hand_walls],
                    "median_s": rnd(hand_med), "warm_up_s": rnd(warm_hand["wall"]),
                    "milestones": segments(hand)},
        "scheduled": {"measure": "Loop.run_task: start_run ... finish_run", "walls_s": [rnd(w) for w in sched_walls],
                      "median_s": rnd(sched_med), "warm_up_s": rnd(warm_sched["wall"]),
                      "milestones": segments(sched),
                      "steps_median_s": {k: med_of(sched, "steps", k) for k in sched[0]["steps"]},
                      "log_lines_median": median([r["log_lines"] for r in sched])},
        "difference_s": rnd(diff),
        "paired_difference_median_s": rnd(median(paired)),
        "paired_differences_s": [rnd(d, 2) for d in paired],
        "ratio": rnd(sched_med / hand_med) if hand_med else None,
        "target_difference_max_s": TARGET_S,
        "target_met": diff <= TARGET_S,
        "idle_wait_median_s": rnd(median(idle_waits)),
    }


def _pyspark_version() -> str | None:
    try:
        import pyspark
    except ImportError:
        return None
    return pyspark.__version__


def print_table(r: dict[str, Any]) -> None:
    h, s = r["by_hand"], r["scheduled"]

    def row(name: str, value: float | None, note: str = "") -> None:
        shown = "-" if value is None else f"{value:9.3f}"
        print(f"  {name:<44}{shown:>10}  {note}".rstrip())

    print(f"peach-tasks Spark overhead: {r['runs']} runs each, {r['python']}, pyspark {r['pyspark']}, "
          f"{r['cpus']} cpus, standalone {r['master']}")
    print(f"  archive {r['archive_mib']} MiB (packed in {r['pack_seconds_untimed']} s, not timed); "
          f"conf {', '.join(f'{k}={v}' for k, v in r['spark_conf'].items())}")
    print("median wall per run (s)")
    row("(a) by hand: spark-submit app.py", h["median_s"], f"runs {h['walls_s']}")
    row("(b) scheduled: run_task, start_run..finish_run", s["median_s"], f"runs {s['walls_s']}")
    verdict = "ok" if r["target_met"] else "MISSED"
    row("scheduled - by hand", r["difference_s"], f"target <= {r['target_difference_max_s']} {verdict}")
    row("scheduled - by hand, median of pairs", r["paired_difference_median_s"])
    row("scheduled / by hand", r["ratio"])
    row("scheduler's own time outside spark-submit", s["steps_median_s"]["outside_child"],
        "scheduled wall - spark-submit's life (the rest is spark-submit itself)")
    print("inside spark-submit: median s of each step (first line of each milestone; spread = min..max)")
    print(f"  {'':<76}{'by hand':>16}{'scheduled':>18}")
    for key, _, text in MILESTONES:
        a, b = h["milestones"][key], s["milestones"][key]

        def cell(m: dict[str, Any]) -> str:
            runs = [v for v in m["step_runs_s"] if v is not None]
            spread = f"{min(runs):.1f}..{max(runs):.1f}" if runs else ""
            return f"{'-' if m['step_s'] is None else format(m['step_s'], '6.2f')} {spread:>9}"

        print(f"  {text:<76}{cell(a):>16}  {cell(b):>16}")
    print("scheduled run, split by the scheduler's steps (median s)")
    st = s["steps_median_s"]
    labels = [
        ("outside_child", 0, "ALL the scheduler adds outside spark-submit's life (wall - alive)"),
        ("before_spawn", 0, "run_task start -> Popen of spark-submit"),
        ("start_run", 1, "store.start_run"),
        ("extract", 1, "extract_code"),
        ("envs_current", 1, "envs.current (loop + executor)"),
        ("executor_before_spawn", 1, "SparkExecutor.run before Popen (pack check, request file, argv)"),
        ("pack", 2, "envs.pack (archive already there)"),
        ("popen", 0, "subprocess.Popen"),
        ("child_alive", 0, "spark-submit alive (Popen -> exit seen)"),
        ("after_exit_in_run_process", 0, "run_process after exit"),
        ("terminate", 1, "_terminate (leftover search)"),
        ("marker_scan", 2, "find_marked /proc scan"),
        ("group_scan", 2, "_group_members"),
        ("finish_join", 1, "_finish: join the output reader"),
        ("executor_after_run_process", 0, "SparkExecutor.run after run_process (result, rmtree)"),
        ("after_executor", 0, "after the executor: requests, log close, finish_run"),
        ("finish_run", 1, "store.finish_run (with the log's last lines)"),
        ("log_close", 2, "LogWriter.close, inside finish_run's transaction"),
    ]
    for key, depth, text in labels:
        value = st.get(key)
        print(f"  {'  ' * depth}{'-' if value is None else f'{value:8.3f}'}  {text}")
    print(f"  log lines per scheduled run: {s['log_lines_median']}; untimed idle wait before each run: "
          f"{r['idle_wait_median_s']} s")
    print(f"  load average (1, 5, 15 min) at the start {r['load_average_start']}, at the end {r['load_average']}; "
          f"pair differences (s): {r['paired_differences_s']}")
    print(f"benchmark took {r['bench_seconds']} s")


if __name__ == "__main__":
    sys.exit(main())
