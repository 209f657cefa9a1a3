#!/usr/bin/env python
"""How long a running loop waits while retention prunes a large store, against the same loop
without pruning, measured in the same run.

    python bench/prune.py [--runs 1000000] [--tasks 1000] [--keep 100] [--batch 200] [--pause 0.25]
                          [--baseline-seconds 20] [--postgres URL] [--json]

Fills a store (SQLite in a temporary folder, or a fresh database on the PostgreSQL server
given by ``--postgres``; schema from the real migrations) with RUNS runs that ended 100 days
ago over TASKS tasks, each with a one-line log, so that ``retention: {runs_days: 90,
keep_last: KEEP}`` leaves TASKS x KEEP of them (1,000,000 -> 100,000 with the defaults).
Then a real loop runs: a real git repository with three trivial python tasks
(``def main(): return 1``), synced by the real ``Scheduler``, run by ``Loop.run_forever`` with
the python executor (``isolation: none``: the sandbox is not what is measured).

  baseline   the loop alone for --baseline-seconds
  pruning    the loop while ``Pruner.round()`` (serve's side job, its own connection pool, its
             lease) removes the old runs in batches; until the round ends

For each phase: the runs the loop finished, each run's cycle (from the end of one run to the
end of the next, as the loop sees it: median, p99, max), and the **store waits**: the time the
loop spends in each call to the store (start_run, finish_run, set_states; median, p99, max).
A store call is where a loop can be held up by the pruner's transactions, so the longest
store wait during pruning is the headline figure (target <= 100 ms), printed next to the
baseline's; a last line picks out the store calls that overlapped one of the pruner's
transactions (what the pruner may have held up, whatever else the machine did), and the
longest wait of each window as long as the baseline (its median compares like with like). The pruner's own figures follow: batches, runs removed, its longest transaction.
Nothing is asserted: it is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from common import commit_repository, definitions, notebook, running_loop, say

TARGET_MS = 100.0
STORE_CALLS = ("start_run", "finish_run", "set_states")


def make_repo(root: Path) -> Path:
    tasks = {f"t{i}": {"executor": "python", "notebook": "nb.ipynb", "method": "main"} for i in range(3)}
    return commit_repository(root, {"nb.ipynb": notebook(["def main():\n    return 1\n"]),
                                    "peach.yaml": definitions("live", tasks)}, "tasks")


def fill(url: str, runs_total: int, tasks: int) -> None:
    """Old runs in bulk, as loops would have left them (ids rising with time, one log line each)."""
    from peach_tasks.model import Executor, TaskSpec
    from peach_tasks.store import Store
    from peach_tasks.store.schema import log_chunks, runs
    from peach_tasks.store.store import TaskRegistration

    store = Store.open(url)
    specs = [TaskSpec("old", f"o{i:05d}", "nb.ipynb", "main", executor=Executor.PYTHON, repo="algos",
                      source_file="peach.yaml") for i in range(tasks)]
    store.register_tasks([TaskRegistration(spec, "v") for spec in specs])
    when = datetime.now(timezone.utc) - timedelta(days=100)
    step = 20_000
    line = "old run did its work and ended\n"
    for start in range(0, runs_total, step):
        ids = range(start + 1, min(start + step, runs_total) + 1)
        with store.engine.begin() as conn:
            conn.execute(runs.insert(), [dict(id=i, codops="old", task=specs[i % tasks].name, loop="old",
                                              executor="python", started_at=when, finished_at=when,
                                              status="SUCCESS", duration_s=1.0, owner="filled",
                                              log_bytes=len(line), log_dropped_bytes=0) for i in ids])
            conn.execute(log_chunks.insert(), [dict(run_id=i, seq=1, part="h", nbytes=len(line), data=line)
                                               for i in ids])
    if store.engine.dialect.name == "postgresql":  # the loop's runs get ids above the filled ones
        with store.engine.begin() as conn:
            conn.execute(sa.text("SELECT setval(pg_get_serial_sequence('runs', 'id'), :n)"), {"n": runs_total})
            conn.execute(sa.text("ANALYZE"))
    else:
        with store.engine.begin() as conn:
            conn.execute(sa.text("ANALYZE"))
    store.close()


class Watched:
    """The loop's store calls and run ends, timed."""

    def __init__(self, store: Any) -> None:
        self.waits: list[float] = []
        self.spans: list[tuple[float, float]] = []
        self.ends: list[float] = []
        self.recording = False
        for name in STORE_CALLS:
            real = getattr(store, name)

            def timed(*args: Any, _real: Any = real, **kwargs: Any) -> Any:
                began = time.perf_counter()
                try:
                    return _real(*args, **kwargs)
                finally:
                    if self.recording:
                        ended = time.perf_counter()
                        self.waits.append(ended - began)
                        self.spans.append((began, ended))

            setattr(store, name, timed)

    def on_run(self, _event: Any) -> None:
        if self.recording:
            self.ends.append(time.perf_counter())

    def take(self) -> tuple[list[float], list[float], list[tuple[float, float]]]:
        waits, ends, spans = self.waits, self.ends, self.spans
        self.waits, self.ends, self.spans = [], [], []
        return waits, [b - a for a, b in zip(ends, ends[1:])], spans


