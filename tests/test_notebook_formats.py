"""Notebook files (issue #12, item 3), the entry signature (item 4), and the task process's
twins of the scheduler's rules: files built here, then read, compiled and run."""

from __future__ import annotations
import __future__

import ast
import inspect
import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import nbformat
import pytest

from peach_tasks.executors import bootstrap, notebook_shell
from peach_tasks.executors.base import Job
from peach_tasks.executors.python import PythonExecutor
from peach_tasks.model import RunStatus
from peach_tasks.sources import magics
from peach_tasks.sources.notebook import NotebookError, compile_cell, extract_code


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def run_extracted(tmp_path: Path, path: Path, method: str | None, full: bool = True) -> tuple[Any, list[str]]:
    """The extracted notebook run by the real python executor (this interpreter)."""
    extracted = extract_code(path, method, full, display_name=path.name)
    log: list[str] = []
    job = Job(run_id=1, codops="c", task="t", code=extracted.source, program=extracted.request(), method=method,
              filename=path.name, interpreter=Path(sys.executable), cwd=path.parent, timeout=60, grace=1,
              marker=f"test-{uuid.uuid4().hex}", env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    outcome = PythonExecutor().run(job, log.append, threading.Event())
    return outcome, log


# --- jupytext percent format ----------------------------------------------------------------

PERCENT = """\
# ---
# jupyter:
#   jupytext:
#     text_representation:
#       format_name: percent
#   kernelspec:
#     name: python3
# ---

# %% [markdown]
# # A report
# with %d percent signs in text

# %% tags=["parameters"]
# %matplotlib inline
day = "2024-01-31"

# %%
import os


def main():
    return [day, os.sep]

# %% [raw]
# not code
"""


def test_percent_format_cells_are_read_with_their_file_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "report.py", PERCENT)
    extracted = extract_code(path, "main", full_notebook=True)
    assert extracted.cells == (1, 2)  # the markdown cell is cell 1, the raw one cell 4
    assert extracted.program[0].code.startswith("pass  # peach-tasks: %matplotlib inline")  # uncommented, as jupytext
    assert extracted.notes == ("cell 2 line 1: '%matplotlib inline' skipped (no effect in a scheduled run)",)
    outcome, _ = run_extracted(tmp_path, path, "main")
    assert outcome.status is RunStatus.SUCCESS and outcome.result == ["2024-01-31", os.sep]


def test_percent_format_errors_point_at_the_file_line(tmp_path: Path) -> None:
    path = write(tmp_path / "nb.py", PERCENT.replace("    return [day, os.sep]", "    return [day, os.sep"))
    with pytest.raises(NotebookError) as info:
        extract_code(path, "main", full_notebook=True)
    assert (info.value.cell, info.value.line) == (3, 5)
    assert PERCENT.splitlines()[info.value.file_line - 1] == "    return [day, os.sep]"  # '[' was never closed


def test_a_python_file_without_markers_is_one_cell(tmp_path: Path) -> None:
    path = write(tmp_path / "plain.py", "def main():\n    return 'plain'\n")
    assert extract_code(path, "main", full_notebook=False).program[0].number == 1


# --- nbformat 3, other languages, what is not a notebook ------------------------------------

def test_nbformat_3_is_upgraded_on_read(tmp_path: Path) -> None:
    v3 = {"nbformat": 3, "nbformat_minor": 0, "metadata": {"name": ""}, "worksheets": [
        {"cells": [{"cell_type": "heading", "level": 1, "source": "T", "metadata": {}},
                   {"cell_type": "code", "input": "x = 20", "language": "python", "outputs": [], "metadata": {}}]},
        {"cells": [{"cell_type": "code", "input": ["def main():\n", "    return x + 1"], "language": "python",
                    "outputs": [], "metadata": {}}]},
    ]}
    path = write(tmp_path / "old.ipynb", json.dumps(v3))
    extracted = extract_code(path, "main", full_notebook=True)
    assert extracted.cells == (1, 2)
    outcome, _ = run_extracted(tmp_path, path, "main")
    assert outcome.result == 21


