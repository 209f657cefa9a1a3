"""Patterns found by running real public notebooks (IPython's examples, course notebooks)
through papermill and peach-tasks side by side, where peach-tasks differed. Each is rebuilt
here in a notebook of our own (none is copied) and run by the real python executor in this
interpreter, which has IPython, as papermill's kernel would run it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_notebook import code, write_nb
from test_notebook_formats import run_extracted

from peach_tasks.model import RunStatus
from peach_tasks.sources.notebook_files import NotebookError


def notebook(tmp_path: Path, *cells: str, files: dict[str, str] | None = None) -> Path:
    for name, text in (files or {}).items():
        (tmp_path / name).write_text(text)
    return write_nb(tmp_path, [code(c) for c in cells])


def shown(tmp_path: Path, *cells: str, **kwargs: Any) -> list[tuple[str, str]]:
    """The run's outputs as (mime type, text), after checking that it succeeded."""
    outcome, log = run_extracted(tmp_path, notebook(tmp_path, *cells, **kwargs), None)
    assert outcome.status is RunStatus.SUCCESS, (outcome.error, log)
    return [(o.mime_type, o.data.decode()) for o in outcome.outputs]


def logged(tmp_path: Path, *cells: str, **kwargs: Any) -> tuple[Any, list[str]]:
    """The run's outcome, after checking that it succeeded, and its log lines without their
    time stamps."""
    outcome, log = run_extracted(tmp_path, notebook(tmp_path, *cells, **kwargs), None)
    assert outcome.status is RunStatus.SUCCESS, (outcome.error, log)
    return outcome, [line.split(" ", 1)[-1] for line in log]


def test_a_bare_tuple_as_a_cells_last_line_is_one_result(tmp_path: Path) -> None:
    """``X.shape, y.shape`` at the end of a cell: Jupyter shows the tuple."""
    assert shown(tmp_path, "x = 3\nx, x + 1", "rest = [1]\n*rest, 2") == [("text/plain", "(3, 4)"),
                                                                          ("text/plain", "(1, 2)")]


def test_timeit_shows_no_value_where_time_does(tmp_path: Path) -> None:
    """``%timeit EXPR`` as the last line, or a ``%%timeit`` cell ending with an expression,
    shows its timing in Jupyter, never a value (a huge list was kept as an output);
    ``%time EXPR`` and a ``%%time`` cell show the value, as in Jupyter."""
    assert shown(tmp_path, "%timeit [1, 2]", "%timeit -n 1 -r 1 list(range(3))", "%%timeit x = [1]\nx * 2",
                 "%time [3, 4]", "%%time\n[5]") == [("text/plain", "[3, 4]"), ("text/plain", "[5]")]


def test_ipythons_uppercase_cell_magics_are_its_display_magics(tmp_path: Path) -> None:
    svg = '<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"></svg>'
    assert shown(tmp_path, "%%HTML\n<i>upper</i>", f"%%SVG\n{svg}") == [("text/html", "<i>upper</i>"),
                                                                       ("image/svg+xml", svg)]


def test_run_without_py_finds_the_file_as_ipython_does(tmp_path: Path) -> None:
    """``%run foo`` runs foo.py when there is no file named foo: one %%writefile wrote,
    one of the repository; a file named exactly as given runs as Python whatever its name."""
    assert shown(tmp_path, "%%writefile written.py\nWRITTEN = 7", "%run written\n%run helper\n%run script",
                 "WRITTEN, HELPER, SCRIPT",
                 files={"helper.py": "HELPER = 'repo'\n", "script": "SCRIPT = 'no suffix'\n"})[-1] == (
        "text/plain", "(7, 'repo', 'no suffix')")


def test_get_ipython_imported_from_ipython_is_the_runs_shell(tmp_path: Path) -> None:
    """``from IPython import get_ipython`` shadows the builtin; outside a kernel IPython's
    returns None, and every later magic (turned into ``get_ipython().…``) failed."""
    assert shown(tmp_path, "from IPython import get_ipython\nip = get_ipython()\nip.run_line_magic('env', 'SEEN=1')",
                 "from IPython.core.getipython import get_ipython as again\nlisting = !echo hi\n%env OTHER=2",
                 "import os\n(type(ip).__name__, again() is ip, list(listing), os.environ['SEEN'], "
                 "os.environ['OTHER'])") == [("text/plain", "('Shell', True, ['hi'], '1', '2')")]


