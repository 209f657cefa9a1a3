#!/usr/bin/env python
"""What a flood of output costs the scheduler: capture throughput and the scheduler's memory.

    python bench/log_flood.py [--lines-mb 300] [--no-newlines-mb 300] [--line-mb 1024] [--json]

Builds, in a temporary folder, a real git repository with one organisation (``flood``) and
three python tasks, each its own notebook, that write to stdout as fast as they can:

  lines        ``--lines-mb`` MB of 100-byte lines (99 characters and a newline), in 1 MiB writes
  no_newlines  ``--no-newlines-mb`` MB without any newline, in 64 KiB writes (a progress
               display that never ends its line)
  one_line     a single line of ``--line-mb`` MB, written by one call, then its newline

Each case runs in a fresh process of its own (this script started again with ``--case``),
which is the scheduler: the real ``Scheduler`` syncs the repository (the organisation's
empty uv environment is built by the first case and reused, not timed), then runs one
iteration of the ``flood`` loop restricted to that task (``make_loop(..., keep=...)``), as
``serve`` and ``run-once`` do, sandboxed unless the host has no sandbox. Measured in that
process:

  idle RSS      its resident memory after the sync, just before the run (VmRSS)
  peak growth   its peak resident memory during the run (VmHWM, reset to the idle RSS through
                /proc/self/clear_refs just before the run) minus the idle RSS
  kept          its resident memory after the run minus the idle RSS
  throughput    the bytes the task wrote / the run's duration as the store recorded it
                (start of the run to its end, sandbox start-up included)

and from the store: the run's status, log size (``log_bytes``), what the bounded log dropped,
and the notes saying that over-long lines were cut.

The baseline, measured in the same invocation: the same task code run by the environment's
interpreter as a plain process, its output read in 1 MiB reads from a pipe grown to 1 MiB (as
the scheduler's) and thrown away by this process (``pipe ceiling``): what the machine can move
through a pipe with no scheduler, no sandbox and no store. The ratio scheduler/ceiling says how
much of that the scheduler keeps; the scheduler's figure also holds the sandbox's start
(tens of ms), so small outputs understate it.

Targets: capture throughput >= 100 MB/s and peak RSS growth <= 64 MiB in every case.
MB is 10**6 bytes, MiB 2**20. Nothing here is asserted: it is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    commit_repository,
    definitions,
    load_average,
    notebook,
    opened_scheduler,
    say,
    workspace,
    write_settings,
)

ORG = "flood"
THROUGHPUT_TARGET = 100.0  # MB/s, at least
GROWTH_TARGET_MIB = 64.0  # peak RSS growth of the scheduler, at most
MB = 1000 * 1000
MIB = 1 << 20

# The task code of each case; SIZE is replaced by the case's byte count. Each writes
# straight to the stdout pipe (bootstrap.py made sys.stdout write-through).
TASKS = {
    "lines": (
        "import sys\n"
        "def main():\n"
        "    out = sys.stdout.buffer\n"
        "    block = (b'x' * 99 + b'\\n') * 10486  # 1,048,600 bytes of 100-byte lines\n"
        "    left = SIZE\n"
        "    while left > 0:\n"
        "        piece = block if left >= len(block) else block[:left - left % 100]\n"
        "        if not piece:\n"
        "            break\n"
        "        out.write(piece)\n"
        "        left -= len(piece)\n"
        "    out.flush()\n"
    ),
    "no_newlines": (
        "import sys\n"
        "def main():\n"
        "    out = sys.stdout.buffer\n"
        "    block = b'x' * 65536\n"
        "    left = SIZE\n"
        "    while left > 0:\n"
        "        out.write(block[:left])\n"
        "        left -= 65536\n"
        "    out.flush()\n"
    ),
    "one_line": (
        "import sys\n"
        "def main():\n"
        "    out = sys.stdout.buffer\n"
        "    out.write(b'x' * SIZE)\n"
        "    out.write(b'\\n')\n"
        "    out.flush()\n"
    ),
}
DESCRIBED = {
    "lines": "100-byte lines, 1 MiB writes",
    "no_newlines": "no newline, 64 KiB writes",
    "one_line": "one line, one write",
}


def written(case: str, size: int) -> int:
    """The bytes the task of ``case`` writes for ``size``."""
    if case == "lines":
        return size - size % 100
    if case == "one_line":
        return size + 1
    return size


def task_code(case: str, size: int) -> str:
    return TASKS[case].replace("SIZE", str(size))


# -- the repository -----------------------------------------------------------------
def build_repository(root: Path, sizes: dict[str, int], timeout: int) -> None:
    files = {f"{case}.ipynb": notebook([task_code(case, size)]) for case, size in sizes.items()}
    files["peach.yaml"] = definitions(ORG, {case: {"executor": "python", "notebook": f"{case}.ipynb", "method": "main"}
                                            for case in sizes})
    commit_repository(root, files, "flood tasks")
    write_settings(root, timeouts={"task": timeout})


# -- one case, in its own process (the scheduler) -------------------------------------
def memory_kib() -> dict[str, int]:
    values = {}
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


def reset_peak() -> bool:
    """Set this process's VmHWM back to its current RSS (Linux 4.0+)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def run_case(root: Path, case: str) -> dict[str, Any]:
    import gc

    with opened_scheduler(root / "scheduler.yaml") as scheduler:
        store = scheduler.store
        synced = time.perf_counter()
        snapshot = scheduler.sync()
        sync_seconds = time.perf_counter() - synced
        if (ORG, case) not in snapshot.tasks:
            raise SystemExit(f"task {ORG}/{case} is not in the snapshot; problems: {store.problems()}")
        env = scheduler.envs.current(ORG)
        loop = scheduler.make_loop(ORG, keep=lambda key: key == (ORG, case))
        gc.collect()
        idle = memory_kib()["VmRSS"]
        peak_reset = reset_peak()
        started = time.perf_counter()
        loop.tick()
        wall = time.perf_counter() - started
        after = memory_kib()
        run = store.runs(ORG, case, limit=1)[0]
        log = store.log(run["id"]) or ""
        cut_notes = [line for line in log.splitlines() if "peach-tasks:" in line and " cut" in line]
        return {
            "case": case,
            "sandboxed": scheduler.sandbox is not None,
            "env_python": str(env.python) if env else None,
            "sync_seconds_untimed": round(sync_seconds, 2),
            "status": run["status"],
            "error": run["error"],
            "duration_s": run["duration_s"],
            "tick_wall_s": round(wall, 3),
            "log_bytes": run["log_bytes"],
            "log_dropped_bytes": run["log_dropped_bytes"],
            "stored_log_chars": len(log),
            "cut_notes": len(cut_notes),
            "first_cut_note": cut_notes[0][25:] if cut_notes else None,
            "idle_rss_mib": round(idle / 1024, 1),
            "peak_rss_mib": round(after["VmHWM"] / 1024, 1),
            "peak_measured": "VmHWM reset before the run" if peak_reset else "VmHWM since start (no clear_refs)",
            "peak_growth_mib": round((after["VmHWM"] - idle) / 1024, 1),
            "kept_mib": round((after["VmRSS"] - idle) / 1024, 1),
        }


