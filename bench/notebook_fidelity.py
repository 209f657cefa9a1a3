#!/usr/bin/env python
"""A notebook with a few magics, and a task showing one matplotlib figure: the scheduler against papermill.

    python bench/notebook_fidelity.py [--runs 8] [--isolation sandbox|none] [--json]

Builds, in a temporary folder, a real git repository with one organisation (``bench``,
its environment holding matplotlib) and two whole-notebook tasks (``full_notebook: true``):

  magics   four cells using ``%%time``, ``%time``, ``%%capture`` and ``%env``: what
           notebooks written in Jupyter carry; nothing heavy is imported
  figure   ``import matplotlib.pyplot as plt``, one plot, ``plt.show()``: the run keeps
           the figure as its output (a PNG), as papermill's executed notebook does

Each is run ``--runs`` times by the scheduler's loop (``Scheduler.make_loop("bench").tick()``
over that task alone: a real run, stored with its log and outputs) in two ways:

  cold     every run starts its sandbox and interpreter, and imports its modules, when it runs
           (a loop's first task after a pause, or one whose sandbox could not be started ahead)
  ahead    as ``serve`` runs a loop: each run starts the next run's sandbox ahead, which imports
           the task's modules while it waits (``loop.preload_imports``); here it waits while
           papermill and the floor run, as it would while a loop's other tasks run. Its CPU,
           imports included, is counted with the run that uses it.

and by papermill
(``execute_notebook`` of the same notebook in a ``python3`` kernel, which needs matplotlib:
``pip install -e '.[bench]'``), alternating, so both see the same noise on a shared machine.
The figures for each are the median wall seconds per run and the median CPU seconds per run
(this process and every child process it waited for: the task's sandbox and interpreter, or
papermill's kernel), since on a shared, overloaded machine the wall time mostly measures the
other sessions. The ratios are papermill / scheduler. Target (issue 12): papermill / scheduler
>= 20 for both. Nothing is asserted: a benchmark.

To explain the figures, each round also times the **floor**: the notebook's own work in a bare
interpreter of the same environment (``env_python -I -c CODE``: the cells' code without magics,
and for the figure the PNG drawn as Jupyter's inline backend draws it; matplotlib's font list
already built, as a run has it), alternating with the others. No runner that starts a fresh
interpreter per run can go below it, so papermill / floor is the best ratio any such runner
could reach ("ceiling"), and scheduler - floor is what the scheduler itself adds. And for the
figure, the **draw alone**: its plot and PNG in a warm interpreter that drew one figure before
(``DRAW_ALONE``), what every run that shows Jupyter's PNG spends after its imports.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    Events,
    commit_repository,
    definitions,
    environment,
    load_average,
    mode_loop,
    notebook,
    opened_scheduler,
    papermill_runs,
    say,
    write_settings,
)

ORG = "bench"
TARGET = 20.0  # papermill / scheduler must stay at or above this

NOTEBOOKS: dict[str, list[str]] = {
    "magics": [
        "%env BENCH_FLAG=1\nimport os\nvalues = list(range(1000))",
        "%%time\ntotal = sum(values)",
        "%time doubled = [v * 2 for v in values]",
        "%%capture captured\nprint('kept quiet')\nresult = {'total': total, 'n': len(doubled)}",
    ],
    "figure": [
        "import matplotlib.pyplot as plt",
        "plt.plot([1, 2, 3, 4], [3, 1, 4, 2])\nplt.title('one figure')\nplt.show()",
    ],
}


# Each notebook's own work in plain Python (the floor): what its magics do, without them;
# the figure drawn to PNG as the inline backend does at the cell's end.
FLOORS: dict[str, str] = {
    "magics": "import os, time\nos.environ['BENCH_FLAG'] = '1'\nvalues = list(range(1000))\n"
              "total = sum(values)\ndoubled = [v * 2 for v in values]\n"
              "result = {'total': total, 'n': len(doubled)}\nprint('env: BENCH_FLAG=1')",
    "figure": "import io\nimport matplotlib\nmatplotlib.use('agg')\nimport matplotlib.pyplot as plt\n"
              "plt.plot([1, 2, 3, 4], [3, 1, 4, 2])\nplt.title('one figure')\n"
              "plt.gcf().savefig(io.BytesIO(), format='png', bbox_inches='tight')\nplt.close('all')",
}


# The figure's own drawing, after the imports and one figure drawn before (as a sandbox
# started ahead leaves it): plot, title and the PNG as Jupyter's inline backend prints it
# (IPython's print_figure: the figure's dpi and colours, bbox_inches="tight"). Printed: the
# median of five, in seconds. What no runner that shows Jupyter's PNG can go below once its
# imports are done, so papermill / this is the best ratio any such runner can reach ahead.
DRAW_ALONE = """
import io, statistics, time
import matplotlib
matplotlib.use("agg")
import matplotlib.pyplot as plt
def draw():
    plt.plot([1, 2, 3, 4], [3, 1, 4, 2])
    plt.title("one figure")
    fig = plt.gcf()
    fig.canvas.print_figure(io.BytesIO(), format="png", facecolor=fig.get_facecolor(),
                            edgecolor=fig.get_edgecolor(), dpi=fig.dpi, bbox_inches="tight")
    plt.close("all")
