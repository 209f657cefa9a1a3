#!/usr/bin/env python
"""Latency of the web API's views over a large SQLite store, as p50/p95 per endpoint.

    python bench/views.py [--runs 1000000] [--tasks 10000] [--orgs 100] [--requests 300] [--json]
                          [--db PATH]   # keep the filled database there and reuse it next time

Fills a SQLite store (schema made by the real migrations) with RUNS runs over TASKS
tasks in ORGS organisations, as a loop writes them (run ids rise with time, every task
once per iteration; 90 % successes, 8 % failures, 2 % timeouts), each run with a
one-line log; the last run of BIG_LOGS tasks has a log at the store's bound (1 MiB head,
4 MiB tail, more dropped between). Then starts ``peach-tasks web`` as its own process on
a free loopback port and times, over one keep-alive HTTP connection, requests picked at
random (organisations, tasks, runs), endpoints interleaved:

  tasks of one organisation     /api/organisations/{org}/tasks                (target p95 <= 100 ms)
  a task's history page         /api/organisations/{org}/tasks/{task}/runs?limit=50   (target)
  the last run's log            /api/runs/{last}/log                          (target)
  and, for information: an older history page, the dashboard's request for a large
  log (its last 256 KiB), the first 1 MiB of a large log, all logs of a task, the
  organisations list, the dashboard's home page (/api/overview: every organisation's counts
  and the newest 100 failing tasks); and /metrics, the whole text for a token that sees every organisation
  (target p95 <= 100 ms; its series count and size are printed), plus the first scrape after
  the server started, which waits for its first read of the per-task totals.

While the requests are timed, a thread of this script ends runs as a loop does
(``Store.start_run`` + ``finish_run``, ``--finishes`` per second, random tasks), so the
server's metrics refresher has new totals to read and render between the scrapes.

The baseline, measured in the same run, is ``/api/health`` (HTTP + framework, no
query); each line also prints its p95 as a multiple of the baseline's. Nothing is
asserted: it is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from common import say

TARGET_MS = 100.0
BIG_LOGS = 20
STATUSES = ["SUCCESS"] * 90 + ["FAILURE"] * 8 + ["TIMEOUT"] * 2
CHUNK = 4096


def stamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) + f".{int(seconds % 1 * 1e6):06d}"


def fill(db: Path, runs: int, tasks: int, orgs: int, seed: int = 7) -> None:
    """Create the schema with the store's migrations, then bulk-insert as a loop would write."""
    from peach_tasks.store import Store

    Store.open(f"sqlite:///{db}").close()
    rng = random.Random(seed)
    names = [(f"org{o:03d}", f"task{t:05d}") for t in range(tasks) for o in [t % orgs]]
    rounds = runs // tasks
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    start = time.time() - rounds * tasks * 30.0
    now = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())

    def run_rows() -> Any:
        run_id = 0
        for r in range(rounds):
            for codops, task in names:
                run_id += 1
                begun = start + run_id * 30.0
                status = rng.choice(STATUSES)
                duration = 3600.0 if status == "TIMEOUT" else rng.lognormvariate(2.5, 1.0)
                yield (run_id, codops, task, codops, "python", f"{r:07x}", f"{r:040x}", stamp(begun),
                       stamp(begun + duration), status, duration, 0 if status == "SUCCESS" else 1, None,
                       None if status == "SUCCESS" else "RuntimeError: bench", None, None, "bench:1", 64, 0)

    with con:
        con.executemany("INSERT INTO runs (id, codops, task, loop, executor, version, \"commit\", started_at, "
                        "finished_at, status, duration_s, exit_code, signal, error, result, details, owner, "
                        "log_bytes, log_dropped_bytes) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", run_rows())
        con.executemany("INSERT INTO log_chunks (run_id, seq, part, nbytes, data) VALUES (?, 1, 'h', 64, ?)",
                        ((i, f"2024-01-01T00:00:00.000Z run {i:09d} did its work and ended\n"[:63] + "\n")
                         for i in range(1, rounds * tasks + 1)))
        last = {key: (rounds - 1) * tasks + index + 1 for index, key in enumerate(names)}
        con.executemany("INSERT INTO tasks (codops, name, loop, executor, state, active, repo, notebook, "
                        "source_file, source_line, version, last_run_id, updated_at) "
                        "VALUES (?, ?, ?, 'python', 'FINISHED', 1, 'algos', ?, 'peach.yaml', 3, ?, ?, ?)",
                        ((c, t, c, f"{t}.ipynb", f"{rounds - 1:07x}", last[(c, t)], now) for c, t in names))
        sum_totals(con)
        line = ("x" * 120 + "\n").encode()
        block = (line * (CHUNK // len(line) + 1))[:CHUNK].decode()
        for codops, task in names[:BIG_LOGS]:
            run_id = last[(codops, task)]
            con.execute("DELETE FROM log_chunks WHERE run_id = ?", (run_id,))
            chunks = [(run_id, s, "h", CHUNK, block) for s in range(1, 257)]
            chunks += [(run_id, s, "t", CHUNK, block) for s in range(300, 300 + 1024)]
            con.executemany("INSERT INTO log_chunks (run_id, seq, part, nbytes, data) VALUES (?,?,?,?,?)", chunks)
            con.execute("UPDATE runs SET log_bytes = ?, log_dropped_bytes = ? WHERE id = ?",
                        (7 << 20, 2 << 20, run_id))
    con.execute("ANALYZE")
    con.close()


def sum_totals(con: sqlite3.Connection) -> None:
    """The per-task totals the loop's finish_run would have kept (store/totals.py), summed in one go."""
    from peach_tasks.store.schema import BUCKET_COLUMNS, DURATION_BUCKETS

    edges = [None, *DURATION_BUCKETS, None]
    buckets = []
    for i in range(len(BUCKET_COLUMNS)):
        low, high = edges[i], edges[i + 1]
        cond = " AND ".join(([f"duration_s > {low}"] if low is not None else [])
                            + ([f"duration_s <= {high}"] if high is not None else []))
        buckets.append(f"SUM(CASE WHEN {cond} THEN 1 ELSE 0 END)")
    con.execute("DELETE FROM run_totals")
    con.execute(f"INSERT INTO run_totals (codops, task, status, runs, timed, duration_sum, {', '.join(BUCKET_COLUMNS)}, "
                f"last_finished_at, seq) SELECT codops, task, status, COUNT(*), COUNT(duration_s), "
                f"COALESCE(SUM(duration_s), 0), {', '.join(buckets)}, MAX(finished_at), "
                f"ROW_NUMBER() OVER (ORDER BY codops, task, status) FROM runs WHERE status != 'RUNNING' "
                f"GROUP BY codops, task, status")


def finish_runs(db: Path, tasks: list[tuple[str, str, int]], per_second: float, stop: threading.Event) -> None:
    """End runs of random tasks, as loops do, until ``stop``."""
    from peach_tasks.model import Executor, Outcome, RunStatus, TaskSpec
    from peach_tasks.store import Store

    if per_second <= 0:
        return
    store = Store.open(f"sqlite:///{db}", migrate=False)
    rng = random.Random(5)
    try:
        while not stop.wait(1.0 / per_second):
            codops, name, _ = rng.choice(tasks)
            spec = TaskSpec(codops, name, f"{name}.ipynb", "main", executor=Executor.PYTHON)
            run_id = store.start_run(spec, "bench", "0" * 40, "bench:writer")
            store.finish_run(run_id, Outcome(rng.choice([RunStatus.SUCCESS] * 9 + [RunStatus.FAILURE])))
    finally:
        store.close()


def series_count(text: str) -> int:
    """Samples in a Prometheus text exposition (one line each, comments aside)."""
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def start_server(config: Path) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-c", "from peach_tasks.cli import main; main()"]
    proc = subprocess.Popen([*command, "--config", str(config), "web", "--port", "0"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        found = re.search(r"dashboard on (http://\S+?)/ ", line)
        if found:
            return proc, found.group(1)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit("peach-tasks web did not start")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--orgs", type=int, default=100)
    parser.add_argument("--requests", type=int, default=300, help="timed requests per endpoint")
    parser.add_argument("--db", type=Path, default=None, help="keep the database here (reused when present)")
    parser.add_argument("--finishes", type=float, default=20.0, help="runs ended per second while timing")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="peach-bench-views-"))
    try:
        run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # a --db database lives elsewhere and is kept


def run(args: argparse.Namespace, workdir: Path) -> None:
    import httpx

    db = args.db.resolve() if args.db else workdir / "peach.db"
    if not db.exists():
        say(f"filling {db}: {args.runs:,} runs, {args.tasks:,} tasks, {args.orgs} organisations")
        began = time.monotonic()
        fill(db, args.runs, args.tasks, args.orgs)
        say(f"filled in {time.monotonic() - began:.0f} s ({db.stat().st_size >> 20} MiB)")
    from peach_tasks.store import Store

    Store.open(f"sqlite:///{db}", migrate=True).close()  # a kept --db made by an older version: upgraded
    config = workdir / "scheduler.yaml"
    config.write_text(f"database: sqlite:///{db}\nstate_dir: {workdir / 'state'}\n")
    con = sqlite3.connect(db)
    tasks = con.execute("SELECT codops, name, last_run_id FROM tasks ORDER BY codops, name").fetchall()
    big = [r[0] for r in con.execute("SELECT DISTINCT run_id FROM log_chunks WHERE seq > 1")]
    total_runs = con.execute("SELECT max(id) FROM runs").fetchone()[0]
    con.close()
    orgs = sorted({t[0] for t in tasks})
    rng = random.Random(11)
    proc, url = start_server(config)
    say(f"peach-tasks web on {url}; {total_runs:,} runs; timing {args.requests} requests per endpoint")

    def task_pick() -> tuple[str, str, int]:
        return rng.choice(tasks)

    endpoints: dict[str, tuple[Callable[[], str], bool]] = {
        "baseline /api/health": (lambda: "/api/health", False),
        "tasks of one organisation": (lambda: f"/api/organisations/{rng.choice(orgs)}/tasks", True),
        "a task's history page (newest 50)": (
            lambda: "/api/organisations/{0}/tasks/{1}/runs?limit=50".format(*task_pick()), True),
        "the last run's log": (lambda: f"/api/runs/{task_pick()[2]}/log", True),
        "an older history page (before=...)": (
            lambda: "/api/organisations/{0}/tasks/{1}/runs?limit=50&before={2}".format(
                *(lambda t: (t[0], t[1], t[2] - rng.randrange(len(tasks), total_runs // 2)))(task_pick())), False),
        "large log, dashboard's tail=256KiB": (lambda: f"/api/runs/{rng.choice(big)}/log?tail=262144", False),
        "large log, first 1 MiB": (lambda: f"/api/runs/{rng.choice(big)}/log", False),
        "all logs of a task (10 runs)": (lambda: "/api/organisations/{0}/tasks/{1}/logs".format(*task_pick()), False),
        "organisations list": (lambda: "/api/organisations", False),
        "the dashboard's overview (every org)": (lambda: "/api/overview", False),
        "/metrics (whole, every organisation)": (lambda: "/metrics", True),
    }
    times: dict[str, list[float]] = {name: [] for name in endpoints}
    stop = threading.Event()
    writer = threading.Thread(target=finish_runs, args=(db, tasks, args.finishes, stop), daemon=True)
    writer.start()
    try:
        with httpx.Client(base_url=url, timeout=120) as client:
            began = time.perf_counter()
            first = client.get("/metrics")  # waits for the server's first read of the totals
            first.raise_for_status()
            first_scrape = (time.perf_counter() - began) * 1000.0
            series = series_count(first.text)
            metrics_bytes = len(first.content)
            for name, (path, _) in endpoints.items():  # warm-up: connections, caches, page cache
                for _ in range(10):
                    client.get(path()).raise_for_status()
            for _ in range(args.requests):
                for name, (path, _) in endpoints.items():
                    target = path()
                    began = time.perf_counter()
                    response = client.get(target)
                    elapsed = time.perf_counter() - began
                    response.raise_for_status()
                    times[name].append(elapsed * 1000.0)
    finally:
        stop.set()
        writer.join(timeout=30)
        proc.terminate()
        proc.wait(timeout=30)
    base = percentile(times["baseline /api/health"], 0.95)
    figures = []
    for name, (_, targeted) in endpoints.items():
        values = times[name]
        p95 = percentile(values, 0.95)
        figures.append({"endpoint": name, "p50_ms": round(statistics.median(values), 2), "p95_ms": round(p95, 2),
                        "max_ms": round(max(values), 2), "p95_vs_baseline": round(p95 / base, 1),
                        "target": f"p95 <= {TARGET_MS:g} ms: {'met' if p95 <= TARGET_MS else 'MISSED'}"
                        if targeted else ""})
    figures.append({"endpoint": "/metrics, first scrape after start", "p50_ms": round(first_scrape, 2),
                    "p95_ms": round(first_scrape, 2), "max_ms": round(first_scrape, 2),
                    "p95_vs_baseline": round(first_scrape / base, 1), "target": ""})
    if args.json:
        print(json.dumps({"runs": total_runs, "tasks": len(tasks), "organisations": len(orgs),
                          "requests": args.requests, "metrics_series": series, "metrics_bytes": metrics_bytes,
                          "figures": figures}, indent=2))
        return
    print(f"{total_runs:,} runs, {len(tasks):,} tasks, {len(orgs)} organisations; "
          f"{args.requests} requests per endpoint, one keep-alive connection")
    print(f"/metrics: {series:,} series ({series / len(tasks):.1f} per task), {metrics_bytes / 1e6:.1f} MB per scrape")
    print(f"{'endpoint':40} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'p95/base':>9}  target")
    for f in figures:
        print(f"{f['endpoint']:40} {f['p50_ms']:8.1f} {f['p95_ms']:8.1f} {f['max_ms']:8.1f} "
              f"{f['p95_vs_baseline']:8.1f}x  {f['target']}")


if __name__ == "__main__":
    main()