def test_a_display_of_a_type_not_kept_says_so_in_the_log(tmp_path: Path) -> None:
    """``display_javascript(JS, raw=True)``, ``%%javascript`` and ``display(Javascript(...))``
    (a progress bar's hundred updates): Jupyter's page runs the script and shows nothing. A
    run keeps no script (the dashboard runs none): not a placeholder text each, which ate
    the outputs' bound, nor silently: its log says so once."""
    path = notebook(tmp_path, "from IPython.display import Javascript, display_javascript\n"
                              "display_javascript('console.log(1)', raw=True)",
                    "%%javascript\nconsole.log(2)", "for i in range(150):\n    display(Javascript(f'bar({i})'))",
                    "display('kept')",
                    # A script with text of its own (the tenth pass: dropped whole): its text is kept.
                    "class Gauge:\n    def _repr_javascript_(self):\n        return 'draw()'\n"
                    "    def __repr__(self):\n        return 'Gauge at 42%'\ndisplay(Gauge())")
    outcome, log = run_extracted(tmp_path, path, None)
    assert outcome.status is RunStatus.SUCCESS, (outcome.error, log)
    assert [(o.mime_type, o.data) for o in outcome.outputs] == [("text/plain", b"'kept'"),
                                                                ("text/plain", b"Gauge at 42%")]
    said = [line for line in log if "not kept as an output" in line]
    assert len(said) == 1 and "display of application/javascript not kept" in said[0], log


def test_a_display_hook_a_library_set_does_not_take_the_next_cells_results(tmp_path: Path) -> None:
    """sympy's ``init_printing()`` outside IPython sets ``sys.displayhook``; in Jupyter the
    next cells' results are still shown as results (IPython sets its hook for each cell)."""
    assert shown(tmp_path, "import sys\nsys.displayhook = lambda value: print('library hook', value)",
                 "41 + 1") == [("text/plain", "42")]


def test_pasted_prompts_and_help_on_a_magic_as_ipython_takes_them(tmp_path: Path) -> None:
    """A cell pasted from a Python session (``>>>``, ``...``) or from IPython (``In [1]:``,
    ``...:``) runs without its prompts; ``%load?`` only shows help, as ``x?`` does."""
    assert shown(tmp_path, ">>> flat = 1\n>>> if flat:\n...     flat += 1\n>>> flat",
                 "In [3]: total = flat\n   ...: total * 10", "%load?\n%%timeit??") == [
        ("text/plain", "2"), ("text/plain", "20")]


def test_ipythons_history_of_results(tmp_path: Path) -> None:
    """``_``, ``__``, ``___``, ``_N`` and ``Out[N]`` (N the cell's execution count, as
    Jupyter numbers it) hold earlier cells' results, as in IPython: a tutorial's
    ``_10 == Out[10]`` failed with NameError."""
    assert shown(tmp_path, "1 + 1", "x = 3", "x * 2", "[_, __, ___, _1, _3, Out[3], sorted(Out), _ == Out[3]]") == [
        ("text/plain", "2"), ("text/plain", "6"), ("text/plain", "[6, 2, '', 2, 6, 6, [1, 3], True]")]


def test_clear_output_keeps_what_the_notebook_shows_at_the_end(tmp_path: Path) -> None:
    """A loop that redraws (``clear_output(wait=True)`` then ``display``) keeps its last
    output, as the notebook does, not one per pass; ``clear_output()`` clears the running
    cell's outputs at once, a wait with nothing after it clears nothing; earlier cells keep
    theirs. IPython's own would only print escape codes to the log."""
    outcome, log = run_extracted(tmp_path, notebook(
        tmp_path, "display('first cell')",
        "from IPython.display import clear_output\nfor i in range(5):\n    clear_output(wait=True)\n    display(i)",
        "display('kept')\nclear_output(wait=True)", "display('gone')\nclear_output()", "display('last')"), None)
    assert outcome.status is RunStatus.SUCCESS, (outcome.error, log)
    assert [(o.seq, o.data) for o in outcome.outputs] == [(1, b"'first cell'"), (2, b"4"), (3, b"'kept'"),
                                                          (4, b"'last'")]
    assert not any("\x1b" in line for line in log), log