# -- the baseline ---------------------------------------------------------------------
def pipe_ceiling(python: str, case: str, size: int, cwd: Path) -> float:
    """Seconds for the task's code, run plainly, to push its output through a pipe that this
    process reads in 1 MiB reads and throws away (the pipe grown to 1 MiB, as the scheduler's)."""
    import fcntl

    code = task_code(case, size) + "main()\n"
    started = time.perf_counter()
    proc = subprocess.Popen([python, "-I", "-c", code], cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, MIB)
    total = 0
    while True:
        chunk = os.read(fd, MIB)
        if not chunk:
            break
        total += len(chunk)
    proc.wait()
    elapsed = time.perf_counter() - started
    if proc.returncode != 0 or total != written(case, size):
        raise SystemExit(f"baseline {case}: exit {proc.returncode}, {total} bytes read")
    return elapsed


# -- main -----------------------------------------------------------------------------
def run(root: Path, sizes: dict[str, int], timeout: int) -> dict[str, Any]:
    say(f"building the repository of {len(sizes)} tasks in {root}")
    build_repository(root, sizes, timeout)
    load_start = load_average()
    cases: dict[str, Any] = {}
    for case in sizes:
        say(f"case {case}: {sizes[case] / MB:g} MB ({DESCRIBED[case]}), the scheduler in a process of its own")
        child = subprocess.run([sys.executable, os.path.abspath(__file__), "--case", case, "--root", str(root)],
                               stdout=subprocess.PIPE, check=False)
        if child.returncode != 0:
            raise SystemExit(f"case {case} failed (exit {child.returncode})")
        cases[case] = json.loads(child.stdout)
    python = next((c["env_python"] for c in cases.values() if c["env_python"]), sys.executable)
    for case, size in sizes.items():
        say(f"baseline {case}: the same code, plain process, output read and dropped")
        seconds = pipe_ceiling(python, case, size, root)
        got = cases[case]
        nbytes = written(case, size)
        got["task_bytes"] = nbytes
        got["throughput_mb_s"] = round(nbytes / MB / got["duration_s"], 1) if got["duration_s"] else None
        got["ceiling_s"] = round(seconds, 3)
        got["ceiling_mb_s"] = round(nbytes / MB / seconds, 1)
        got["scheduler_over_ceiling"] = (round(got["throughput_mb_s"] / got["ceiling_mb_s"], 3)
                                         if got["throughput_mb_s"] else None)
        got["throughput_ok"] = bool(got["throughput_mb_s"] and got["throughput_mb_s"] >= THROUGHPUT_TARGET)
        got["growth_ok"] = got["peak_growth_mib"] <= GROWTH_TARGET_MIB
    return {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cpus": os.cpu_count(),
        "load_average_start": load_start,
        "load_average_end": load_average(),
        "sizes_bytes": sizes,
        "cases": cases,
        "targets": {"throughput_mb_s_min": THROUGHPUT_TARGET, "peak_growth_mib_max": GROWTH_TARGET_MIB},
    }


