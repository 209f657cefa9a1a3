#!/usr/bin/env python
"""How long ``peach-tasks validate`` takes on a big repository: 200 tasks over 50 notebooks.

    python bench/validate.py [--tasks 200] [--notebooks 50] [--repeat 7] [--json]

Builds, in a temporary folder, a git working copy (every file added to the index)
with N notebooks of 5 cells each (a markdown cell, an imports cell with a magic, and
code cells defining 4 entry functions) and M tasks spread over 10 files in
``peach.conf/``, each task pointing at one notebook and one function. Then it times:

  validate, in process   ``validate_directory()``: every check, the median of --repeat runs
  validate, the command  ``peach-tasks validate DIR`` as a subprocess (what a pre-commit
                         hook costs), the median of 3 runs
  baselines              ``python -c pass`` and ``python -c "import peach_tasks.cli"``,
                         measured in the same invocation, so the command's figure can be
                         read as start-up + import + the work

Target: the command well under one second. Nothing is asserted: a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

TARGET_SECONDS = 1.0
FILES = 10
METHODS_PER_NOTEBOOK = 4


def build(root: Path, tasks: int, notebooks: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for n in range(notebooks):
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_markdown_cell(f"# Notebook {n}\nWhat it computes.")]
        nb.cells.append(nbformat.v4.new_code_cell("%matplotlib inline\nimport json\nimport math\n"))
        for m in range(METHODS_PER_NOTEBOOK):
            body = "\n".join(f"    value_{i} = math.sqrt({i} + {m})" for i in range(20))
            nb.cells.append(nbformat.v4.new_code_cell(
                f"def task_{m}(payload=None):\n    '''Entry {m} of notebook {n}.'''\n{body}\n"
                f"    return json.dumps({{'n': {n}, 'm': {m}, 'v': value_19}})\n"))
        nbformat.write(nb, root / f"nb_{n:03d}.ipynb")
    conf = root / "peach.conf"
    conf.mkdir()
    per_file = -(-tasks // FILES)
    for f in range(FILES):
        lines = [f"codops: org{f % 3}", "dependencies:", "  - tabulate>=0.9", "tasks:"]
        for t in range(f * per_file, min(tasks, (f + 1) * per_file)):
            lines += [f"  task_{t:04d}:", "    executor: python", f"    notebook: nb_{t % notebooks:03d}.ipynb",
                      f"    method: task_{(t // notebooks) % METHODS_PER_NOTEBOOK}", "    timeout: 600"]
        (conf / f"tasks_{f:02d}.yaml").write_text("\n".join(lines) + "\n")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)


def timed(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=False)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--notebooks", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    args = parser.parse_args()

    from peach_tasks.authors.validate import validate_directory

    with tempfile.TemporaryDirectory(prefix="peach-bench-validate-") as tmp:
        root = Path(tmp) / "repo"
        build(root, args.tasks, args.notebooks)
        first = validate_directory(root)  # warm-up; also proves the corpus is valid
        if not first.ok or len(first.tasks) != args.tasks:
            sys.exit(f"the generated repository is not valid: {[str(p) for p in first.problems][:5]}")
        in_process = statistics.median(validate_directory(root).seconds for _ in range(args.repeat))
        command = timed(["peach-tasks", "validate", str(root)], 3)
        bare = timed([sys.executable, "-c", "pass"], 3)
        imports = timed([sys.executable, "-c", "import peach_tasks.cli"], 3)

    figures = {"tasks": args.tasks, "notebooks": args.notebooks, "validate_in_process_s": round(in_process, 4),
               "validate_command_s": round(command, 4), "python_start_s": round(bare, 4),
               "python_import_cli_s": round(imports, 4), "target_s": TARGET_SECONDS,
               "command_vs_target": round(command / TARGET_SECONDS, 3),
               "per_task_ms": round(in_process / args.tasks * 1000, 3)}
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"validate: {args.tasks} tasks over {args.notebooks} notebooks, {FILES} definition files")
    print(f"  validate, in process      {in_process * 1000:8.1f} ms  ({figures['per_task_ms']:.2f} ms per task)")
    print(f"  validate, the command     {command * 1000:8.1f} ms  ({command / TARGET_SECONDS:.0%} of the "
          f"{TARGET_SECONDS:g} s target)")
    print(f"  baseline: python -c pass  {bare * 1000:8.1f} ms")
    print(f"  baseline: import cli      {imports * 1000:8.1f} ms  (the command minus this: "
          f"{(command - imports) * 1000:.1f} ms of work)")


if __name__ == "__main__":
    main()
