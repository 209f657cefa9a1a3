"""What IPython does around a notebook's code, which a run does as well (found by a sixth pass
of public notebooks and reproductions against papermill): a result's text as IPython's pretty
printer writes it, objects that display themselves or lie about their methods, the history
names (``_``, ``In``, ``_i``), blank and indented cells, ``exit()``, ``input()``, threads left
running, ``SList``. Real task processes (the python executor in this interpreter, which has
IPython); the pretty printer is also compared with IPython's own on generated data."""

from __future__ import annotations

import collections
import io
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_notebook_formats import run_extracted
from test_public_notebook_patterns import logged, notebook, shown

from peach_tasks.executors.bytecode import BOOTSTRAP
from peach_tasks.model import RunStatus

sys.path.insert(0, str(BOOTSTRAP.parent))
import displays_pretty  # noqa: E402 (the task process's file, loaded beside bootstrap.py)
from IPython.lib.pretty import pretty as ipython_pretty  # noqa: E402

# -- the pretty printer against IPython's ---------------------------------------------------
leaves = st.one_of(st.integers(), st.text(max_size=30), st.floats(allow_nan=False), st.none(), st.booleans(),
                   st.binary(max_size=5))
keys = st.one_of(st.integers(), st.text(min_size=1, max_size=30))
data = st.recursive(leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=12), st.tuples(inner), st.tuples(inner, inner, inner),
    st.dictionaries(keys, inner, max_size=8), st.sets(st.integers(), max_size=15),
    st.frozensets(st.text(min_size=1, max_size=20), max_size=6)), max_leaves=60)


@settings(max_examples=300, deadline=None)
@given(data)
def test_the_text_of_nested_builtins_is_ipythons_to_the_character(value: object) -> None:
    assert displays_pretty.pretty(value) == ipython_pretty(value)


def _signature(a, b=1, *rest, c, **more):  # type: ignore[no-untyped-def]  # its signature is the point
    return None


class _Plain:
    pass


class _Money:
    def __init__(self, value: float) -> None:
        self.value = value

    def _repr_pretty_(self, p, cycle):  # type: ignore[no-untyped-def]  # IPython's protocol
        p.text(f"Money({self.value:.2f} EUR)")


class _Ordered(collections.OrderedDict):
    pass


class _Dict(dict):
    pass


class _TwoLines:
    def __repr__(self) -> str:
        return "line one\nline two"


def test_ipythons_special_cases_read_the_same() -> None:
    looped: list = [1]
    looped.append(looped)
    values = [list(range(30)), {"b", "a", "c"}, set(), frozenset({2, 1}), (1,), _signature, len, _Plain(), _Plain,
              int, [_Money(1), _Money(2)], [_TwoLines(), 1], [[_TwoLines()], 2], looped, [1] * 1001,
              collections.OrderedDict(a=1), collections.Counter("aab"), collections.deque(range(30)),
              collections.defaultdict(list, {"k" * 40: [1, 2, 3], "j" * 40: [4]}), ValueError("x"), 1 / 3,
              # found by the seventh pass: subclasses, insertion order, maxlen, UserList, super, re
              _Ordered(a=1, b=2), collections.Counter({"a": 1, "b": 2}), collections.deque([1, 2, 3], maxlen=5),
              collections.deque(), collections.UserList([1]), super(_Dict, _Dict()), re.compile("a+", re.I),
              re.compile(rb"x\n"), re.compile("x" * 90, re.M)]
    for value in values:
        assert displays_pretty.pretty(value) == ipython_pretty(value), value


# -- in a run -----------------------------------------------------------------------------
def test_results_read_as_in_jupyter_and_precision_reaches_floats_in_containers(tmp_path: Path) -> None:
    """A long list one item a line, a set sorted, a function with its signature, an object
    without a repr of its own in IPython's short form, _repr_pretty_ used, %precision
    applied inside a list (papermill: [0.33, 0.50])."""
    outputs = shown(tmp_path, "list(range(25))", "{'b', 'a', 'c'}", "def f(x, y=1):\n    pass\nf",
                    "class Money:\n    def _repr_pretty_(self, p, cycle):\n        p.text('Money(3.00 EUR)')\n"
                    "Money()", "%precision 2\n[1/3, 0.5]")
    texts = [text for _, text in outputs]
    assert texts[0] == "[" + ",\n ".join(str(n) for n in range(25)) + "]"
    assert texts[1:] == ["{'a', 'b', 'c'}", "<function __main__.f(x, y=1)>", "Money(3.00 EUR)", "[0.33, 0.50]"]