def print_table(r: dict[str, Any]) -> None:
    cases = r["cases"]
    names = list(cases)
    sandboxed = {c["sandboxed"] for c in cases.values()}
    print(f"peach-tasks log flood: {r['python']}, {r['cpus']} cpus, load average {r['load_average_start']} -> "
          f"{r['load_average_end']}, tasks {'sandboxed' if sandboxed == {True} else 'NOT sandboxed (no sandbox here)'}")

    def row(label: str, values: list[Any], note: str = "", digits: int = 1) -> None:
        shown = ["-" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v)) for v in values]
        print(f"  {label:<34}{''.join(f'{v:>14}' for v in shown)}  {note}")

    print(f"  {'':<34}{''.join(f'{n:>14}' for n in names)}")
    row("task output (MB)", [cases[n]["task_bytes"] / MB for n in names], "; ".join(DESCRIBED[n] for n in names))
    row("status", [cases[n]["status"] for n in names])
    row("run duration (s)", [float(cases[n]["duration_s"] or 0) for n in names], "as stored, sandbox start included")
    row("capture throughput (MB/s)", [cases[n]["throughput_mb_s"] for n in names],
        f"target >= {THROUGHPUT_TARGET:g}: " + ", ".join(
            f"{n} {'ok' if cases[n]['throughput_ok'] else 'MISSED'}" for n in names))
    row("pipe ceiling (MB/s)", [cases[n]["ceiling_mb_s"] for n in names], "same code, plain process, read and dropped")
    row("scheduler / ceiling", [cases[n]["scheduler_over_ceiling"] for n in names], digits=3)
    row("scheduler idle RSS (MiB)", [cases[n]["idle_rss_mib"] for n in names], "after the sync, before the run")
    row("scheduler peak RSS growth (MiB)", [cases[n]["peak_growth_mib"] for n in names],
        f"target <= {GROWTH_TARGET_MIB:g}: " + ", ".join(
            f"{n} {'ok' if cases[n]['growth_ok'] else 'MISSED'}" for n in names))
    row("scheduler RSS kept after (MiB)", [cases[n]["kept_mib"] for n in names])
    row("log captured (MB)", [cases[n]["log_bytes"] / MB for n in names], "log_bytes: what reached the log, stamped")
    row("log dropped (MB)", [cases[n]["log_dropped_bytes"] / MB for n in names], "between the kept head and tail")
    row("log stored (MB)", [cases[n]["stored_log_chars"] / MB for n in names], "characters read back from the store",
        digits=3)
    row("'cut' notes in the log", [cases[n]["cut_notes"] for n in names])
    for n in names:
        if cases[n]["first_cut_note"]:
            print(f"    {n}: {cases[n]['first_cut_note'][:150]}")
        if cases[n]["status"] != "SUCCESS":
            print(f"    {n}: {cases[n]['status']}: {cases[n]['error']}")
    print(f"  peak: {cases[names[0]]['peak_measured']}; benchmark took {r['bench_seconds']} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Measure the scheduler's capture throughput and memory under a flood of task output.",
        epilog=f"Targets: >= {THROUGHPUT_TARGET:g} MB/s, peak RSS growth <= {GROWTH_TARGET_MIB:g} MiB in every case.")
    parser.add_argument("--lines-mb", type=float, default=300, help="MB of 100-byte lines (default 300)")
    parser.add_argument("--no-newlines-mb", type=float, default=300, help="MB without newlines (default 300)")
    parser.add_argument("--line-mb", type=float, default=1000, help="MB in one line (default 1000: 1 GB)")
    parser.add_argument("--timeout", type=int, default=900, help="the task timeout in seconds (default 900)")
    parser.add_argument("--keep", metavar="DIR", help="build in DIR (must not exist) and keep it")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(Path(args.root), args.case)))
        return 0
    sizes = {"lines": int(args.lines_mb * MB), "no_newlines": int(args.no_newlines_mb * MB),
             "one_line": int(args.line_mb * MB)}
    sizes = {case: size for case, size in sizes.items() if size > 0}
    started = time.perf_counter()
    with workspace(args.keep, "peach-flood-") as root:
        result = run(root, sizes, args.timeout)
    result["bench_seconds"] = round(time.perf_counter() - started, 1)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