def overlapping(spans: list[tuple[float, float]], transactions: list[tuple[float, float]]) -> list[float]:
    """The store calls that overlapped one of the pruner's transactions: what it may have held up."""
    import bisect

    starts = [t[0] for t in transactions]
    hit = []
    for began, ended in spans:
        i = bisect.bisect_right(starts, ended)  # transactions that started before the call ended
        if i and any(transactions[j][1] > began for j in range(max(0, i - 3), i)):
            hit.append(ended - began)
    return hit


def window_maxima(spans: list[tuple[float, float]], seconds: float) -> list[float]:
    """The longest store wait in each ``seconds`` window: a long phase compared with a short
    baseline, like for like (the maximum of more samples is larger by itself)."""
    if not spans:
        return []
    start = spans[0][0]
    worst: dict[int, float] = {}
    for began, ended in spans:
        index = int((began - start) // seconds)
        worst[index] = max(worst.get(index, 0.0), ended - began)
    return list(worst.values())


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0, "median_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * len(ordered)))]
    return {"n": len(values), "median_ms": round(statistics.median(values) * 1000, 2),
            "p99_ms": round(p99 * 1000, 2), "max_ms": round(max(values) * 1000, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--keep", type=int, default=100, help="retention.keep_last")
    parser.add_argument("--batch", type=int, default=200, help="retention.batch")
    parser.add_argument("--pause", type=float, default=None,
                        help="retention.pause (seconds; default: the setting's default)")
    parser.add_argument("--baseline-seconds", type=float, default=20.0)
    parser.add_argument("--postgres", default=None, help="a PostgreSQL server URL: measure there instead")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="peach-bench-prune-"))
    admin = database = None
    try:
        if args.postgres:
            database = f"peach_bench_{uuid.uuid4().hex[:10]}"
            admin = sa.create_engine(args.postgres, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{database}"'))
            url = sa.engine.make_url(args.postgres).set(database=database).render_as_string(hide_password=False)
        else:
            url = f"sqlite:///{work / 'peach.db'}"
        run(args, work, url)
    finally:
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(sa.text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                     f"WHERE datname = '{database}'"))
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}"'))
            admin.dispose()
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path, url: str) -> None:
    from peach_tasks.scheduling.retention import Pruner
    from peach_tasks.scheduling.scheduler import Scheduler, settle_heap
    from peach_tasks.settings import RetentionSettings, settings_from_dict
    from peach_tasks.store import Store

    say(f"filling {url.split('@')[-1]}: {args.runs:,} runs over {args.tasks:,} tasks")
    began = time.monotonic()
    fill(url, args.runs, args.tasks)
    say(f"filled in {time.monotonic() - began:.0f} s")
    repo = make_repo(work)
    settings = settings_from_dict({"database": url, "state_dir": str(work / "state"), "isolation": "none",
                                   "repositories": [{"url": str(repo)}],
                                   "loop": {"min_iteration_seconds": 0, "sync_interval_seconds": 3600}}, work)
    store = Store.open(url)
    scheduler = Scheduler(settings, store)
    scheduler.recover()
    settle_heap()  # as serve does once it started
    scheduler.sync()
    loop = scheduler.make_loop("live")
    watched = Watched(store)
    loop.on_run = watched.on_run
    if args.pause is None:
        args.pause = RetentionSettings().pause
    retention = RetentionSettings(runs_days=90, logs_days=None, keep_last=args.keep, batch=args.batch,
                                  pause=args.pause)
    try:
        with running_loop(scheduler, loop, "loop-live"):  # its stop: the scheduler's stop event, a join
            time.sleep(3.0)  # the loop's first runs (interpreter and page caches warm)
            watched.recording = True
            say(f"baseline: the loop alone for {args.baseline_seconds:g} s")
            time.sleep(args.baseline_seconds)
            base_waits, base_cycles, base_spans = watched.take()
            say("pruning while the loop runs")
            pruner = Pruner(retention, store, scheduler.owner)
            began = time.monotonic()
            result = pruner.round()
            prune_seconds = time.monotonic() - began
            prune_waits, prune_cycles, spans = watched.take()
            watched.recording = False
            pruner.stop()
    finally:
        scheduler.close()
    with store.engine.connect() as conn:
        left = conn.execute(sa.text("SELECT count(*) FROM runs WHERE codops = 'old'")).scalar()
    store.close()
    figures = {
        "database": store.engine.dialect.name, "runs_before": args.runs, "old_runs_left": left,
        "batch": args.batch, "pause_s": args.pause, "prune_seconds": round(prune_seconds, 1),
        "removed": result.runs, "batches": result.batches, "skipped": result.skipped,
        "longest_batch_ms": round(result.longest_batch_s * 1000, 2),
        "median_batch_ms": round(statistics.median(result.batch_seconds) * 1000, 2) if result.batch_seconds else 0,
        "baseline": {"store_waits": summary(base_waits), "cycles": summary(base_cycles)},
        "pruning": {"store_waits": summary(prune_waits), "cycles": summary(prune_cycles),
                    "store_waits_during_a_transaction": summary(overlapping(spans, result.transactions)),
                    "longest_wait_per_baseline_window": summary(window_maxima(spans, args.baseline_seconds))},
    }
    figures["baseline"]["longest_wait_per_baseline_window"] = summary(window_maxima(base_spans,
                                                                                    args.baseline_seconds))
    longest = figures["pruning"]["store_waits"]["max_ms"]
    figures["target"] = f"longest store wait while pruning <= {TARGET_MS:g} ms: " + (
        "met" if longest <= TARGET_MS else "MISSED")
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"{figures['database']}: {args.runs:,} old runs -> {left:,} left; removed {result.runs:,} in "
          f"{result.batches} batches of <= {args.batch} over {prune_seconds:.1f} s (pause {args.pause:g} s); "
          f"the pruner's transactions: median {figures['median_batch_ms']} ms, longest {figures['longest_batch_ms']} ms")
    print(f"{'phase':10} {'what':22} {'n':>6} {'median ms':>10} {'p99 ms':>9} {'max ms':>9}")
    for phase in ("baseline", "pruning"):
        for what, label in (("store_waits", "store wait per call"), ("cycles", "cycle per run")):
            f = figures[phase][what]
            print(f"{phase:10} {label:22} {f['n']:6d} {f['median_ms']:10.2f} {f['p99_ms']:9.2f} {f['max_ms']:9.2f}")
    f = figures["pruning"]["store_waits_during_a_transaction"]
    print(f"{'pruning':10} {'wait beside its txn':22} {f['n']:6d} {f['median_ms']:10.2f} {f['p99_ms']:9.2f} "
          f"{f['max_ms']:9.2f}   (store calls that overlapped one of the pruner's transactions)")
    for phase in ("baseline", "pruning"):
        f = figures[phase]["longest_wait_per_baseline_window"]
        print(f"{phase:10} {'longest wait per window':22} {f['n']:6d} {f['median_ms']:10.2f} {f['p99_ms']:9.2f} "
              f"{f['max_ms']:9.2f}   (the longest store wait of each {args.baseline_seconds:g} s window)")
    base_max = figures["baseline"]["store_waits"]["max_ms"]
    print(f"longest store wait: {longest:.1f} ms while pruning, {base_max:.1f} ms without "
          f"({longest / base_max if base_max else float('inf'):.1f}x); {figures['target']}")


if __name__ == "__main__":
    main()