@pytest.mark.parametrize(("metadata", "said"), [
    ({"kernelspec": {"name": "julia-1.9", "display_name": "Julia 1.9.3", "language": "julia"}},
     "is a Julia notebook (kernel 'Julia 1.9.3')"),
    ({"language_info": {"name": "R"}}, "is a R notebook;"),
    ({"kernelspec": {"name": "scala", "display_name": "", "language": "scala"}}, "is a Scala notebook (kernel 'scala')"),
])
def test_a_notebook_of_another_language_is_named_as_such(tmp_path: Path, metadata: dict, said: str) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1_000im")], metadata=metadata)
    path = write(tmp_path / "other.ipynb", nbformat.writes(nb))
    with pytest.raises(NotebookError, match="Python notebooks only") as info:
        extract_code(path, None, full_notebook=True)
    assert said in str(info.value)


def test_python_kernels_of_any_name_are_python(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")],
                                  metadata={"kernelspec": {"name": "conda-env-ds-py", "display_name": "ds", "language": "python"}})
    assert extract_code(write(tmp_path / "a.ipynb", nbformat.writes(nb)), None, True).cells == (0,)


@pytest.mark.parametrize(("content", "said"), [
    ("", "is an empty file (0 bytes), not a notebook"),
    ("\n  \n", "is an empty file (4 bytes)"),
    ("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 3\n", "is a Git LFS pointer"),
    ('{\n "cells": [\n<<<<<<< HEAD\n {}\n=======\n>>>>>>> theirs\n]}\n', "unresolved merge-conflict markers (line 3"),
    ('{"nbformat": 2, "worksheets": []}', "nbformat 2 is not read, only 3 and 4"),
])
def test_files_that_are_not_notebooks_are_named_as_what_they_are(tmp_path: Path, content: str, said: str) -> None:
    path = write(tmp_path / "x.ipynb", content)
    with pytest.raises(NotebookError) as info:
        extract_code(path, None, full_notebook=True)
    assert said in str(info.value) and "a merge conflict?" not in str(info.value)


def test_conflict_markers_in_a_percent_file_are_a_conflict_not_a_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path / "nb.py", "# %%\n<<<<<<< HEAD\nx = 1\n=======\nx = 2\n>>>>>>> b\n")
    with pytest.raises(NotebookError, match=r"merge-conflict markers \(line 2") as info:
        extract_code(path, None, full_notebook=True)
    assert info.value.file_line == 2


# --- the entry function's signature -----------------------------------------------------

@pytest.mark.parametrize("definition", [
    "def main():", "def main(payload):", "def main(payload=None):", "def main(day='x', region=None):",
    "def main(*args, **kwargs):", "async def main(payload=None):", "def main(payload, /):",
    "@decorated\ndef main(x, y):",  # a decorator may change the signature: known only at run time
])
def test_callable_entries_are_accepted(tmp_path: Path, definition: str) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(f"{definition}\n    return 1")])
    extract_code(write(tmp_path / "nb.ipynb", nbformat.writes(nb)), "main", full_notebook=False)


@pytest.mark.parametrize(("definition", "said"), [
    ("def main(x):", "parameter 'x' has no default"),
    ("def main(date, region):", "parameters 'date', 'region' have no default"),
    ("def main(payload, extra):", "parameters 'payload', 'extra' have no default"),
    ("def main(*, day):", "parameter 'day' has no default"),
    ("async def main(data):", "parameter 'data' has no default"),
])
def test_entries_needing_arguments_are_refused_at_the_def_line(tmp_path: Path, definition: str, said: str) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import os\n\n" + definition + "\n    return 1")])
    with pytest.raises(NotebookError) as info:
        extract_code(write(tmp_path / "nb.ipynb", nbformat.writes(nb)), "main", full_notebook=False)
    assert info.value.kind == "signature" and (info.value.cell, info.value.line) == (1, 3)
    assert said in str(info.value) and "main() or main(payload)" in str(info.value)


def test_the_last_binding_is_the_one_checked(tmp_path: Path) -> None:
    cell = "def main(x):\n    return x\n\ndef main():\n    return 2"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)])
    extract_code(write(tmp_path / "nb.ipynb", nbformat.writes(nb)), "main", full_notebook=False)


