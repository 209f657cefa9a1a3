"""Which modules a sandbox started ahead imports for the next task (executors/preload.py),
and how its interpreter imports them (bootstrap_start.preload): only names that mean the
same before and after the run's request. The sandbox itself: tests/test_warm.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from peach_tasks.executors.bytecode import BOOTSTRAP
from peach_tasks.executors.preload import MAX_MODULES, preload_names


def cells(*codes: str, magic: dict | None = None) -> dict:
    found = [{"cell": i + 1, "code": code} for i, code in enumerate(codes)]
    if magic is not None:
        found.append({"cell": len(found) + 1, "code": "", "magic": magic})
    return {"cells": found, "runs": {}, "shell": False}


def test_absolute_imports_of_every_cell_in_order_once(tmp_path: Path) -> None:
    program = cells("import numpy as np, os.path\nfrom pandas.io import sql",
                    "from __future__ import annotations\nfrom . import sibling\nimport numpy\n"
                    "def main():\n    import matplotlib.pyplot as plt\n",
                    "await something()\nimport json",  # top-level await, as a cell may have
                    "this is not python (import yaml)")
    assert preload_names("", program, tmp_path, "main") == ("numpy", "os.path", "pandas.io", "matplotlib.pyplot",
                                                             "json")


def test_only_imports_the_run_executes(tmp_path: Path) -> None:
    """Blocks of the cells' statements count; other functions' bodies, classes and
    ``if TYPE_CHECKING:`` do not (they may never run); the entry function's body does."""
    program = cells("try:\n    import ujson as fastjson\nexcept ImportError:\n    import json as fastjson\n"
                    "with open('x') as f:\n    import csv\n"
                    "for _ in range(1):\n    import decimal\n"
                    "if TYPE_CHECKING:\n    import pandas\nelse:\n    import fractions\n"
                    "if typing.TYPE_CHECKING:\n    import polars\n"
                    "def helper():\n    import torch\n"
                    "class Model:\n    import sklearn\n"
                    "async def main():\n    import asyncio\n    if True:\n        import numpy\n")
    assert preload_names("", program, tmp_path, "main") == ("ujson", "json", "csv", "decimal", "fractions",
                                                             "asyncio", "numpy")
    assert preload_names("", program, tmp_path, None)[-1] == "fractions"  # no entry function: the cells only


def test_names_the_runs_folder_holds_are_left_to_the_run(tmp_path: Path) -> None:
    (tmp_path / "utils.py").write_text("")
    (tmp_path / "helpers").mkdir()
    (tmp_path / "fast.cpython-311-x86_64-linux-gnu.so").write_text("")
    program = cells("import utils, helpers.io, fast, numpy")
    assert preload_names("", program, tmp_path) == ("numpy",)
    # matplotlib reads ./matplotlibrc when imported: ahead, before the run enters its folder,
    # it would not; with one there, the run imports matplotlib itself.
    program = cells("import numpy\nimport matplotlib.pyplot as plt")
    assert preload_names("", program, tmp_path) == ("numpy", "matplotlib.pyplot")
    (tmp_path / "matplotlibrc").write_text("lines.linewidth: 4\n")
    assert preload_names("", program, tmp_path) == ("numpy",)


def test_nothing_ahead_when_the_notebook_writes_or_runs_files(tmp_path: Path) -> None:
    writefile = cells("import numpy", magic={"name": "writefile", "line": "numpy.py", "body": "x = 1"})
    assert preload_names("", writefile, tmp_path) == ()
    run = cells("import numpy", "get_ipython().run_line_magic('run', 'setup.py')")
    assert preload_names("", run, tmp_path) == ()


def test_our_helpers_and_future_are_never_imported_ahead_and_the_count_is_bounded(tmp_path: Path) -> None:
    many = "\n".join(f"import mod{i}" for i in range(MAX_MODULES + 10))
    program = cells("from peach_tasks.trigger_client import trigger\nimport peach_tasks\n" + many)
    names = preload_names("", program, tmp_path)
    assert len(names) == MAX_MODULES and names[0] == "mod0"
    assert preload_names("import json", None, tmp_path) == ("json",)  # code run as one piece


