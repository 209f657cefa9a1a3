"""Issue #12: notebooks that papermill runs run the same through the real scheduler.

One real git repository holds a notebook per case (built here, none copied from public
projects); one real scheduler syncs it, builds the organisation's uv environment and runs
every task in its task process (sandboxed where this host has a sandbox), and the stored
runs are checked. Cases that cannot run as Jupyter would must be problems before any run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import Repo, py_task, task_yaml, write_settings

from peach_tasks.demo import notebook_json
from peach_tasks.scheduling.scheduler import Scheduler
from peach_tasks.store import Store


def full(notebook: str, method: str | None = None) -> dict[str, Any]:
    task: dict[str, Any] = {"executor": "python", "notebook": notebook, "full_notebook": True}
    if method:
        task["method"] = method
    return task


# name -> (notebook file, its cells, the task's definition)
CASES: dict[str, tuple[str, list[str], dict[str, Any]]] = {
    # 1. a magic right before `from __future__`
    "capture_future": ("capture_future.ipynb", [
        "%%capture capt\nfrom __future__ import print_function\nprint('captured text')",
        "def main():\n    return [capt.stdout, capt.stderr]",
    ], full("capture_future.ipynb", "main")),
    "magic_future": ("magic_future.ipynb", [
        "%matplotlib inline\nfrom __future__ import division\n\ndef main():\n    return 7 / 2",
    ], py_task("magic_future.ipynb", "main")),
    # 2. a later cell starting with `from __future__`; as in IPython it holds for later cells
    "later_future": ("later_future.ipynb", [
        "x = 1",
        "from __future__ import annotations\ndef f() -> Undefined:\n    pass",
        "def main() -> int:\n    return [f.__annotations__['return'], main.__annotations__['return']]",
    ], full("later_future.ipynb", "main")),
    # 3. top-level await, in a full notebook and in the entry cell
    "await_full": ("await_full.ipynb", [
        "import asyncio\nasync def greet():\n    await asyncio.sleep(0)\n    return 'hello'",
        "greeting = await greet()\nloop_id = id(asyncio.get_running_loop())",
        "async def same_loop():\n    return id(asyncio.get_running_loop())\nsecond = await same_loop()",
        "def main():\n    return [greeting, loop_id == second]",
    ], full("await_full.ipynb", "main")),
    "await_entry": ("await_entry.ipynb", [
        "import asyncio\nvalue = await asyncio.sleep(0, result=21)\nasync def main():\n    return value * 2",
    ], py_task("await_entry.ipynb", "main")),
    # 4. %%timeit with a setup statement; 5. %time continued with a backslash
    "timeit_setup": ("timeit_setup.ipynb", [
        "%%timeit numbers = list(range(10))\ntotal = sum(numbers)",
        "base = 2\n%time doubled = base \\\n    * 3",
        "%%time\ntimed = 'cell'\n%timeit -n 1 -r 1 line = 'line'",
        "def main():\n    return [total, doubled, timed, line]",
    ], full("timeit_setup.ipynb", "main")),
    # 7. a runtime error in full-notebook mode names the cell and its line
    "runtime_error": ("runtime_error.ipynb", [
        "a = 1", "# markdown-free comment cell", "def helper():\n    return missing_name", "value = helper()",
    ], full("runtime_error.ipynb")),
    # ...also when it is the cell's last expression, whose value Jupyter would show: the
    # traceback has the line as written, Python's carets under it
    "last_line_error": ("last_line_error.ipynb", [
        "data = {'a': 1}\ndata['a'] + data['b']",
    ], full("last_line_error.ipynb")),
    "form_feed": ("form_feed.ipynb", ["a = 1\n\x0c\nb = a / 0"], full("form_feed.ipynb")),  # a page break
    "entry_error": ("entry_error.ipynb", [
        "x = 1", "def main():\n    y = 2\n    return 1 / 0",
    ], py_task("entry_error.ipynb", "main")),
    # IPython features with their meaning
    "writefile_import": ("writefile_import.ipynb", [
        "%%writefile written_module.py\ndef answer():\n    return 42",
        "import written_module",
        "%%file -a log.txt\nfirst\n",
        "%%file -a log.txt\nsecond\n",
        "def main():\n    return [written_module.answer(), open('log.txt').read()]",
    ], full("writefile_import.ipynb", "main")),
    "run_files": ("run_files.ipynb", [
        "%run helpers/tool.py one two\n%run shared.ipynb",
        "def main():\n    return [TOOL_ARGV, TOOL_NAME, SHARED, shared_doubled(4), '__name__' in dir()]",
    ], full("run_files.ipynb", "main")),
    "capture_name": ("capture_name.ipynb", [
        "%%capture out --no-stderr\nprint('to capture')\nimport sys\nprint('to the log', file=sys.stderr)",
        "def main():\n    return [out.stdout, out.stderr, str(out)]",
    ], full("capture_name.ipynb", "main")),
    "env_cd": ("env_cd.ipynb", [
        "%env GREETING=hello\n%env OTHER world\nimport subprocess, os\n"
        "seen = subprocess.run(['sh', '-c', 'echo $GREETING $OTHER'], capture_output=True, text=True).stdout",
        "%cd data\nhere = %pwd\nwith open('inside.txt') as f:\n    inside = f.read()",
        "files = !ls\n!exit 3\ncode = _exit_code",
        "def main():\n    return [seen, os.path.basename(here), inside, list(files), code, os.environ['GREETING']]",
    ], full("env_cd.ipynb", "main")),
    "get_ipython": ("get_ipython.ipynb", [
        "ip = get_ipython()\nip.run_line_magic('matplotlib', 'inline')\nip.run_line_magic('env', 'VIA_SHELL=1')\n"
        "import os\nname = type(ip).__name__\nkernel = ip.kernel\nip.user_ns['pushed'] = 5",
        "def main():\n    return [os.environ['VIA_SHELL'], kernel, pushed, name]",
    ], full("get_ipython.ipynb", "main")),
    "bash_cell": ("bash_cell.ipynb", [
        "%%bash\necho from bash > bash_out.txt\necho to the log\nexit 0",
        "%%sh --no-raise-error\nexit 4",
        "def main():\n    return open('bash_out.txt').read()",
    ], full("bash_cell.ipynb", "main")),
    "bash_fails": ("bash_fails.ipynb", ["%%bash\necho partial\nexit 3", "never = 1"], full("bash_fails.ipynb")),
    # a cell's result is an output, as in the notebook papermill leaves; %%capture keeps displays
    "results": ("results.ipynb", [
        "class Table:\n    def _repr_html_(self):\n        return '<table><tr><td>1</td></tr></table>'\nTable()",
        "%%capture shown\ndisplay('inside capture')\n'captured result'",
        "print('quiet');\nNone",
        "len(shown.outputs)",
        "%%html\n<b>bold</b>",
        "import asyncio\nawait asyncio.sleep(0, result='awaited')",
        "%matplotlib inline\nfrom __future__ import division\n7 / 2",
    ], full("results.ipynb")),
    # as deep as in a kernel: Jupyter's recursion limit (3000, set by jedi, which IPython imports),
    # for the task's own recursion and for compiling a long last expression, shown as its result
    "deep": ("deep.ipynb", [
        "import sys\ndef depth(n):\n    return 0 if n == 0 else 1 + depth(n - 1)",
        "+".join(["1"] * 1500),
        "def main():\n    return [sys.getrecursionlimit(), depth(2500)]",
    ], full("deep.ipynb", "main")),
    # deeper than Python compiles: a problem before any run, never a crash of the scheduler
    "too_deep": ("too_deep.ipynb", ["x = 1", "+".join(["1"] * 30000)], full("too_deep.ipynb")),
    # 8. an entry function that needs arguments: refused before any run
    "needs_arguments": ("needs_arguments.ipynb", [
        "x = 1", "def entry(date, region):\n    return date",
    ], py_task("needs_arguments.ipynb", "entry")),
    "required_payload": ("required_payload.ipynb", [
        "def main(payload):\n    return ['got', payload]",
    ], py_task("required_payload.ipynb", "main")),
    # unsupported magics: refused before any run
    "unsupported": ("unsupported.ipynb", [
        "x = 1", "import os\n%pylab inline",
    ], full("unsupported.ipynb")),
}


def build(repo: Repo) -> None:
    for notebook, cells, _ in CASES.values():
        repo.write(notebook, notebook_json([("code", source) for source in cells]))
    repo.write("data/inside.txt", "data file")
    repo.write("helpers/tool.py", "import sys\nTOOL_ARGV = sys.argv[1:]\nTOOL_NAME = __name__\n")
    repo.write("shared.ipynb", notebook_json([
        ("markdown", "# shared"), ("code", "SHARED = 'from shared'\n%env SHARED_ENV=1"),
        ("code", "def shared_doubled(x):\n    return 2 * x")]))
    # 9. formats and honest refusals
    repo.write("jupytext.py", "# ---\n# jupyter:\n#   kernelspec:\n#     language: python\n# ---\n\n"
                              "# %% [markdown]\n# A title\n\n# %%\n# %env FROM_PY=yes\nimport os\n\n"
                              "# %%\ndef main():\n    return os.environ['FROM_PY']\n")
    repo.write("old_format.ipynb", json.dumps({
        "nbformat": 3, "nbformat_minor": 0, "metadata": {"name": "old"},
        "worksheets": [{"cells": [
            {"cell_type": "heading", "level": 1, "source": ["Old"], "metadata": {}},
            {"cell_type": "code", "language": "python", "input": ["def main():\n", "    return 'v3'"],
             "outputs": [], "metadata": {}}]}]}))
    repo.write("julia.ipynb", json.dumps({
        "nbformat": 4, "nbformat_minor": 5, "cells": [{"cell_type": "code", "source": "1_000im", "metadata": {},
                                                         "outputs": [], "execution_count": None, "id": "a"}],
        "metadata": {"kernelspec": {"name": "julia-1.9", "display_name": "Julia 1.9.3", "language": "julia"}}}))
    repo.write("empty.ipynb", "")
    repo.write("lfs.ipynb", "version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 1234\n")
    repo.write("conflict.ipynb", '{\n "cells": [\n<<<<<<< HEAD\n  {"cell_type": "code"}\n=======\n'
                                 '  {"cell_type": "markdown"}\n>>>>>>> other\n ]\n}\n')
    tasks = {name: definition for name, (_, _, definition) in CASES.items()}
    tasks.update({
        "jupytext": full("jupytext.py", "main"), "old_format": py_task("old_format.ipynb", "main"),
        "julia": full("julia.ipynb"), "empty": full("empty.ipynb"), "lfs": full("lfs.ipynb"),
        "conflict": full("conflict.ipynb"),
    })
    repo.write("peach.yaml", task_yaml("default", tasks))
    repo.commit()


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> tuple[Scheduler, Store, Path]:
    from peach_tasks.settings import load_settings

    tmp = tmp_path_factory.mktemp("notebook-runs")
    repo = Repo(tmp / "algos")
    build(repo)
    settings = load_settings(write_settings(tmp, [{"url": str(repo.path)}]))
    store = Store.open(settings.database_url)
    scheduler = Scheduler(settings, store)
    try:
        scheduler.run_once()
        yield scheduler, store, tmp
    finally:
        scheduler.close()
        store.close()


def outcome(store: Store, name: str) -> dict[str, Any]:
    runs = store.runs("default", name, limit=1)
    assert runs, f"{name} did not run"
    return runs[0]


def succeeded(store: Store, name: str) -> Any:
    run = outcome(store, name)
    assert run["status"] == "SUCCESS", (name, run["error"], store.log(run["id"]))
    return run["result"]


def problem(store: Store, file: str) -> dict[str, Any]:
    found = [p for p in store.problems() if p["file"] == file]
    assert len(found) == 1, (file, store.problems())
    return found[0]


def test_future_imports_after_a_magic_and_in_later_cells(ran: Any) -> None:
    _, store, _ = ran
    assert succeeded(store, "capture_future") == ["captured text\n", ""]
    assert succeeded(store, "magic_future") == 3.5
    assert succeeded(store, "later_future") == ["Undefined", "int"]


def test_top_level_await_runs_in_one_event_loop(ran: Any) -> None:
    _, store, _ = ran
    assert succeeded(store, "await_full") == ["hello", True]
    assert succeeded(store, "await_entry") == 42


def test_timed_statements_run_with_their_setup_and_continuation(ran: Any) -> None:
    _, store, _ = ran
    assert succeeded(store, "timeit_setup") == [45, 6, "cell", "line"]
    log = store.log(outcome(store, "timeit_setup")["id"]) or ""
    assert "cell 1 line 1: '%%timeit numbers = list(range(10))': the cell runs once, untimed" in log


def test_runtime_errors_name_the_cell_and_its_line(ran: Any) -> None:
    _, store, _ = ran
    run = outcome(store, "runtime_error")
    assert run["status"] == "FAILURE"
    assert run["error"] == "runtime_error.ipynb cell 3 line 2: NameError: name 'missing_name' is not defined"
    log = store.log(run["id"]) or ""
    assert 'File "runtime_error.ipynb cell 4", line 1, in <module>' in log
    assert 'File "runtime_error.ipynb cell 3", line 2, in helper' in log
    last = outcome(store, "last_line_error")
    assert last["error"] == "last_line_error.ipynb cell 1 line 2: KeyError: 'b'"
    lines = [line.split(" ", 1)[-1] for line in (store.log(last["id"]) or "").splitlines()]  # no time stamps
    at = lines.index('  File "last_line_error.ipynb cell 1", line 2, in <module>')
    assert lines[at + 1:at + 3] == ["    data['a'] + data['b']",  # as written, not wrapped
                                    "                ~~~~^^^^^"], lines  # Python's carets under data['b']
    assert not any("displayhook" in line for line in lines)
    feed = outcome(store, "form_feed")
    assert feed["error"] == "form_feed.ipynb cell 1 line 3: ZeroDivisionError: division by zero"
    lines = [line.split(" ", 1)[-1] for line in (store.log(feed["id"]) or "").splitlines()]
    at = lines.index('  File "form_feed.ipynb cell 1", line 3, in <module>')
    assert lines[at + 1:at + 3] == ["    b = a / 0", "        ~~^~~"], lines
    entry = outcome(store, "entry_error")
    assert entry["error"] == "entry_error.ipynb cell 2 line 3: ZeroDivisionError: division by zero"


def test_writefile_run_capture_env_cd_and_shell(ran: Any) -> None:
    scheduler, store, tmp = ran
    assert succeeded(store, "writefile_import") == [42, "first\nsecond\n"]
    log = store.log(outcome(store, "writefile_import")["id"]) or ""
    assert "Writing written_module.py" in log and "Appending to log.txt" in log
    if scheduler.sandbox is not None:  # written in the run's private copy, never in the scheduler's checkout
        assert not list((tmp / "state").rglob("written_module.py"))
    assert succeeded(store, "run_files") == [["one", "two"], "__main__", "from shared", 8, False]
    result = succeeded(store, "capture_name")
    assert result == ["to capture\n", "", "to capture\n"]
    assert "to the log" in (store.log(outcome(store, "capture_name")["id"]) or "")
    seen, here, inside, files, code, greeting = succeeded(store, "env_cd")
    assert (seen, here, inside, code, greeting) == ("hello world\n", "data", "data file", 3, "hello")
    assert files == ["inside.txt"]
    assert succeeded(store, "get_ipython") == ["1", None, 5, "Shell"]
    assert succeeded(store, "bash_cell") == "from bash\n"
    assert "Z to the log\n" in (store.log(outcome(store, "bash_cell")["id"]) or "")
    failed = outcome(store, "bash_fails")
    assert failed["status"] == "FAILURE"
    # IPython's error names the cell's body, as bytes (papermill's message, found by the eighth pass)
    assert failed["error"].startswith("bash_fails.ipynb cell 1 line 1: subprocess.CalledProcessError: Command "
                                      "'b'echo partial\\nexit 3\\n'' returned non-zero exit status 3"), failed["error"]


def test_recursion_goes_as_deep_as_in_a_kernel_and_deeper_code_is_a_problem(ran: Any) -> None:
    _, store, _ = ran
    assert succeeded(store, "deep") == [3000, 2500]
    run = outcome(store, "deep")
    assert [(o["mime_type"], store.run_output(run["id"], o["seq"])[1]) for o in store.run_outputs(run["id"])] == [
        ("text/plain", b"1500")]
    said = "cell 2: the cell is nested too deeply for Python to compile (RecursionError: "
    assert problem(store, "too_deep.ipynb")["message"].startswith(said)
    failed = outcome(store, "too_deep")
    assert failed["status"] == "FAILURE" and failed["error"].startswith(f"too_deep.ipynb {said}"), failed["error"]


def test_entry_signature_is_checked_before_any_run(ran: Any) -> None:
    _, store, _ = ran
    found = problem(store, "needs_arguments.ipynb")
    assert "cell 2 line 1: entry function 'entry' must be callable as entry() or entry(payload)" in found["message"]
    assert "'date', 'region' have no default" in found["message"]
    run = outcome(store, "needs_arguments")
    assert run["status"] == "FAILURE" and "must be callable as entry()" in run["error"]
    assert "TypeError" not in run["error"]
    assert succeeded(store, "required_payload") == ["got", None]


def test_unsupported_magic_is_a_problem_and_never_runs(ran: Any) -> None:
    _, store, _ = ran
    found = problem(store, "unsupported.ipynb")
    assert found["message"].startswith("cell 2 line 2: '%pylab inline': line magic %pylab is not supported")
    run = outcome(store, "unsupported")
    assert run["status"] == "FAILURE" and "'%pylab inline'" in run["error"]
    assert "Traceback" not in (store.log(run["id"]) or "")  # no task process was started


def test_other_formats_run_and_refusals_say_what_the_file_is(ran: Any) -> None:
    _, store, _ = ran
    assert succeeded(store, "jupytext") == "yes"
    assert succeeded(store, "old_format") == "v3"
    refusals = {
        "julia.ipynb": "is a Julia notebook (kernel 'Julia 1.9.3'); peach-tasks runs Python notebooks only",
        "empty.ipynb": "is an empty file (0 bytes), not a notebook",
        "lfs.ipynb": "is a Git LFS pointer, not the notebook",
        "conflict.ipynb": "has unresolved merge-conflict markers (line 3: '<<<<<<<')",
    }
    for file, said in refusals.items():
        assert said in problem(store, file)["message"], file
    assert problem(store, "conflict.ipynb")["line"] == 3


def test_a_cells_result_is_an_output_and_capture_keeps_its_displays(ran: Any) -> None:
    _, store, _ = ran
    run = outcome(store, "results")
    assert run["status"] == "SUCCESS", run["error"]
    shown = [(o["mime_type"], store.run_output(run["id"], o["seq"])[1]) for o in store.run_outputs(run["id"])]
    assert shown == [("text/html", b"<table><tr><td>1</td></tr></table>"), ("text/plain", b"2"),
                     ("text/html", b"<b>bold</b>"), ("text/plain", b"'awaited'"), ("text/plain", b"3.5")]