# --- the task process's twins of the scheduler's rules ---------------------------------------

def test_bootstrap_compiler_constants_are_pythons() -> None:
    flags = 0
    for name in __future__.all_feature_names:
        flags |= getattr(__future__, name).compiler_flag
    assert bootstrap._FUTURE_FLAGS == flags
    assert bootstrap._TOP_LEVEL_AWAIT == ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    assert bootstrap._CO_COROUTINE == inspect.CO_COROUTINE


def test_shell_and_transformer_agree_on_what_has_no_effect() -> None:
    assert notebook_shell.NO_EFFECT_LINE_MAGICS == magics.NO_EFFECT_LINE_MAGICS
    assert notebook_shell.NO_EFFECT_EXTENSIONS == magics.NO_EFFECT_EXTENSIONS
    assert notebook_shell.NOT_SHOWN_BACKENDS == magics.NOT_SHOWN_BACKENDS
    assert set(notebook_shell.ALIASES) <= magics.RUNTIME_LINE_MAGICS
    assert notebook_shell._DISPLAY == magics.DISPLAY_CELL_MAGICS
    # What the transformer hands to the shell, the shell takes (copies kept in step: the task
    # process loads its files without the package).
    assert notebook_shell.RUNTIME_EXTENSIONS == magics.RUNTIME_EXTENSIONS
    assert notebook_shell._INLINE_SETTING == magics._INLINE_SETTING.pattern


def test_compile_cell_carries_future_flags_as_ipython_does() -> None:
    flags = compile_cell("x = 1\nfrom __future__ import annotations", "c1", 0)
    assert flags & __future__.annotations.compiler_flag
    with pytest.raises(SyntaxError, match="'await' outside"):
        compile_cell("def f():\n    await g()", "c2", 0)  # only the top level may await
    with pytest.raises(SyntaxError):
        compile_cell("from __future__ import braces", "c3", 0)


@pytest.mark.parametrize(("text", "expected"), [
    ("echo $name", "echo world"),
    ("echo {n + 1} $$HOME", "echo 3 $HOME"),
    ("echo $missing {n}", "echo $missing {n}"),  # one unknown name: the text is left whole (IPython)
    ("echo '$name'", "echo '$name'"),  # inside single quotes: not expanded
    ("echo {items[1:]}", "echo [2, 3]"),
])
def test_variable_expansion_is_ipythons(text: str, expected: str) -> None:
    shell = notebook_shell.Shell(type("Cells", (), {"namespace": {"name": "world", "n": 2, "items": [1, 2, 3]}})(), {})
    assert shell.var_expand(text) == expected


def test_a_notebook_without_magics_loads_no_shell_no_ipython_no_asyncio(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import sys\n\ndef main():\n    return sorted(m for m in sys.modules\n"
        "                  if m.startswith(('IPython', 'asyncio', 'ast', 'inspect')) or 'shell' in m)")])
    path = write(tmp_path / "light.ipynb", nbformat.writes(nb))
    outcome, _ = run_extracted(tmp_path, path, "main")
    assert outcome.status is RunStatus.SUCCESS and outcome.result == []
    assert subprocess.run([sys.executable, "-c", "import IPython"]).returncode == 0  # it is installed, yet not used


def test_validate_points_into_an_nbformat_3_file(tmp_path: Path) -> None:
    from peach_tasks.sources.notebook_problems import ipynb_line

    v3 = {"nbformat": 3, "metadata": {}, "worksheets": [
        {"cells": [{"cell_type": "markdown", "source": ["a"]}]},
        {"cells": [{"cell_type": "code", "input": ["x = 1\n", "y = (\n", "z = 3"]}]}]}
    path = write(tmp_path / "old.ipynb", json.dumps(v3, indent=1))
    with pytest.raises(NotebookError) as info:
        extract_code(path, None, full_notebook=True)
    assert (info.value.cell, info.value.line) == (2, 2)
    line = ipynb_line(path, 1, 2)
    assert line is not None and path.read_text().splitlines()[line - 1].strip() == '"y = (\\n",'