draw()
times = []
for _ in range(5):
    started = time.perf_counter()
    draw()
    times.append(time.perf_counter() - started)
print(statistics.median(times))
"""


def draw_alone(python: Path, home: Path) -> float:
    """Seconds to plot and print the figure in a warm interpreter (``DRAW_ALONE``)."""
    done = subprocess.run([str(python), "-I", "-c", DRAW_ALONE], env={"PATH": "/usr/bin:/bin", "HOME": str(home)},
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"the figure's draw failed: {done.stderr[-2000:]}")
    return float(done.stdout.split()[-1])


def floor_run(python: Path, code: str, home: Path) -> None:
    """One floor run: ``python -I -c code`` with ``home`` as HOME (matplotlib's cache in it)."""
    done = subprocess.run([str(python), "-I", "-c", code], env={"PATH": "/usr/bin:/bin", "HOME": str(home)},
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"the floor failed: {done.stderr[-2000:]}")


def floor_home(root: Path, env_path: Path) -> Path:
    """A HOME whose matplotlib cache holds the font list built with the environment, as a run's has."""
    from peach_tasks.executors.environments import MATPLOTLIB_SEED

    home = root / "floor-home"
    cache = home / ".cache" / "matplotlib"
    cache.mkdir(parents=True)
    for seed in (env_path / MATPLOTLIB_SEED).glob("fontlist-*.json"):
        shutil.copyfile(seed, cache / seed.name)
    return home


def cpu_seconds() -> float:
    """CPU time of this process and of the children it has waited for (their descendants included)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def build_repository(root: Path) -> dict[str, Path]:
    """The git repository and scheduler.yaml; returns each task's notebook."""
    files = {f"{name}.ipynb": notebook(cells) for name, cells in NOTEBOOKS.items()}
    tasks = {name: {"executor": "python", "notebook": f"{name}.ipynb", "full_notebook": True} for name in NOTEBOOKS}
    files["peach.yaml"] = definitions(ORG, tasks, dependencies=["matplotlib"])
    repo = commit_repository(root, files, "bench notebooks")
    write_settings(root)
    return {name: repo / f"{name}.ipynb" for name in NOTEBOOKS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Time a notebook with magics and a task showing one matplotlib figure, run by the "
                    "scheduler and by papermill in the same invocation.",
        epilog=f"Target: papermill/scheduler >= {TARGET:g} for both notebooks. Needs the bench extra.")
    parser.add_argument("--runs", type=int, default=8, help="timed runs of each notebook by each (default 8)")
    parser.add_argument("--isolation", choices=("sandbox", "none"), default="sandbox",
                        help="the scheduler's isolation (default: sandbox, as in production)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="peach-bench-fidelity-"))
    paths = build_repository(root)
    events = Events()
    seconds: dict[str, dict[str, list[float]]] = {
        name: {"scheduler": [], "papermill": [], "floor": [], "ahead": [],
               "scheduler_cpu": [], "papermill_cpu": [], "floor_cpu": [], "ahead_cpu": []}
        for name in NOTEBOOKS}
    checks: dict[str, Any] = {}
    drawn: list[float] = []  # the figure's draw alone, once per round (DRAW_ALONE)
    with opened_scheduler(root / "scheduler.yaml", progress=say, on_run=events) as scheduler:
        store = scheduler.store
        sandbox = scheduler.sandbox if args.isolation == "sandbox" else None
        if args.isolation == "sandbox" and sandbox is None:
            say(f"no sandbox on this host: {scheduler._unsandboxed}; measuring isolation: none")
        say("sync (builds the organisation's environment with matplotlib; not timed)")
        snapshot = scheduler.sync()
        if len(snapshot.loops.get(ORG, ())) != len(NOTEBOOKS):
            raise SystemExit(f"the tasks did not load: {store.problems()}")
        loops = {name: mode_loop(scheduler, ORG, sandbox, [(ORG, name)]) for name in NOTEBOOKS}
        ahead = {name: mode_loop(scheduler, ORG, sandbox, [(ORG, name)]) for name in NOTEBOOKS}
        env = environment(scheduler, ORG)
        home = floor_home(root, env.path)
        for name, loop in loops.items():  # warm-up, untimed: the first start reads every file cold
            loop.tick()
            ahead[name].tick(carry=True)  # and starts the first timed run's sandbox ahead
            floor_run(env.python, FLOORS[name], home)
            warm = root / "papermill" / name / "warm-up"
            warm.mkdir(parents=True)
            _, why = papermill_runs(paths[name], warm, 0)  # and papermill's machinery is imported
            if why is not None:
                raise SystemExit(f"papermill {why}")
        for round_ in range(args.runs):
            for name in (NOTEBOOKS if round_ % 2 == 0 else reversed(list(NOTEBOOKS))):
                started, cpu = time.perf_counter(), cpu_seconds()
                if loops[name].tick() != 1:
                    raise SystemExit(f"{name}: the loop did not run it")
                seconds[name]["scheduler"].append(time.perf_counter() - started)
                seconds[name]["scheduler_cpu"].append(cpu_seconds() - cpu)
                run = store.run(events.run_ids[-1])
                if run["status"] != "SUCCESS":
                    raise SystemExit(f"{name}: run {run['id']} ended {run['status']}: {run['error']}\n"
                                     f"{store.log(run['id'])}")
                out = root / "papermill" / name / str(round_)
                out.mkdir(parents=True)
                started, cpu = time.perf_counter(), cpu_seconds()
                _, why = papermill_runs(paths[name], out, 0)  # one execution (its "warm-up" is ours to time)
                if why is not None:
                    raise SystemExit(f"papermill {why}")
                seconds[name]["papermill"].append(time.perf_counter() - started)
                seconds[name]["papermill_cpu"].append(cpu_seconds() - cpu)
                started, cpu = time.perf_counter(), cpu_seconds()
                floor_run(env.python, FLOORS[name], home)
                seconds[name]["floor"].append(time.perf_counter() - started)
                seconds[name]["floor_cpu"].append(cpu_seconds() - cpu)
                if name == "figure":
                    drawn.append(draw_alone(env.python, home))
                started, cpu = time.perf_counter(), cpu_seconds()
                if ahead[name].tick(carry=True) != 1:
                    raise SystemExit(f"{name}: the loop did not run it")
                seconds[name]["ahead"].append(time.perf_counter() - started)
                seconds[name]["ahead_cpu"].append(cpu_seconds() - cpu)
                run = store.run(events.run_ids[-1])
                if run["status"] != "SUCCESS" or not (run.get("details") or {}).get("sandbox_started_ahead") \
                        and sandbox is not None:
                    raise SystemExit(f"{name}: run {run['id']} ended {run['status']} "
                                     f"(started ahead: {(run.get('details') or {}).get('sandbox_started_ahead')})")
        for loop in ahead.values():
            loop.drop_warm()
        # What each notebook's last two runs (one cold, one started ahead) kept as outputs.
        checks = {name: [[o["mime_type"] for o in store.run_outputs(run["id"])] for run in store.runs(ORG, name, limit=2)]
                  for name in NOTEBOOKS}

    figures: dict[str, Any] = {}
    for name, timed in seconds.items():
        ours, theirs = statistics.median(timed["scheduler"]), statistics.median(timed["papermill"])
        ours_cpu, theirs_cpu = statistics.median(timed["scheduler_cpu"]), statistics.median(timed["papermill_cpu"])
        floor, floor_cpu = statistics.median(timed["floor"]), statistics.median(timed["floor_cpu"])
        early, early_cpu = statistics.median(timed["ahead"]), statistics.median(timed["ahead_cpu"])
        figures[name] = {"scheduler_ms": round(ours * 1000, 1), "papermill_ms": round(theirs * 1000, 1),
                         "papermill_over_scheduler": round(theirs / ours, 1),
                         "scheduler_cpu_ms": round(ours_cpu * 1000, 1), "papermill_cpu_ms": round(theirs_cpu * 1000, 1),
                         "papermill_over_scheduler_cpu": round(theirs_cpu / ours_cpu, 1), "target": TARGET,
                         "meets_target": theirs / ours >= TARGET, "runs": len(timed["scheduler"]),
                         "outputs_of_last_two_runs": checks.get(name),
                         "floor_ms": round(floor * 1000, 1), "floor_cpu_ms": round(floor_cpu * 1000, 1),
                         "ceiling": round(theirs / floor, 1), "ceiling_cpu": round(theirs_cpu / floor_cpu, 1),
                         "scheduler_minus_floor_ms": round((ours - floor) * 1000, 1),
                         "scheduler_minus_floor_cpu_ms": round((ours_cpu - floor_cpu) * 1000, 1),
                         "ahead_ms": round(early * 1000, 1), "papermill_over_ahead": round(theirs / early, 1),
                         "ahead_cpu_ms": round(early_cpu * 1000, 1),
                         "papermill_over_ahead_cpu": round(theirs_cpu / early_cpu, 1),
                         "ahead_meets_target": theirs / early >= TARGET}
    draw, papermill_figure = statistics.median(drawn), statistics.median(seconds["figure"]["papermill"])
    figures["figure"].update(draw_alone_ms=round(draw * 1000, 1),
                             papermill_over_draw_alone=round(papermill_figure / draw, 1))
    report = {"isolation": "sandbox" if sandbox is not None else "none", "python": platform.python_version(),
              "load_average": load_average(), "notebooks": figures}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"isolation: {report['isolation']}, load average {report['load_average']}")
        print("cold (every run starts its sandbox, interpreter and imports when it runs):")
        print(f"{'notebook':<10}{'scheduler':>12}{'papermill':>12}{'ratio':>8}   {'CPU: scheduler':>15}"
              f"{'papermill':>12}{'ratio':>8}   target >= {TARGET:g} (wall)")
        for name, row in figures.items():
            print(f"{name:<10}{row['scheduler_ms']:>9.1f} ms{row['papermill_ms']:>9.1f} ms"
                  f"{row['papermill_over_scheduler']:>7.1f}x   {row['scheduler_cpu_ms']:>12.1f} ms"
                  f"{row['papermill_cpu_ms']:>9.1f} ms{row['papermill_over_scheduler_cpu']:>7.1f}x   "
                  f"{'met' if row['meets_target'] else 'NOT met'}"
                  f"  (outputs kept by the last two runs: "
                  f"{'; '.join(', '.join(kept) or 'none' for kept in row['outputs_of_last_two_runs'] or [])})")
        print("started ahead (as serve runs a loop: the sandbox and the task's imports while the previous work ran):")
        for name, row in figures.items():
            print(f"{name:<10}{row['ahead_ms']:>9.1f} ms{row['papermill_ms']:>9.1f} ms"
                  f"{row['papermill_over_ahead']:>7.1f}x   {row['ahead_cpu_ms']:>12.1f} ms"
                  f"{row['papermill_cpu_ms']:>9.1f} ms{row['papermill_over_ahead_cpu']:>7.1f}x   "
                  f"{'met' if row['ahead_meets_target'] else 'NOT met'}")
        print("floor: the notebook's own work in a bare interpreter (env_python -I -c CODE); ceiling: papermill / floor, "
              "the best ratio of any runner starting a fresh interpreter")
        print(f"{'notebook':<10}{'floor':>12}{'ceiling':>9}{'sched-floor':>14}   {'CPU: floor':>11}{'ceiling':>9}"
              f"{'sched-floor':>14}")
        for name, row in figures.items():
            print(f"{name:<10}{row['floor_ms']:>9.1f} ms{row['ceiling']:>8.1f}x{row['scheduler_minus_floor_ms']:>11.1f} ms"
                  f"   {row['floor_cpu_ms']:>8.1f} ms{row['ceiling_cpu']:>8.1f}x{row['scheduler_minus_floor_cpu_ms']:>11.1f} ms")
        row = figures["figure"]
        print(f"the figure's plot and PNG alone, in a warm interpreter (after one figure drawn): "
              f"{row['draw_alone_ms']:.1f} ms; papermill / that = {row['papermill_over_draw_alone']:.1f}x, the best "
              f"any runner showing Jupyter's PNG can reach ahead "
              f"({row['ahead_ms'] - row['draw_alone_ms']:.1f} ms of the "
              f"ahead run is everything else)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