def test_objects_that_display_themselves_or_lie_about_their_methods(tmp_path: Path) -> None:
    """_ipython_display_ is called instead of formatting (papermill printed "custom display"
    twice; a run kept two reprs); an object whose __getattr__ answers every name (IPython's
    canary) shows its text only; display(include=, exclude=) keeps only what they let through."""
    outcome, log = logged(
        tmp_path,
        "class D:\n    def _ipython_display_(self):\n        print('custom display')\nD()",
        "display(D())",
        "class Anything:\n    def __getattr__(self, name):\n        return lambda *a, **k: '<i>%s</i>' % name\n"
        "    def __repr__(self):\n        return 'Anything()'\nAnything()",
        "from IPython.display import HTML\ndisplay(HTML('<b>h</b>'), include=['text/plain'])\n"
        "display(HTML('<b>h</b>'), exclude=['text/html'])")
    assert [line for line in log if line == "custom display"] == ["custom display"] * 2
    assert [(o.mime_type, o.data.decode()) for o in outcome.outputs] == [
        ("text/plain", "Anything()"),
        ("text/plain", "<IPython.core.display.HTML object>"), ("text/plain", "<IPython.core.display.HTML object>")]


def test_underscore_history_follows_ipythons_rules_and_in_holds_the_inputs(tmp_path: Path) -> None:
    """_ is left alone once the notebook assigned it (papermill: 2 and 'user 7'), Out shown is
    not in itself nor in _, blank cells take no execution count (papermill: _3 is undefined),
    In, _i, _ii and _iN hold the cells' code."""
    _, log = logged(tmp_path, "for _ in range(3):\n    pass", "5", "print('under', repr(_))",
                    "", "7", "print('out', Out, '_5' in globals(), _4)",
                    "Out", "print('after Out', _ is Out, __ is Out)",
                    "print('in', In[1].splitlines()[0], '|', _i, '|', _i2, '|', len(In))")
    said = {line.split(" ", 1)[0]: line for line in log if line.split(" ", 1)[0] in ("under", "out", "after", "in")}
    assert said["under"] == "under 2"
    assert said["out"] == "out {2: 5, 4: 7} False 7"
    assert said["after"] == "after Out False False"
    assert said["in"] == "in for _ in range(3): | print('after Out', _ is Out, __ is Out) | 5 | 9"


def test_an_indented_cell_runs_as_ipython_dedents_it_and_exit_does_not_end_the_notebook(tmp_path: Path) -> None:
    """Code pasted from inside a function (every line indented) runs, as IPython takes the
    first line's indentation off; exit() and quit(1) are ignored, as a Jupyter kernel ignores
    them under papermill (the cells after them run; the log says so); sys.exit() still ends."""
    _, log = logged(tmp_path, "    x = 1\n    if x:\n        print('dedented', x)", "exit()", "quit(1)",
                    "print('after exit')", "import sys\nsys.exit(0)", "print('never')")
    assert "dedented 1" in log and "after exit" in log and "never" not in log
    assert len([line for line in log if "exit() or quit() does not end a notebook" in line]) == 2


def test_a_left_breakpoint_and_a_failing_cd_go_on_as_in_a_kernel(tmp_path: Path) -> None:
    """The tenth pass against papermill: ``breakpoint()`` entered pdb, which read no input and
    ended the run (ipykernel's hook does nothing without a debugger); ``%cd`` to a folder that
    is not there ended it too (IPython prints the error and the cell goes on)."""
    _, log = logged(tmp_path, "x = 1\nbreakpoint()\nprint('after breakpoint', x)",
                    "%cd /no/such/folder\nprint('after cd')", "%cd nb.ipynb\nprint('still here')")
    assert "after breakpoint 1" in log and "after cd" in log and "still here" in log
    assert "[Errno 2] No such file or directory: '/no/such/folder'" in log
    assert log[log.index("[Errno 2] No such file or directory: '/no/such/folder'") + 1] == str(tmp_path)
    assert any(line.startswith("[Errno 20] Not a directory") for line in log)


