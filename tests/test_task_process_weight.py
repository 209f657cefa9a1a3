"""What the task process loads of the standard library: a notebook that does not use json,
re or linecache does not pay for them (they are about a third of a small task's start), and
what they served still works: the request and result as JSON, a cell's lines in tracebacks
and ``inspect.getsource``."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import nbformat
import pytest

from peach_tasks.executors import bootstrap
from peach_tasks.executors.base import Job
from peach_tasks.executors.python import PythonExecutor
from peach_tasks.model import RunStatus
from peach_tasks.sources.notebook import extract_code

HEAVY = ("json", "re", "linecache", "tokenize", "string", "IPython")
LOADED = f"sorted(m for m in sys.modules if m in {HEAVY!r})"


TASK_INTERPRETER = Path(sys.executable)  # replaced by an environment's for the module's tests


@pytest.fixture(scope="module", autouse=True)
def _task_interpreter(tmp_path_factory: pytest.TempPathFactory) -> None:
    """An environment's interpreter, as tasks get one: a venv of this Python without its
    site-packages. Running the task with this interpreter itself would also measure the .pth files
    of whatever is installed beside the test tools (a machine's certifi hook imports ``re``)."""
    global TASK_INTERPRETER
    folder = tmp_path_factory.mktemp("task-env") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    TASK_INTERPRETER = folder / "bin" / "python"


def run_cells(tmp_path: Path, *cells: str, method: str | None = "main", log: list | None = None) -> Any:
    """The notebook of ``cells`` run by the real python executor (bootstrap.py in a venv of this
    interpreter); its log lines go to ``log``."""
    path = tmp_path / "nb.ipynb"
    path.write_text(nbformat.writes(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])))
    extracted = extract_code(path, method, True, display_name=path.name)
    job = Job(run_id=1, codops="c", task="t", code=extracted.source, program=extracted.request(), method=method,
              filename=path.name, interpreter=TASK_INTERPRETER, cwd=path.parent, timeout=60, grace=1,
              marker=f"test-{uuid.uuid4().hex}", env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    return PythonExecutor().run(job, (log if log is not None else []).append, threading.Event())


def test_a_plain_notebook_loads_no_json_re_or_linecache(tmp_path: Path) -> None:
    outcome = run_cells(tmp_path, "import sys\nloaded = " + LOADED, "def main():\n    return {'loaded': loaded}")
    assert outcome.status is RunStatus.SUCCESS, outcome.error
    assert outcome.result == {"loaded": []}


def test_a_notebook_with_common_magics_loads_no_re_either(tmp_path: Path) -> None:
    outcome = run_cells(tmp_path, "%env PEACH_WEIGHT=1\nimport os, sys", "%%capture quiet\nprint('hidden')",
                        "%time doubled = [2 * v for v in range(10)]",
                        "def main():\n    return [os.environ['PEACH_WEIGHT'], quiet.stdout, doubled[-1], " + LOADED + "]")
    assert outcome.status is RunStatus.SUCCESS, outcome.error
    assert outcome.result == ["1", "hidden\n", 18, []]


def test_a_failing_cell_shows_its_own_line_in_the_traceback(tmp_path: Path) -> None:
    log: list[str] = []
    outcome = run_cells(tmp_path, "x = 1", "y = x + 1\nraise ValueError(f'boom {y}')", method=None, log=log)
    assert outcome.status is RunStatus.FAILURE
    assert outcome.error == "nb.ipynb cell 2 line 2: ValueError: boom 2"
    assert "raise ValueError(f'boom {y}')" in "".join(log)  # the cell's line, read from linecache


@pytest.mark.parametrize("first", ["x = 1", "import linecache"])  # linecache loaded after the cells, or before
def test_getsource_finds_a_cells_function(tmp_path: Path, first: str) -> None:
    outcome = run_cells(tmp_path, first, "def helper():\n    return 42",
                        "import inspect\n\ndef main():\n    return inspect.getsource(helper)")
    assert outcome.status is RunStatus.SUCCESS, outcome.error
    # Each line ends with a newline, the cell's last one too, as IPython's linecache entries.
    assert outcome.result == "def helper():\n    return 42\n"


VALUES = [None, True, 0, -7, 2**70, 1.5, 1e300, "", "é\n\"\\\u2028😀", [], {}, [1, [2, [3]]],
          {"a": {"b": [None, 1.25, "x"]}, "": 0}, {"code": "def f():\n    return 'ok'\n" * 50}]


@pytest.mark.parametrize("value", VALUES)
def test_json_without_the_json_module_is_jsons(value: object) -> None:
    text = json.dumps(value)
    assert bootstrap._loads(text.encode()) == json.loads(text)
    assert bootstrap._dumps(value) == json.dumps(value, allow_nan=False)


def test_json_without_the_json_module_refuses_what_json_refuses() -> None:
    for bad in (b"", b"{", b'{"a": 1} x', b"[1, 2,]", b'"\\x"', b"\xff"):
        with pytest.raises(ValueError):
            bootstrap._loads(bad)
    for value in (math.nan, [math.inf]):
        with pytest.raises(ValueError):
            bootstrap._dumps(value)
    with pytest.raises(TypeError, match="not JSON serializable"):
        bootstrap._dumps({"a": object()})
    assert bootstrap._dumps({"a": {1, 2}.__class__}, default=repr) == json.dumps({"a": set}, default=repr)


def test_warnings_and_the_tasks_own_tracebacks_show_the_cells_lines(tmp_path: Path) -> None:
    """warnings and traceback load linecache only when they need it: the cells' lines are there."""
    log: list[str] = []
    outcome = run_cells(tmp_path, "import warnings\nwarnings.warn('careful here')",
                        "import traceback\ntry:\n    1 / 0\nexcept ZeroDivisionError:\n    traceback.print_exc()",
                        method=None, log=log)
    assert outcome.status is RunStatus.SUCCESS, log
    text = "\n".join(line[25:] for line in log)
    assert "nb.ipynb cell 1:2: UserWarning: careful here\n  " in text and "warnings.warn('careful here')" in text
    assert 'File "nb.ipynb cell 2", line 3, in <module>\n    1 / 0\n' in text