def test_a_class_as_a_result_reads_as_ipython_shows_it(tmp_path: Path) -> None:
    """``type(my_string)`` shows ``str`` in Jupyter (IPython's pretty printer), not
    ``<class 'str'>``; a notebook's class ``__main__.Foo``; a metaclass's own repr is kept."""
    assert shown(tmp_path, "type('text')", "class Foo:\n    class Inner:\n        pass\nFoo.Inner",
                 "class Meta(type):\n    def __repr__(cls):\n        return 'meta!'\nclass Bar(metaclass=Meta):\n"
                 "    pass\nBar", "import collections\ncollections.OrderedDict") == [
        ("text/plain", "str"), ("text/plain", "__main__.Foo.Inner"), ("text/plain", "meta!"),
        ("text/plain", "collections.OrderedDict")]


def test_an_error_an_ipywidgets_output_catches_is_shown_and_the_run_goes_on(tmp_path: Path) -> None:
    """ipywidgets' ``Output`` swallows an exception raised inside it and shows its traceback
    through the shell's ``showtraceback``, which the run's shell lacked (AttributeError). In a
    notebook without magics IPython's ``get_ipython()`` is None, as outside a kernel: the
    library then takes its plain-Python path and lets the error through, as in a script."""
    outcomes = {}
    for name, first in (("magic", "%env WIDGETS=1\n"), ("plain", "")):
        folder = tmp_path / name
        folder.mkdir()
        path = notebook(folder, f"{first}import ipywidgets as widgets\nout = widgets.Output()\n"
                                "with out:\n    raise ValueError('shown, not raised')",
                        "print('next cell runs')")
        outcomes[name] = run_extracted(folder, path, None)
    outcome, log = outcomes["magic"]
    assert outcome.status is RunStatus.SUCCESS, (outcome.error, log)
    text = "\n".join(log)
    assert "ValueError: shown, not raised" in text and "Traceback (most recent call last)" in text, log
    assert "next cell runs" in text
    outcome, log = outcomes["plain"]
    assert outcome.status is RunStatus.FAILURE and outcome.error == "nb.ipynb cell 1 line 4: ValueError: shown, " \
        "not raised", (outcome.error, log)


def test_pyplot_beside_ipython_and_a_magic_and_ipythons_cell_events(tmp_path: Path) -> None:
    """Once IPython is imported (``from IPython.display import ...``), pyplot registers a
    callback on the shell's ``events``, which the run's shell lacked: every figure of a
    notebook with a magic failed with AttributeError. Callbacks run around each cell, as in
    a kernel, and one that fails is reported without failing the cell."""
    outcome, text = logged(
        tmp_path, "%env A=1\nfrom IPython.display import display",
        "ip = get_ipython()\nip.events.register('pre_run_cell', lambda info: print('before', info.raw_cell[:5]))\n"
        "ip.events.register('post_run_cell', lambda result: print('after', result.execution_count, result.success))\n"
        "ip.events.register('post_execute', lambda: 1 / 0)",
        "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()")
    assert [o.mime_type for o in outcome.outputs] == ["image/png"]
    assert "before impor" in text and "after 3 True" in text, text
    assert any(line.startswith("Error in callback") for line in text) and "ZeroDivisionError: division by zero" in text


def test_html_that_shows_nothing_without_its_scripts_is_not_kept(tmp_path: Path) -> None:
    """plotly's notebook renderer shows its set-up, 4.8 MB of plotly.js, then each figure as an
    empty ``div`` its script fills: in the dashboard, which runs no task's script, both show
    nothing, and the set-up ate half the outputs' bound each time. Like a script display, not
    kept, and said once; HTML with text or an image besides its scripts is kept."""
    outcome, log = run_extracted(tmp_path, notebook(
        tmp_path, "from IPython.display import HTML, display\n"
                  "display(HTML('<script src=\"x.js\"></script>\\n<SCRIPT>var a = 1;</SCRIPT>  '))\n"
                  "display(HTML('<div style=\"height:5px\"><div id=\"plot\"></div><script>draw()</script>'\n"
                  "             '<style>p {}</style><!-- a note --></div>'))\n"
                  "display(HTML('<script>unterminated'))\n"
                  "display(HTML('<p>caption</p><script>x()</script>'))\n"
                  "display(HTML('<div><img src=\"data:image/png;base64,AA==\"></div><script>x()</script>'))\n"
                  "display(HTML('<div></div>'))"), None)
    assert outcome.status is RunStatus.SUCCESS, (outcome.error, log)
    assert [(o.mime_type, o.data) for o in outcome.outputs] == [
        ("text/html", b"<p>caption</p><script>x()</script>"),
        ("text/html", b'<div><img src="data:image/png;base64,AA=="></div><script>x()</script>'),
        ("text/html", b"<div></div>")]  # no script: kept as it is, as ever
    said = [line for line in log if "not kept as an output" in line]
    assert len(said) == 1 and "text/html that shows nothing without its scripts not kept as an output (the " \
        "dashboard runs no task's script)" in said[0], log