def test_imports_follow_os_chdir_as_in_a_kernel(tmp_path: Path) -> None:
    """The tenth pass against papermill: ``os.chdir(...)`` then ``import`` of a module in the
    new folder failed (the kernel's sys.path holds '', the run's held the notebook's folder)."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "inner_mod.py").write_text("X = 'found in sub'\n")
    (tmp_path / "beside.py").write_text("Y = 'beside the notebook'\n")
    _, log = logged(tmp_path, "import beside\nprint(beside.Y)",
                    "import os\nos.chdir('sub')\nimport inner_mod\nprint(inner_mod.X)")
    assert "beside the notebook" in log and "found in sub" in log


def test_a_script_run_by_percent_run_that_raises_is_shown_and_the_notebook_goes_on(tmp_path: Path) -> None:
    """The tenth pass against papermill: IPython's %run shows a script's error (or its failing
    sys.exit, unless -e) and the cell goes on, with the names it defined so far; papermill then
    fails the run. The run stopped at once, so the later cells never ran."""
    (tmp_path / "boom.py").write_text("partial = 1\nraise ValueError('boom')\n")
    (tmp_path / "exits.py").write_text("import sys\nsys.exit(3)\n")
    outcome, log = run_extracted(tmp_path, notebook(tmp_path, "%run boom.py\nprint('after run', partial)",
                                                    "%run exits.py\nprint('after exit')",
                                                    "%run -e exits.py\nprint('after -e')"), None)
    text = [line.split(" ", 1)[-1] for line in log]
    assert outcome.status is RunStatus.FAILURE, (outcome, text)
    assert outcome.error.startswith("nb.ipynb cell 1: %run boom.py raised ValueError: boom (and 1 more): Jupyter "
                                    "shows its traceback"), outcome.error
    assert {"after run 1", "after exit", "after -e"} <= set(text), text
    assert "ValueError: boom" in text and "SystemExit: 3" in text


@pytest.mark.parametrize("shell", [False, True])
def test_ipythons_capture_output_captures_prints_and_displays(tmp_path: Path, shell: bool) -> None:
    """The tenth pass against papermill: ``with capture_output() as c:`` failed the run with an
    AttributeError (display_pub) in a notebook with magics, and captured no display without."""
    first = ("!true\n" if shell else "") + \
        "from IPython.utils.capture import capture_output\nfrom IPython.display import HTML"
    _, log = logged(tmp_path, first,
                    "with capture_output() as c:\n    print('quiet')\n    display(HTML('<b>kept</b>'))\n"
                    "print(repr(c.stdout), len(c.outputs), c.outputs[0].data['text/html'])",
                    "with capture_output(display=False) as d:\n    print('also quiet')\nprint(repr(d.stdout))")
    assert "'quiet\\n' 1 <b>kept</b>" in log and "'also quiet\\n'" in log, log
    assert "quiet" not in log and "also quiet" not in log


def test_open_refuses_the_standard_streams_as_ipythons_does(tmp_path: Path) -> None:
    """The tenth pass against papermill: ``open(1, 'w')`` made a file object that closed the
    run's output when it was collected; IPython's ``open`` refuses 0, 1 and 2."""
    _, log = logged(tmp_path, "try:\n    open(1, 'w')\nexcept ValueError as e:\n    print('refused:', e)",
                    "with open('f.txt', 'w') as f:\n    f.write('x')\nprint(open('f.txt').read(), open.__name__)",
                    "%who")
    assert any(line.startswith("refused: IPython won't let you open fd=1") for line in log), log
    assert "x open" in log and log[-1].split() == ["f"]  # %who lists the notebook's f, not open


def test_percent_run_reads_the_script_as_it_is_when_it_runs(tmp_path: Path) -> None:
    """The tenth pass against papermill: ``%run g.py`` ran the committed g.py after the notebook
    rewrote it, and the notebook folder's s.py after ``os.chdir('sub')`` (IPython reads the file
    when %run runs, from the working folder)."""
    (tmp_path / "g.py").write_text("print('committed g')\n")
    (tmp_path / "s.py").write_text("print('top s')\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "s.py").write_text("print('sub s')\n")
    _, log = logged(tmp_path, "%run g.py", "open('g.py', 'w').write(\"print('rewritten g')\")\n%run g.py",
                    "import os\nos.chdir('sub')\n%run s.py")
    assert [line for line in log if line.endswith((" g", " s"))] == ["committed g", "rewritten g", "sub s"], log
    # A script found beside the notebook but not from the folder %run runs in: IPython's error,
    # and the cell goes on; __file__ is absolute; -n runs it under its own module name.
    (tmp_path / "defs.py").write_text("from __future__ import annotations\nimport dataclasses, os\n"
                                      "@dataclasses.dataclass\nclass Point:\n    x: int\n"
                                      "HERE = os.path.isabs(__file__)\n")
    _, log = logged(tmp_path, "%run -n defs.py\nprint('point', Point(3), HERE)",
                    "import os\nos.chdir('sub')\n%run g.py\nprint('went on')")
    assert "point Point(x=3) True" in log and "went on" in log, log
    assert "ERROR:root:File `'g.py'` not found." in log, log


def test_a_notebooks_module_named_as_the_standard_librarys_does_not_replace_it(tmp_path: Path) -> None:
    """The re-check of the tenth pass: the notebook's folder was first on sys.path, so a
    json.py or logging.py beside the notebook replaced the standard library's (pandas failed to
    import; a token.py broke the run's own error report). IPython puts the working folder
    before site-packages, after the standard library: it still shadows an installed package."""
    (tmp_path / "json.py").write_text("LEVEL = 'the notebook json'\n")
    (tmp_path / "token.py").write_text("X = 1\n")
    (tmp_path / "tabulate.py").write_text("WHO = 'the notebook tabulate'\n")
    outcome, log = run_extracted(tmp_path, notebook(tmp_path, "import json\nprint(json.dumps([1]))",
                                                    "import tabulate\nprint(tabulate.WHO)", "1 / 0"), None)
    text = [line.split(" ", 1)[-1] for line in log]
    assert "[1]" in text and "the notebook tabulate" in text, text
    assert outcome.error == "nb.ipynb cell 3 line 1: ZeroDivisionError: division by zero", outcome.error


def test_input_raises_what_a_kernel_raises_and_slist_has_fields(tmp_path: Path) -> None:
    outcome, log = logged(
        tmp_path,
        "try:\n    input('name? ')\nexcept NotImplementedError as e:\n    print('caught', type(e).__name__)",
        "import getpass\ntry:\n    getpass.getpass('API key: ')\nexcept EOFError as e:\n    print('getpass', e)",
        "out = !printf 'a 1\\nb 2\\n'\nprint('fields', out.fields(1), out.fields(1, 0), out.sort(1, nums=True))")
    assert "caught StdinNotImplementedError" in log, log  # the prompt not printed (the tenth pass), as ipykernel
    assert any(line.endswith("getpass getpass() was called, but a scheduled run has no one to answer it: put the "
                             "value in the notebook, in the task's task_env, or in the payload of a triggered run")
               for line in log), log
    assert not any("echoed" in line for line in log), log
    assert "fields ['1', '2'] ['1 a', '2 b'] ['a 1', 'b 2']" in log, log
    # A getpass.py of the notebook's own does not replace the standard library's: the working
    # folder comes after it on sys.path, as IPython puts it.
    (tmp_path / "own").mkdir()
    _, log = logged(tmp_path / "own", "import getpass, os\n"
                    "print('getpass from', 'the notebook' if os.path.dirname(getpass.__file__) == os.getcwd() "
                    "else 'the standard library')",
                    files={"getpass.py": "def getpass(prompt=''):\n    return 'from the repository'\n"})
    assert any(line.endswith("getpass from the standard library") for line in log), log


def test_a_thread_left_running_ends_with_the_run(tmp_path: Path) -> None:
    """A non-daemon thread still running after the last cell held the run until its timeout
    (papermill ended in 4 s); it now gets a few seconds, then the run ends with its status
    (SUCCESS, not TIMEOUT, within the job's 60 s). An executor left open is no such thread:
    its idle workers are told to end first, as Python's exit tells them."""
    outcome, log = run_extracted(tmp_path, notebook(
        tmp_path, "import threading, time\ndef beat():\n    while True:\n        time.sleep(0.2)\n"
                  "threading.Thread(target=beat, name='heartbeat').start()\nprint('cell done')"), None)
    assert outcome.status is RunStatus.SUCCESS, (outcome.error, log)
    assert any("1 thread the task started (heartbeat) still ran 5 s after its end: ended with the run" in line
               for line in log), log
    (tmp_path / "pool").mkdir()
    outcome, log = run_extracted(tmp_path / "pool", notebook(
        tmp_path / "pool", "from concurrent.futures import ThreadPoolExecutor\npool = ThreadPoolExecutor(4)\n"
                           "print('mapped', list(pool.map(abs, [-1, -2])))"), None)
    assert outcome.status is RunStatus.SUCCESS, (outcome.error, log)
    assert any(line.endswith("mapped [1, 2]") for line in log), log
    assert not any("thread" in line for line in log), log
    # Python's exit is otherwise as it was: atexit's functions run (a quick one is heard, a
    # hanging one is cut after the grace, and the log says what was still ending).
    (tmp_path / "atexit").mkdir()
    outcome, log = run_extracted(tmp_path / "atexit", notebook(
        tmp_path / "atexit", "import atexit, threading, time\natexit.register(time.sleep, 600)\n"
                             "atexit.register(print, 'bye')\nthreading.Thread(target=print, args=('x',)).start()"),
        None)
    assert outcome.status is RunStatus.SUCCESS, (outcome.error, log)
    assert len([line for line in log if line.endswith(" bye")]) == 1, log  # once: not run again when cut
    assert any("the task's process was still ending 5 s after its end" in line for line in log), log


def test_a_display_hook_set_in_the_cell_does_not_take_its_result(tmp_path: Path) -> None:
    """sympy's init_printing() outside IPython sets sys.displayhook: the same cell's result
    went to its hook (printed to the log, no output); Jupyter shows it as the cell's result."""
    outputs = shown(tmp_path, "import sys\nsys.displayhook = lambda value: print('theirs', value)\n40 + 2")
    assert outputs == [("text/plain", "42")]


def test_time_above_another_cell_magic_runs_it_and_two_others_are_refused_clearly(tmp_path: Path) -> None:
    """``%%time`` runs the rest as a cell, so ``%%time`` then ``%%capture out`` (or ``%%bash``)
    works in Jupyter; it was refused as "a cell magic must be the first line of its cell".
    Two cell magics of other kinds say what to do."""
    _, log = logged(tmp_path, "%%time\n%%capture out\nprint('kept quiet')", "print('captured', out.stdout.strip())",
                    "%%time\n%%bash\necho from bash")
    assert "captured kept quiet" in log and "from bash" in log and "kept quiet" not in log
    from peach_tasks.sources.notebook import NotebookError, extract_code

    (tmp_path / "two").mkdir()
    path = notebook(tmp_path / "two", "%%capture\n%%bash\necho hi")
    with pytest.raises(NotebookError, match=r"nb.ipynb cell 1 line 2: '%%bash' under %%capture: one cell magic per "
                                            r"cell runs in peach-tasks \(%%time and %%timeit aside\); split the cell"):
        extract_code(path, None, True, display_name="nb.ipynb")


def test_which_statements_show_their_value_follows_ast_node_interactivity(tmp_path: Path) -> None:
    """``InteractiveShell.ast_node_interactivity = "all"`` (or by %config), found in real
    notebooks: every expression statement shows its value from the next cell on (papermill:
    1, 2, 10, 11; a run showed 2 and 11); ``last_expr_or_assign`` shows a last assignment's
    value, ``none`` nothing; a cell ending with ``;`` stays quiet."""
    texts = [text for _, text in shown(
        tmp_path, "from IPython.core.interactiveshell import InteractiveShell\n"
                  "InteractiveShell.ast_node_interactivity = 'all'", "1\n2", "x = 10\nx\nx + 1",
        "for i in range(2):\n    i * 100", "3\n4;",
        "InteractiveShell.ast_node_interactivity = 'last_expr_or_assign'", "y = 5", "y += 1",
        "InteractiveShell.ast_node_interactivity = 'none'", "6")]
    assert texts == ["1", "2", "10", "11", "0", "100", "5", "6"]
    (tmp_path / "config").mkdir()
    texts = [text for _, text in shown(tmp_path / "config", "%config InteractiveShell.ast_node_interactivity='all'",
                                       "7\n8", "%config InteractiveShell.ast_node_interactivity = 'last_expr'",
                                       "9\n10")]
    assert texts == ["7", "8", "10"]


def test_a_missing_module_names_the_pip_install_the_run_skipped(tmp_path: Path) -> None:
    """``%pip install humanize`` then ``import humanize`` works in Jupyter; a run skips the
    install (its packages are its dependencies) and failed with a bare ModuleNotFoundError.
    The error now names the skipped line and what to do."""
    outcome, log = run_extracted(tmp_path, notebook(tmp_path, "%pip install -q peach-no-such-package",
                                                    "import peach_no_such_package"), None)
    assert outcome.status is RunStatus.FAILURE
    assert outcome.error == (
        "nb.ipynb cell 2 line 1: ModuleNotFoundError: No module named 'peach_no_such_package' (nb.ipynb cell 1 "
        "line 1: '%pip install -q peach-no-such-package': skipped, as a run installs nothing; put the package in "
        "the dependencies of the task's definition)"), outcome.error


def test_pandas_shows_wide_frames_as_in_a_kernel(tmp_path: Path) -> None:
    """pandas sets display.max_columns to 0 (fit the terminal) when it finds no IPython kernel,
    as in a run without magics, and to 20 in a kernel: a 30-column DataFrame printed and showed
    all its columns where Jupyter shows 20 and '...'. Real pandas."""
    outcome, log = logged(tmp_path, "import pandas as pd\nprint('max_columns', pd.get_option('display.max_columns'))",
                          "wide = pd.DataFrame([range(30)], columns=[f'c{i}' for i in range(30)])\nwide",
                          # and after a reset, as in a kernel (the tenth pass: 0)
                          "pd.set_option('display.max_columns', 5)\npd.reset_option('display.max_columns')\n"
                          "print('reset', pd.get_option('display.max_columns'))")
    assert any(line.endswith("max_columns 20") for line in log), log
    assert any(line.endswith("reset 20") for line in log), log
    (table,) = [o for o in outcome.outputs if o.mime_type == "text/html"]
    assert "<th>...</th>" in table.data.decode() and "c15" not in table.data.decode()


def test_figures_made_with_interactive_mode_off_wait_and_capture_keeps_a_cells_figures(tmp_path: Path) -> None:
    """Found by the seventh pass. With ``plt.ioff()`` (or inside ``with plt.ioff():``) a figure
    is not shown at the cell's end and stays open, as Jupyter's inline backend leaves it
    (papermill: cell 3 prints [1]); ``plt.show()`` still shows it. ``%%capture`` keeps the
    cell's figures in its outputs (papermill: 1 output captured, none shown)."""
    outcome, log = logged(
        tmp_path, "import matplotlib.pyplot as plt\nplt.plot([1])", "plt.ioff()\nplt.plot([2])",
        "print('open', plt.get_fignums())",
        "plt.ion()\nwith plt.ioff():\n    fig, ax = plt.subplots()\n    ax.plot([3])",
        "print('still open', plt.get_fignums())", "plt.show()",
        "%%capture cap\nplt.plot([4])\nprint('inside')", "print('captured', len(cap.outputs), cap.stdout.strip())")
    said = [line for line in log if line.startswith(("open", "still open", "captured"))]
    # Cell 1's figure was shown and closed at its end: pyplot numbers the next one 1 again.
    assert said == ["open [1]", "still open [1, 2]", "captured 1 inside"], log
    figures = [o for o in outcome.outputs if o.mime_type == "image/png"]
    assert len(figures) == 3  # cell 1's at its end, then the two left open by plt.show(); none of %%capture's


def test_time_prints_the_cells_times_as_ipython_does(tmp_path: Path) -> None:
    """``%%time`` runs its cell once in IPython too, then prints its CPU and wall times; a run
    ran it "once, untimed" and printed nothing. It now prints IPython's two lines after the
    cell, also when %%capture is under it (whose output stays captured)."""
    import re

    outcome, log = logged(tmp_path, "%%time\ntotal = sum(range(10**5))\ntotal",
                          "%%time\n%%capture out\nprint('quiet')", "%%time\nimport time\ntime.sleep(0.01)")
    times = [line for line in log if line.startswith(("CPU times:", "Wall time:"))]
    assert len(times) == 6, log
    unit = r"[0-9.]+ (?:s|ms|µs|ns)|(?:\d+(?:d|h|min|s) ?)+"
    assert all(re.fullmatch(rf"CPU times: user ({unit}), sys: ({unit}), total: ({unit})", line)
               for line in times[0::2]), times
    assert all(re.fullmatch(rf"Wall time: ({unit})", line) for line in times[1::2]), times
    assert [(o.mime_type, o.data.decode()) for o in outcome.outputs] == [("text/plain", "4999950000")]
    assert "quiet" not in log


def test_line_time_prints_the_statements_times_and_keeps_its_value(tmp_path: Path) -> None:
    """``%time STATEMENT`` ran "once, untimed". As IPython's (checked there): the times are
    printed after each timed line; an expression's value is the cell's result and can be
    assigned; a comment may follow it; an error is printed and the cells go on, and the run
    fails at its end, as papermill fails it (the ninth pass); what cannot be one line (a
    compound statement) still runs once, untimed, with a note."""
    outcome, log = failed_run(tmp_path, "%time total = sum(range(10**5))\nsmall = %time total // 10  # a tenth\n"
                                        "print('small', small)",
                              "if True:\n    %time inner = 3\n%time 1/0\nprint('after the error', inner)",
                              "%time for i in range(2): print('loop', i)\n%time total * 2")
    assert outcome.error.startswith("nb.ipynb cell 2: the %time statement raised ZeroDivisionError: division by zero")
    times = [line for line in log if line.startswith(("CPU times:", "Wall time:"))]
    assert len(times) == 8 and all(line.startswith("CPU times: user ") for line in times[0::2]), log  # none after 1/0
    assert all(line.startswith("Wall time: ") for line in times[1::2]), log
    assert "small 499995000" in log and "after the error 3" in log and "loop 1" in log, log
    assert "ZeroDivisionError: division by zero" in log, log
    from peach_tasks.sources.notebook import neutralise_magics

    assert neutralise_magics("%time for i in range(2): print('loop', i)")[1] == [
        "line 1: '%time for i in range(2): print('loop', i)': the statement runs once, untimed"]
    assert [(o.mime_type, o.data.decode()) for o in outcome.outputs] == [("text/plain", "9999900000")]


WHO_CELLS = ("import numpy as np\nsmall = np.zeros((3, 4))\nwide = np.zeros((300, 400))\nhuge = np.zeros((3000, 400))\n"
             "table = {1: 2}\nitems = [1, 2]\nlong = 'x' * 80\nimport os\ndef f(): pass\nclass K: pass\nk = K()\n"
             "multi = 'a\\nb'\nIn = 'mine'\n_private = 1",)


def test_who_and_whos_print_what_ipython_prints(tmp_path: Path) -> None:
    """``%who`` and ``%whos`` printed nothing in a run. As IPython (run here on the same cells,
    whose output the test compares line for line, addresses aside): the names, nine to a line,
    without ``_`` ones or IPython's own (a rebound ``In`` is the notebook's); by type; the
    table with arrays' shapes and sizes; ``%who_ls`` as a value."""
    import contextlib
    import io

    from IPython.core.interactiveshell import InteractiveShell

    magics = "%who\n%who ndarray dict\n%who float\n%whos\nnames = %who_ls\nprint(names)"
    outcome, log = logged(tmp_path, *WHO_CELLS, magics)
    shell = InteractiveShell.instance()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        shell.run_cell(WHO_CELLS[0])
        shell.run_cell(magics)
    theirs = [line.rstrip() for line in printed.getvalue().splitlines()]
    ours = [line.rstrip() for line in log[log.index(next(line for line in log if line.startswith("In\t"))):]]
    assert len(theirs) == 20, theirs  # 2 + 1 + 1 lines of %who, 15 of %whos, the list
    addresses = re.compile(r" at 0x[0-9a-f]+")
    assert [addresses.sub("", line) for line in ours][:len(theirs)] == [addresses.sub("", line) for line in theirs]
    assert "In\t" in ours[0] and "_private" not in " ".join(ours)


def test_a_warning_from_the_same_line_is_shown_in_every_cell_as_in_ipython(tmp_path: Path) -> None:
    """IPython clears the notebook's warning registry before each cell, so a helper that warns
    (a pandas FutureWarning from a function called in many cells) warns in each; a run showed
    it once. Within one cell, Python's "once per place" still holds, as in IPython."""
    _, log = logged(tmp_path, "import warnings\ndef load():\n    warnings.warn('careful')\nload()",
                    "load()", "load()\nload()")
    assert len([line for line in log if line.endswith("UserWarning: careful")]) == 3, log


def failed_run(tmp_path: Path, *cells: str) -> tuple[Any, list[str]]:
    outcome, log = run_extracted(tmp_path, notebook(tmp_path, *cells), None)
    assert outcome.status is RunStatus.FAILURE, (outcome.error, log)
    return outcome, [line.split(" ", 1)[-1] for line in log]


def test_a_display_that_raises_fails_the_run_after_the_last_cell_as_papermill_does(tmp_path: Path) -> None:
    """Found by the eighth pass: a ``display()`` whose ``_repr_html_`` raises is shown by
    IPython as a traceback and the next cells run; papermill then fails the run. A run
    succeeded, with a line in its log. Now the cells still all run, and the run fails at its
    end with the first such error, where it was shown."""
    outcome, log = failed_run(
        tmp_path, "class BadHtml:\n    def _repr_html_(self):\n        raise KeyError('html boom')\n"
        "    def __repr__(self):\n        return 'bad html'\ndisplay(BadHtml())",
        "display(BadHtml())", "print('the last cell ran')")
    assert "the last cell ran" in log, log
    assert outcome.error.startswith("nb.ipynb cell 1: BadHtml._repr_html_() raised KeyError: 'html boom' (and 1 more): "
                                    "Jupyter shows its traceback"), outcome.error
    assert [(o.mime_type, o.data) for o in outcome.outputs] == [("text/plain", b"bad html")] * 2  # IPython's fallback
    assert any("nb.ipynb cell 2: BadHtml._repr_html_() raised KeyError('html boom')" in line for line in log), log


def test_a_result_that_cannot_be_shown_fails_its_cell_as_papermill_stops_there(tmp_path: Path) -> None:
    """The ninth pass: papermill stops at a cell whose result it cannot show (a ``__repr__``
    or ``_repr_html_`` that raises on the cell's last expression); the later cells never run."""
    outcome, log = failed_run(
        tmp_path, "class BadRepr:\n    def __repr__(self):\n        raise ValueError('repr boom')",
        "print('before')\nBadRepr()", "print('never')")
    assert "before" in log and "never" not in log, log
    assert outcome.error.startswith("nb.ipynb cell 1 line 3: ValueError: repr boom"), outcome.error


def test_a_figure_that_cannot_be_drawn_fails_the_run_at_its_end(tmp_path: Path) -> None:
    """Bad mathtext in a title: Jupyter's inline backend shows the error under the cell
    ("Error in callback"), papermill fails the run; a run kept no figure and succeeded."""
    outcome, log = failed_run(
        tmp_path, "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.title(r'$\\alpha_$ bad')",
        "print('next cell')")
    assert "next cell" in log
    assert outcome.error.startswith("nb.ipynb cell 1: drawing a figure raised ValueError"), outcome.error


def test_not_implemented_is_no_representation_and_no_failure(tmp_path: Path) -> None:
    """IPython's formatters take ``NotImplementedError`` as "no such representation"."""
    kept = shown(tmp_path, "class Plain:\n    def _repr_html_(self):\n        raise NotImplementedError\n"
                           "    def __repr__(self):\n        return 'plain'\nPlain()")
    assert kept == [("text/plain", "plain")]


def test_ten_thousand_failing_displays_say_twenty_and_count_the_rest(tmp_path: Path) -> None:
    """The hostile case: the log says the first 20 failures, the run's error counts them all."""
    outcome, log = failed_run(tmp_path, "class Bad:\n    def _repr_html_(self):\n        raise ValueError('no')\n"
                                        "for _ in range(10_000):\n    display(Bad())")
    assert len([line for line in log if "_repr_html_() raised ValueError('no')" in line]) == 20
    assert "(and 9999 more)" in outcome.error


@pytest.mark.parametrize("magic", ["", "%pwd\n"])
def test_plotly_takes_a_kernels_renderer_with_or_without_magics(tmp_path: Path, magic: str) -> None:
    """Found by the eighth pass: plotly chose its renderer by the shell it found. Without
    magics (no shell) it chose none: ``fig.show()`` showed nothing and ``fig`` printed its
    whole dict into the log; with a magic, ``plotly_mimetype+notebook``. A kernel gets
    ``plotly_mimetype`` (papermill keeps application/vnd.plotly.v1+json): so does every run
    now, and the log says once why the figure is not kept (the dashboard runs no plotly.js)."""
    outcome, log = logged(tmp_path, magic + "import plotly.graph_objects as go\nimport plotly.io as pio\n"
                                   "fig = go.Figure(go.Scatter(x=[1, 2, 3], y=[3, 1, 2]))\nfig.show()",
                          "fig", "print('renderer', pio.renderers.default)")
    assert "renderer plotly_mimetype" in log, log
    assert not any("Figure({" in line for line in log), log
    said = [line for line in log if "application/vnd.plotly.v1+json not kept" in line]
    assert len(said) == 1 and "fig.to_image(format='png')" in said[0], log
    assert list(outcome.outputs) == []


RESET_CELLS = ("import numpy as np\narray = np.zeros(3)\nkept = 2\n_private = 1\nkept",
               "%reset -f array\nprint('array' in dir(), kept)",
               "%reset -f\nprint(sorted(n for n in dir()\n"
               "             if not n.startswith('__') and n not in ('get_ipython', 'open')))\nprint(Out)",
               "3", "print('then', _)")


def test_reset_f_empties_the_namespace_as_ipython_does(tmp_path: Path) -> None:
    """Found by the eighth pass: ``%reset -f`` was refused before the run. It now empties the
    notebook's names as IPython does (compared here with IPython on the same cells; IPython
    keeps get_ipython and open in the namespace, a run has them as builtins)."""
    import contextlib
    import io

    from IPython.core.interactiveshell import InteractiveShell

    from peach_tasks.sources.notebook import transform_cell

    _, log = logged(tmp_path, *RESET_CELLS)
    printed = io.StringIO()
    shell = InteractiveShell.instance()
    shell.reset(new_session=True)
    with contextlib.redirect_stdout(printed):
        for cell in RESET_CELLS:
            shell.run_cell(cell)
    theirs = [line for line in printed.getvalue().splitlines() if not line.startswith("Out[")]
    assert theirs == ["False 2", "['In', 'Out', '_dh', '_ih', '_oh', 'exit', 'quit']", "{}", "then 3"], theirs
    assert [line for line in log if line in theirs] == theirs, log
    # Without -f IPython asks; papermill's kernel, without input, takes it as given (the ninth pass).
    assert transform_cell("%reset").problems == [] and transform_cell("%reset").shell


def test_dotenv_extension_loads_the_env_file_beside_the_notebook(tmp_path: Path) -> None:
    """``%load_ext dotenv`` then ``%dotenv`` (python-dotenv's IPython extension, common in
    public notebooks) was refused before the run; it now loads the .env file through
    python-dotenv's own functions, as in Jupyter. Without the extension loaded, ``%dotenv``
    fails its cell as in IPython."""
    _, log = logged(tmp_path, "%load_ext dotenv\n%dotenv\nimport os\nprint('value', os.environ['PEACH_DOTENV_VALUE'])",
                    "%dotenv -o other.env\nprint('again', os.environ['PEACH_DOTENV_VALUE'])",
                    files={".env": "PEACH_DOTENV_VALUE=from-dotenv\n", "other.env": "PEACH_DOTENV_VALUE=other\n"})
    assert "value from-dotenv" in log and "again other" in log, log
    outcome, log = run_extracted(tmp_path, notebook(tmp_path, "%dotenv"), None)
    assert outcome.status is RunStatus.FAILURE and "Line magic function `%dotenv` not found" in outcome.error


def test_ninth_pass_time_cell_errors_reset_without_f_and_the_inline_rc(tmp_path: Path) -> None:
    """Found by the ninth pass, each as papermill has it: a ``%%time`` cell that raises prints
    its traceback and the next cells run, then the run fails; ``%reset`` without ``-f`` resets
    (a kernel without input takes the confirmation as given); ``%config InlineBackend.rc``
    sets the figures' size (IPython's PNG of the same plot, at figure.figsize (3, 2))."""
    from PIL import Image

    outcome, log = failed_run(
        tmp_path, "%config InlineBackend.rc = {'figure.figsize': (3, 2)}\nimport matplotlib.pyplot as plt\nx = 1",
        "%reset\nprint('x' in dir())", "import matplotlib.pyplot as plt\nplt.plot([1, 2]);",
        "%%time\nraise RuntimeError('timed boom')", "print('after the timed cell')")
    assert "False" in log and "after the timed cell" in log and "RuntimeError: timed boom" in log, log
    assert outcome.error.startswith("nb.ipynb cell 4: the %%time cell raised RuntimeError: timed boom"), outcome.error
    [figure] = outcome.outputs
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt
    from IPython.core.pylabtools import print_figure

    with matplotlib.rc_context({"figure.figsize": (3, 2)}):
        plt.plot([1, 2])
        expected = Image.open(io.BytesIO(print_figure(plt.gcf(), "png"))).size
        plt.close("all")
    assert Image.open(io.BytesIO(figure.data)).size == expected and expected[0] < 320  # not 6.4 x 4.8 inches


def test_an_error_shown_earlier_is_named_first_when_a_later_cell_raises(tmp_path: Path) -> None:
    """The ninth pass: after a display error in one cell, a later cell raising made the run
    name only the later error; papermill names the first cell with an error. Both are said."""
    outcome, _ = failed_run(
        tmp_path, "class BadHtml:\n    def _repr_html_(self):\n        raise KeyError('html boom')\ndisplay(BadHtml())",
        "raise ValueError('later')")
    assert outcome.error.startswith("nb.ipynb cell 1: BadHtml._repr_html_() raised KeyError: 'html boom'"), \
        outcome.error
    assert outcome.error.endswith("; then nb.ipynb cell 2 line 1: ValueError: later"), outcome.error
