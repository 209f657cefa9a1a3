#!/usr/bin/env python
"""What the freshness and alert bookkeeping adds to a run's end, as ratios in one invocation.

    python bench/alert_journal.py [--runs 2000] [--database URL] [--json]

``Store.finish_run`` keeps each task's last success and failure streak up to date and, with
alert rules, journals the change, all in the run's own transaction. This times
``start_run`` + ``finish_run`` of trivial runs on one store in three alternating modes:

  (a) baseline: the run's end without the task's row (as before freshness: the same
      transaction minus the bookkeeping, via ``retried=True``, which skips it);
  (b) bookkeeping: the last success / streak update, alerting off;
  (c) journal: alerting on, every run a FAILURE (an ``alert_events`` row each).

Medians per run; (b)/(a) and (c)/(a) are the figures (the machine is shared: absolute
milliseconds mean little).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from peach_tasks.model import Executor, Outcome, RunStatus, TaskSpec
from peach_tasks.store import Store
from peach_tasks.store.store import TaskRegistration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2000, help="runs per mode")
    parser.add_argument("--database", help="a SQLAlchemy URL (default: SQLite in a temporary folder)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store = Store.open(args.database or f"sqlite:///{Path(folder) / 'peach.db'}")
        spec = TaskSpec("bench", "t", "nb.ipynb", "main", executor=Executor.PYTHON)
        store.register_tasks([TaskRegistration(spec, "v", 3600.0)])
        times: dict[str, list[float]] = {"baseline": [], "bookkeeping": [], "journal": []}
        modes = list(times)
        for index in range(args.runs * len(modes)):
            mode = modes[index % len(modes)]
            store.alerting = mode == "journal"
            outcome = Outcome(RunStatus.FAILURE if mode == "journal" else RunStatus.SUCCESS, error="boom")
            started = time.perf_counter()
            run = store.start_run(spec, "v", "c", "bench")
            store.finish_run(run, outcome, retried=mode == "baseline")
            times[mode].append(time.perf_counter() - started)
        store.close()
    medians = {mode: statistics.median(values) * 1000 for mode, values in times.items()}
    result = {"runs_per_mode": args.runs, "median_ms": medians,
              "bookkeeping_ratio": medians["bookkeeping"] / medians["baseline"],
              "journal_ratio": medians["journal"] / medians["baseline"]}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for mode, value in medians.items():
        print(f"{mode:12} {value:7.3f} ms per run (start + finish), ratio {value / medians['baseline']:.2f}")


if __name__ == "__main__":
    main()