def test_sys_exit_names_its_cell_and_input_says_nobody_answers(tmp_path: Path) -> None:
    """``sys.exit(0)`` ends the run as a success, now said in the log with its cell and line
    (the cells after it were skipped in silence); another status fails the run at its cell
    and line (it read "process exited with code 3"); ``input()`` fails with a sentence saying
    why, as papermill's kernel's StdinNotImplementedError (an EOFError too), not a bare EOFError."""
    cases = {
        "zero": ("print('before')\nimport sys\nsys.exit(0)", "print('after')"),
        "three": ("import sys", "sys.exit(3)"),
        "input": ("name = input('Your name: ')",),
    }
    ran = {}
    for name, cells in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        ran[name] = run_extracted(folder, notebook(folder, *cells), None)
    outcome, log = ran["zero"]
    assert outcome.status is RunStatus.SUCCESS, (outcome.error, log)
    assert any(line.endswith("peach-tasks: the task ended the run at nb.ipynb cell 1 line 3 (SystemExit, status 0): "
                             "a success; what came after it did not run") for line in log), log
    assert not any(line.endswith("after") for line in log)
    outcome, log = ran["three"]
    assert outcome.status is RunStatus.FAILURE and outcome.exit_code == 3, (outcome, log)
    assert outcome.error == "nb.ipynb cell 2 line 1: SystemExit: 3"
    outcome, log = ran["input"]
    assert outcome.status is RunStatus.FAILURE
    assert outcome.error.startswith("nb.ipynb cell 1 line 1: StdinNotImplementedError: input() was called, but a "
                                    "scheduled run has no one to answer it"), outcome.error


def test_a_task_scheduled_without_await_runs_when_a_later_cell_awaits(tmp_path: Path) -> None:
    """``asyncio.ensure_future(work())`` in a cell without ``await`` puts the task on the
    thread's event loop; a later cell's ``await`` ran another loop, and the task never ran
    ("Task was destroyed but it is pending!"). In a kernel one loop runs them all."""
    assert shown(tmp_path, "import asyncio\nran = []\nasync def work():\n    ran.append('work')\n"
                           "task = asyncio.ensure_future(work())",
                 "await asyncio.sleep(0.05)\nran, task.done()") == [("text/plain", "(['work'], True)")]


def test_precision_sets_how_floats_read_and_numpys_print_precision(tmp_path: Path) -> None:
    """``%precision 3`` was skipped as having no effect; in IPython a float result then reads
    0.333 and numpy prints arrays with 3 decimals; ``%precision`` alone restores both."""
    outcome, log = run_extracted(tmp_path, notebook(
        tmp_path, "import numpy as np\n%precision 3", "1 / 3",
        "print(np.array([1 / 3, 2 / 3]))\n%precision %.1e\n2 / 3", "%precision\n1 / 4\n",
        "print(np.array([1 / 3]))"), None)
    assert outcome.status is RunStatus.SUCCESS, (outcome.error, log)
    assert [(o.mime_type, o.data.decode()) for o in outcome.outputs] == [
        ("text/plain", "'%.3f'"), ("text/plain", "0.333"), ("text/plain", "6.7e-01"), ("text/plain", "0.25")]
    printed = [line.split(" ", 1)[-1] for line in log]
    assert "[0.333 0.667]" in printed and "[0.33333333]" in printed, printed


def test_capture_keeps_displays_as_ipythons_rich_outputs(tmp_path: Path) -> None:
    """``%%capture cap`` keeps each display as IPython's ``RichOutput``: ``.data`` maps mime
    types to content (it was the displayed object itself, and ``.data`` its HTML string);
    ``cap.show()`` and ``output.display()`` show them again as they were."""
    out = shown(tmp_path, "%%capture cap\nfrom IPython.display import HTML\ndisplay(HTML('<b>hi</b>'))",
                "first = cap.outputs[0]\nsorted(first.data), first.data['text/html']", "cap.show()\nfirst.display()")
    assert out == [("text/plain", "(['text/html', 'text/plain'], '<b>hi</b>')"), ("text/html", "<b>hi</b>"),
                   ("text/html", "<b>hi</b>")], out