def test_the_interpreter_imports_only_its_environments_modules_and_forgets_failures(tmp_path: Path) -> None:
    """bootstrap_start.preload in a real environment's interpreter: a module of a folder on
    sys.path that is neither the standard library nor site-packages (bootstrap's own folder,
    which the task process has on its path; any other) is not imported; one of site-packages
    that raises, even SystemExit, is forgotten and the interpreter goes on."""
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    site = next(env.glob("lib/python3*/site-packages"))
    (site / "loud.py").write_text("print('loud imported')\nraise SystemExit('no')\n")
    (site / "fine.py").write_text("VALUE = 1\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "stranger.py").write_text("")
    code = (
        "import sys\n"
        f"sys.path[:0] = [{str(BOOTSTRAP.parent)!r}, {str(elsewhere)!r}]\n"
        "import bootstrap_start\n"
        "printed = bootstrap_start.preload(['colorsys', 'displays', 'stranger', 'loud', 'fine', 'xml.dom.minidom',"
        " 'no_such', 'bad name'])\n"
        "bootstrap_start.replay(printed)\n"
        "print(sorted(m for m in ('colorsys', 'displays', 'stranger', 'loud', 'fine', 'xml.dom.minidom')"
        " if m in sys.modules))\n"
    )
    out = subprocess.run([str(env / "bin" / "python"), "-I", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["loud imported", "['colorsys', 'fine', 'xml.dom.minidom']"], out.stderr


def test_a_waiting_sandbox_that_imports_ahead_holds_half_the_runs_memory_and_cpus() -> None:
    from peach_tasks.executors.cgroups import Limits
    from peach_tasks.executors.warm import WAITING_MEMORY_BYTES, waiting_limits

    full = Limits(memory_bytes=1 << 30, cpus=2.0, pids=100)
    assert waiting_limits(full, 0, preloading=True) == Limits(memory_bytes=1 << 29, cpus=1.0, pids=32)
    assert waiting_limits(full, 0) == Limits(memory_bytes=WAITING_MEMORY_BYTES, cpus=2.0, pids=32)
    assert waiting_limits(full, 1 << 30, preloading=True) is None  # the checkout alone is too large
    assert waiting_limits(Limits(None, None, None), 0, preloading=True) == Limits(None, None, 32)


def test_a_very_long_name_is_not_put_on_the_command_line(tmp_path: Path) -> None:
    long = "a" * 5000
    assert preload_names(f"import {long}\nimport numpy", None, tmp_path) == ("numpy",)


def test_what_imports_ahead_print_never_blocks_the_sandbox_and_reaches_the_log_bounded(tmp_path: Path) -> None:
    """Nobody reads a waiting sandbox's output before its run takes it. An import that prints
    more than a pipe holds (here 1.5 MiB, through sys.stdout and straight to fd 2) must not
    block it: the output waits in a file, and the run's log gets the first MAX_REPLAY bytes
    and a line saying how much was cut."""
    import time

    from peach_tasks.executors.bootstrap_start import MAX_REPLAY

    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    site = next(env.glob("lib/python3*/site-packages"))
    (site / "chatty.py").write_text("import os, sys\nprint('x' * 1000000)\nos.write(2, b'y' * 500000)\n")
    done = tmp_path / "imported"
    code = (
        "import sys\n"
        f"sys.path[:0] = [{str(BOOTSTRAP.parent)!r}]\n"
        "import bootstrap_start\n"
        "printed = bootstrap_start.preload(['chatty'])\n"
        f"open({str(done)!r}, 'w').close()\n"
        "sys.stdin.read()\n"  # the request, which comes after the imports
        "bootstrap_start.replay(printed)\n"
        "print('chatty' in sys.modules)\n"
    )
    proc = subprocess.Popen([str(env / "bin" / "python"), "-I", "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not done.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert done.exists(), "the imports ahead blocked on their own output"
        out, _ = proc.communicate(b"{}", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = out.decode()
    assert text.endswith("True\n")
    replayed, _, rest = text.partition("\npeach-tasks: ")
    assert len(replayed) == MAX_REPLAY and set(replayed) <= {"x", "y", "\n"}
    assert rest.startswith(f"{1_500_001 - MAX_REPLAY} more bytes")
    assert "more bytes printed by the imports ahead were cut\nTrue\n" in text


def test_a_figure_is_drawn_ahead_outside_pyplot_and_says_nothing(tmp_path: Path) -> None:
    """With pyplot imported ahead, the waiting sandbox draws one throwaway figure to PNG (so
    the run's first figure finds matplotlib's fonts and drawing code warm), without a trace a
    run could see: no pyplot figure (numbers start at 1), matplotlib's log level as it was,
    nothing replayed into the log even when matplotlib's logger would speak."""
    code = (
        "import sys, logging\n"
        f"sys.path[:0] = [{str(BOOTSTRAP.parent)!r}]\n"
        "logging.getLogger('matplotlib').setLevel(logging.DEBUG)\n"
        "logging.basicConfig(level=logging.DEBUG)\n"
        "import bootstrap_start\n"
        "printed = bootstrap_start.preload(['matplotlib.pyplot'])\n"
        "print('drawn', bootstrap_start.figure_drawn_ahead, flush=True)\n"
        "bootstrap_start.replay(printed)\n"
        "import matplotlib.pyplot as plt\n"
        "print('figures', plt.get_fignums(), plt.figure().number)\n"
        "print('level', logging.getLogger('matplotlib').level, logging.root.manager.disable)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MPLBACKEND": "agg"}
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, env=env, check=True)
    lines = out.stdout.splitlines()
    # What the imports logged (the font list built in this empty HOME) is replayed, as before;
    # the throwaway figure's own records are not: none is logged after the font cache is built.
    assert lines[0] == "drawn True", out.stderr
    assert any("generated new fontManager" in line for line in lines), out.stdout  # the imports' records
    assert not [line for line in lines if "findfont" in line], out.stdout  # the figure's
    assert lines[-2:] == ["figures [] 1", "level 10 0"], out.stdout