def test_a_cell_tagged_raises_exception_shows_its_error_the_run_goes_on_and_fails_at_its_end(
        tmp_path: Path) -> None:
    """nbclient (nbconvert --execute, papermill's engine) runs past a cell tagged
    ``raises-exception``, the error shown in its output; papermill's check of the executed
    notebook then fails the run, tag or not (the tenth pass against papermill: a run
    succeeded). So the next cells run, and the run fails at its end naming that cell."""
    cells = [code("x = 1"), code("x = 2\n1 / 0\nx = 3"), code("x")]
    cells[1].metadata["tags"] = ["raises-exception"]
    outcome, log = run_extracted(tmp_path, write_nb(tmp_path, cells), None)
    assert outcome.status is RunStatus.FAILURE, (outcome, log)
    assert outcome.error == ("nb.ipynb cell 2 line 2: a cell tagged raises-exception raised ZeroDivisionError: "
                             "division by zero: Jupyter shows its traceback in the output and runs the next cells, "
                             "papermill then fails the run"), outcome.error
    assert [(o.mime_type, o.data) for o in outcome.outputs] == [("text/plain", b"2")]  # cell 3 ran; x = 3 never did
    text = [line.split(" ", 1)[-1] for line in log]
    at = text.index('  File "nb.ipynb cell 2", line 2, in <module>')
    assert text[at - 1] == "Traceback (most recent call last):" and "ZeroDivisionError: division by zero" in text
    # An error in a later, untagged cell stops the run there, named after the shown one.
    cells.append(code("undefined_name"))
    outcome, _ = run_extracted(tmp_path, write_nb(tmp_path, cells), None)
    assert outcome.error.endswith("; then nb.ipynb cell 4 line 1: NameError: name 'undefined_name' is not defined")


def test_a_cell_tagged_skip_execution_never_runs(tmp_path: Path) -> None:
    """nbclient skips it (the tenth pass against papermill: a cell tagged not to retrain ran)."""
    cells = [code("x = 1"), code("x = 2\nprint('retrained')"), code("x")]
    cells[1].metadata["tags"] = ["skip-execution"]
    outcome, log = run_extracted(tmp_path, write_nb(tmp_path, cells), None)
    assert outcome.status is RunStatus.SUCCESS, (outcome, log)
    assert [(o.mime_type, o.data) for o in outcome.outputs] == [("text/plain", b"1")]
    assert not any("retrained" in line for line in log)
    # An entry function only a skipped cell defines: said so (the re-check said "defines no
    # top-level function" of a function the notebook does define).
    cells = [code("x = 1"), code("def main():\n    return 1")]
    cells[1].metadata["tags"] = ["skip-execution"]
    with pytest.raises(NotebookError, match="defines 'main' only in cell 2, tagged skip-execution, which never runs"):
        run_extracted(tmp_path, write_nb(tmp_path, cells), "main")


def test_a_magic_called_through_get_ipython_is_refused_at_run_time_in_validates_words(tmp_path: Path) -> None:
    """``get_ipython().run_line_magic('load_ext', 'sql')`` (an nbconvert export) is code,
    which validate cannot refuse; the run fails at that line saying what validate says of
    ``%load_ext sql``, not only "line magic %load_ext is not supported"."""
    outcome, log = run_extracted(tmp_path, notebook(tmp_path, "x = 1",
                                                    "get_ipython().run_line_magic('load_ext', 'sql')"), None)
    assert outcome.status is RunStatus.FAILURE
    assert outcome.error == ("nb.ipynb cell 2 line 1: peach_tasks_notebook_shell.UsageError: %load_ext sql: the "
                             "IPython extension 'sql' is not loaded by peach-tasks: a run would differ from "
                             "Jupyter's; do the same in Python"), log
    # The traceback starts at the cell, not in peach-tasks' own files around it.
    text = [line.split(" ", 1)[-1] for line in log]
    assert text[:2] == ["Traceback (most recent call last):", '  File "nb.ipynb cell 2", line 1, in <module>'], text


def test_publish_display_data_is_a_display(tmp_path: Path) -> None:
    """IPython's ``publish_display_data`` (bokeh's ``show`` and ``output_notebook`` call it)
    only printed its text without a kernel: the bundle is now shown as ``display(raw=True)``."""
    assert shown(tmp_path, "from IPython.display import publish_display_data\n"
                           "publish_display_data({'text/plain': 'pub', 'text/markdown': '# pub'})\n"
                           "from IPython.core.display_functions import publish_display_data as again\n"
                           "again({'text/plain': 'plain only'})") == [("text/markdown", "# pub"),
                                                                      ("text/plain", "plain only")]


def test_a_backend_the_notebook_chooses_shows_no_figure_and_keeps_it_open(tmp_path: Path) -> None:
    """``matplotlib.use('Agg')`` or ``%matplotlib agg``: in Jupyter no figure is shown after
    it, and a figure stays open for a later cell to save. A run showed it and closed it at the
    cell's end, so the later ``savefig`` wrote a blank image. What is left open at the run's end
    is still kept (tests/test_task_outputs.py). Jupyter's inline backend named explicitly keeps
    the run's figures shown."""
    import struct

    def png_size(path: Path) -> tuple[int, int]:
        return struct.unpack(">II", path.read_bytes()[16:24])

    runs = {
        "use": ("import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\nplt.plot([1, 2, 3]);",
                "plt.savefig('out.png')\nlen(plt.gca().lines)"),
        "magic": ("%matplotlib agg\nimport matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()",
                  "plt.savefig('out.png')\nlen(plt.gca().lines)"),
        "inline": ("import matplotlib\nmatplotlib.use('module://matplotlib_inline.backend_inline')\n"
                   "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3]);", "len(plt.get_fignums())"),
    }
    for name, cells in runs.items():
        folder = tmp_path / name
        folder.mkdir()
        outcome, log = run_extracted(folder, notebook(folder, *cells), None)
        assert outcome.status is RunStatus.SUCCESS, (name, outcome.error, log)
        kept = [(o.mime_type, o.data) for o in outcome.outputs]
        if name == "inline":
            assert [m for m, _ in kept] == ["image/png", "text/plain"] and kept[1][1] == b"0", kept
            continue
        # No figure shown by the cells: still open in cell 2, and kept when the run ends.
        assert [(m, d) for m, d in kept if m == "text/plain"] == [("text/plain", b"1")], (name, kept)
        assert [m for m, _ in kept] == ["text/plain", "image/png"], (name, kept)
        assert png_size(folder / "out.png") == (640, 480)
        from PIL import Image

        darkest, lightest = Image.open(folder / "out.png").convert("L").getextrema()
        assert darkest < lightest  # a line on it, not a blank image


def ipython_figure(fmt: str, kwargs: dict | None = None) -> Any:
    """What Jupyter's inline backend shows for PLOTTED in ``fmt`` (IPython's own formatters)."""
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt
    from IPython.core.pylabtools import print_figure, retina_figure

    with matplotlib.rc_context():
        exec(PLOTTED, {"plt": plt})
        figure = plt.gcf()
        kwargs = kwargs or {}
        shown = retina_figure(figure, **kwargs)[0] if fmt == "retina" else print_figure(figure, fmt, **kwargs)
        plt.close("all")
    return shown


PLOTTED = "plt.plot([1, 2, 3], [3, 1, 2])\nplt.title('formats');"


def pixels(png: bytes) -> Any:
    import io

    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)))


def test_config_figure_format_retina_shows_what_jupyter_shows(tmp_path: Path) -> None:
    """``%config InlineBackend.figure_format = 'retina'``, the most common line after
    ``%matplotlib inline`` in public notebooks: Jupyter shows the figure at twice the dpi. The
    run's PNG has IPython's retina pixels; the next cell, set back to PNG, its normal ones."""
    outcome, log = run_extracted(tmp_path, notebook(
        tmp_path, "%matplotlib inline\n%config InlineBackend.figure_format = 'retina'\nimport matplotlib.pyplot as plt",
        PLOTTED, "%config InlineBackend.figure_formats = ['png']", PLOTTED), None)
    assert outcome.status is RunStatus.SUCCESS, (outcome.error, log)
    retina, normal = (o for o in outcome.outputs)
    assert (retina.kind, retina.mime_type, normal.mime_type) == ("figure", "image/png", "image/png")
    ours, theirs = pixels(retina.data), pixels(ipython_figure("retina"))
    assert ours.shape == theirs.shape and (ours == theirs).all()
    assert ours.shape[0] == 2 * pixels(normal.data).shape[0]
    assert (pixels(normal.data) == pixels(ipython_figure("png"))).all()
    assert not [line for line in log if "not followed" in line or "skipped" in line], log


def test_svg_chosen_by_config_or_set_matplotlib_formats_is_kept_as_svg(tmp_path: Path) -> None:
    """``figure_formats = {'svg'}`` and ``set_matplotlib_formats('svg')`` (IPython's
    deprecated one and matplotlib_inline's): the figure is shown as SVG, as in Jupyter; with
    ('pdf', 'png') the PNG is what a page can show."""
    outcome, log = run_extracted(tmp_path, notebook(
        tmp_path, "import matplotlib.pyplot as plt\n%config InlineBackend.figure_formats = {'svg'}", PLOTTED,
        "import warnings\nwarnings.simplefilter('ignore', DeprecationWarning)\n"
        "from matplotlib_inline.backend_inline import set_matplotlib_formats\n"
        "set_matplotlib_formats('png')\n" + PLOTTED,
        "from IPython.display import set_matplotlib_formats as deprecated\ndeprecated('svg')\n" + PLOTTED,
        "set_matplotlib_formats('pdf', 'png')\n" + PLOTTED), None)
    assert outcome.status is RunStatus.SUCCESS, (outcome.error, log)
    kept = [(o.mime_type, o.data) for o in outcome.outputs]
    assert [mime for mime, _ in kept] == ["image/svg+xml", "image/png", "image/svg+xml", "image/png"], kept
    assert kept[0][1].startswith(b"<?xml") and b"<svg" in kept[0][1] and b"formats" in kept[0][1]


def test_print_figure_kwargs_are_followed(tmp_path: Path) -> None:
    """``InlineBackend.print_figure_kwargs = {'bbox_inches': None}``: the whole figure,
    640 by 480, not its tight box; the kwargs stay with a later format change, as in Jupyter."""
    outcome, log = run_extracted(tmp_path, notebook(
        tmp_path, "import matplotlib.pyplot as plt\n%config InlineBackend.print_figure_kwargs = {'bbox_inches': None}",
        PLOTTED, "%config InlineBackend.figure_format = 'jpeg'", PLOTTED), None)
    assert outcome.status is RunStatus.SUCCESS, (outcome.error, log)
    whole, jpeg = outcome.outputs
    assert pixels(whole.data).shape == (480, 640, 4)
    assert (pixels(whole.data) == pixels(ipython_figure("png", {"bbox_inches": None}))).all()
    assert jpeg.mime_type == "image/jpeg" and pixels(jpeg.data).shape[:2] == (480, 640)


def test_an_unknown_format_in_a_variable_fails_the_cell_as_in_ipython(tmp_path: Path) -> None:
    """A format held in a name is checked when the cell runs: the cell fails with IPython's
    message, naming the cell."""
    outcome, log = run_extracted(tmp_path, notebook(
        tmp_path, "fmt = 'tiff'", "%config InlineBackend.figure_format = fmt"), None)
    assert outcome.status is RunStatus.FAILURE
    assert "ValueError: supported formats are: 'png','png2x','retina','jpg','jpeg','svg','pdf' not 'tiff'" \
        in outcome.error and "cell 2" in outcome.error, outcome.error


def test_switch_backend_called_by_the_notebook_is_its_choice(tmp_path: Path) -> None:
    """``plt.switch_backend('pdf')`` in a cell is the notebook's choice, as ``matplotlib.use``
    is (no figure shown after it); pyplot's own calls of it, resolving its default backend at
    the first figure, are not: the cell before it still shows its figure."""
    outcome, log = run_extracted(tmp_path, notebook(
        tmp_path, "import matplotlib.pyplot as plt\nplt.plot([1, 2]);",
        "plt.switch_backend('pdf')\nplt.plot([2, 1]);\nplt.gcf().savefig('later.pdf')\nlen(plt.get_fignums())"), None)
    assert outcome.status is RunStatus.SUCCESS, (outcome.error, log)
    assert [(o.mime_type, o.data) for o in outcome.outputs][:2] == [
        ("image/png", outcome.outputs[0].data), ("text/plain", b"1")], outcome.outputs
    assert (tmp_path / "later.pdf").read_bytes().startswith(b"%PDF")
