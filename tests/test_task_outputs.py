"""What a task shows (display(), matplotlib figures) becomes its run's outputs: real task
processes (bootstrap.py in this interpreter, which has matplotlib and IPython) through the
PythonExecutor, polite and hostile."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from test_python_executor import Run, make_job

from peach_tasks.executors.python import PythonExecutor
from peach_tasks.executors.run_outputs import OutputBounds, read_outputs
from peach_tasks.model import RunStatus

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

SHOWS_THEN_FAILS = """
import matplotlib.pyplot as plt
from IPython.display import HTML, display as ipython_display

class Table:  # what a pandas DataFrame offers: an HTML table and its text
    def _repr_html_(self):
        return "<table><tr><th>city</th></tr><tr><td>Zürich</td></tr></table>"
    def __repr__(self):
        return "   city\\n0  Zürich"

def main():
    plt.plot([1, 2, 3], [3, 1, 2])
    plt.show()                                  # shown here, then closed
    display(Table())                            # the builtin: no import, as in Jupyter
    ipython_display(HTML("<b>from IPython</b>"))
    handle = display({"step": 1}, display_id=True)
    handle.update({"step": 2})                  # replaces the earlier output
    display("x", display_id="same")
    display("y", display_id="same", update=True)
    plt.figure()
    plt.plot([1, 2], [2, 1])                    # left open: shown when the run ends
    raise ValueError("the data is bad")
"""


def test_outputs_of_a_failed_run_in_the_order_shown(tmp_path: Path) -> None:
    run = Run(tmp_path, SHOWS_THEN_FAILS, timeout=60.0)
    assert run.outcome.status is RunStatus.FAILURE and run.outcome.error == "ValueError: the data is bad"
    shown = [(o.seq, o.kind, o.mime_type) for o in run.outcome.outputs]
    assert shown == [(1, "figure", "image/png"), (2, "display", "text/html"), (3, "display", "text/html"),
                     (4, "display", "text/plain"), (5, "display", "text/plain"), (6, "figure", "image/png")]
    first, table, html, step, same, last = run.outcome.outputs
    assert first.data.startswith(PNG_MAGIC) and last.data.startswith(PNG_MAGIC) and first.data != last.data
    assert table.data.decode() == "<table><tr><th>city</th></tr><tr><td>Zürich</td></tr></table>"
    assert table.text == "   city\n0  Zürich"
    assert html.data == b"<b>from IPython</b>"
    assert step.data == b"{'step': 2}" and same.data == b"'y'"
    assert first.text == "<Figure size 640x480 with 1 Axes>"


def test_outputs_shown_before_a_timeout_are_kept(tmp_path: Path) -> None:
    run = Run(tmp_path, """
        import time
        def main():
            display("before the wait")
            time.sleep(60)
    """, timeout=10.0)
    assert run.outcome.status is RunStatus.TIMEOUT
    assert [(o.kind, o.data) for o in run.outcome.outputs] == [("display", b"'before the wait'")]


def test_a_task_that_shows_nothing_loads_nothing_for_it(tmp_path: Path) -> None:
    run = Run(tmp_path, """
        import sys
        def main():
            return sorted(n for n in sys.modules if "display" in n or n.startswith(("IPython", "matplotlib")))
    """)
    assert run.outcome.status is RunStatus.SUCCESS and run.outcome.result == []
    assert run.outcome.outputs == ()


def test_a_backend_the_task_chose_is_kept(tmp_path: Path) -> None:
    run = Run(tmp_path, """
        import matplotlib
        matplotlib.use("svg")
        import matplotlib.pyplot as plt
        def main():
            plt.plot([1, 2])
            return matplotlib.get_backend()
    """, timeout=60.0)
    assert run.outcome.result == "svg"
    assert [o.mime_type for o in run.outcome.outputs] == ["image/png"]  # left open: still kept


SAVEFIG_SETTINGS = """
    plt.rcParams["savefig.dpi"] = 300              # for the files the notebook saves
    plt.rcParams["savefig.transparent"] = True
    plt.rcParams["savefig.facecolor"] = "red"
    plt.rcParams["savefig.pad_inches"] = 0.5
    plt.plot([1, 2, 3], [3, 1, 2])
    plt.title("savefig settings")
"""


def test_a_shown_figure_is_drawn_as_jupyter_draws_it_whatever_savefig_settings_say(tmp_path: Path) -> None:
    """Jupyter's inline backend prints a figure at its own dpi and colours (IPython's
    print_figure): a notebook's savefig.dpi = 300 or transparent background is for its files,
    not for what it shows. The run's PNG has the pixels IPython's print_figure gives here."""
    import io
    import textwrap

    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from IPython.core.pylabtools import print_figure
    from PIL import Image

    body = textwrap.indent(textwrap.dedent(SAVEFIG_SETTINGS), "    ")
    run = Run(tmp_path, f"import matplotlib.pyplot as plt\ndef main():\n{body}    plt.show()\n", timeout=60.0)
    assert run.outcome.status is RunStatus.SUCCESS, run.outcome.error
    (shown,) = run.outcome.outputs
    with matplotlib.rc_context():
        exec(textwrap.dedent(SAVEFIG_SETTINGS), {"plt": plt})
        expected = print_figure(plt.gcf(), "png")
        plt.close("all")
    ours, theirs = (np.asarray(Image.open(io.BytesIO(data))) for data in (shown.data, expected))
    assert ours.shape == theirs.shape and ours.shape[1] < 1000  # 100 dpi, not 300
    assert (ours == theirs).all()
    assert ours[0, 0].tolist() == [255, 255, 255, 255]  # the figure's white, neither red nor transparent


def test_ten_thousand_displays_keep_the_bound_and_say_so(tmp_path: Path) -> None:
    run = Run(tmp_path, """
        def main():
            for i in range(10_000):
                display(f"line {i}")
    """, executor=PythonExecutor(outputs=OutputBounds(max_count=100, max_bytes=1 << 20)), timeout=120.0)
    assert run.outcome.status is RunStatus.SUCCESS
    kept = run.outcome.outputs
    assert len(kept) == 101 and kept[99].data == b"'line 99'"
    note = kept[100]
    assert (note.kind, note.mime_type) == ("note", "text/plain")
    assert "9900 outputs" in note.data.decode() and "at most 100 outputs" in note.data.decode()
    assert any("a run keeps at most 100 outputs" in line for line in run.log)  # the task's own note
    assert any(note.data.decode() in line for line in run.log)  # and the scheduler's


def test_the_first_displays_of_many_threads_at_once_are_all_kept(tmp_path: Path) -> None:
    """The tenth pass against papermill: a thread pool's first displays kept 4 or 5 of 8, as
    each thread loaded the display code and numbered its outputs from 1 over the others'."""
    run = Run(tmp_path, """
        import threading
        def main():
            ready = threading.Barrier(8)
            def show(i):
                ready.wait()  # all at once, before any output was shown
                display(f"thread {i}")
            threads = [threading.Thread(target=show, args=(i,)) for i in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    """)
    assert run.outcome.status is RunStatus.SUCCESS, run.log
    assert sorted(o.data for o in run.outcome.outputs) == sorted(f"'thread {i}'".encode() for i in range(8))
    assert not any("could not be written" in line for line in run.log)


def test_a_500_mb_output_is_not_kept(tmp_path: Path) -> None:
    run = Run(tmp_path, """
        class Huge:
            def _repr_html_(self):
                return "<p>" + "x" * (500 << 20)
        def main():
            display("small first")
            display(Huge())
            display("small after")
    """, timeout=120.0)
    assert run.outcome.status is RunStatus.SUCCESS
    assert [o.data for o in run.outcome.outputs[:2]] == [b"'small first'", b"'small after'"]
    assert "1 output (524288003 bytes) the task showed beyond the run's bounds" in run.outcome.outputs[2].data.decode()
    assert sum(len(o.data) for o in run.outcome.outputs) < 10 << 20


def test_files_a_hostile_task_puts_in_its_outputs_folder_are_bounded(tmp_path: Path) -> None:
    """The task owns the folder: links, FIFOs, huge files and floods of files are not trusted."""
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"kind": "display", "mime": "text/plain", "data": "the scheduler's secret"}))
    run = Run(tmp_path, f"""
        import json, os
        def main():
            display("real")
            folder = os.path.join(os.path.dirname(os.environ["RESULT_HINT"]), "outputs")
            os.symlink({str(secret)!r}, os.path.join(folder, "000002.json"))
            os.mkfifo(os.path.join(folder, "000003.json"))
            with open(os.path.join(folder, "000004.json"), "w") as f:
                f.truncate(500 << 20)  # 500 MB (sparse): never read
            with open(os.path.join(folder, "000005.json"), "w") as f:
                f.write('{{"kind": "display", "mime": "text/javascript", "data": "alert(1)"}}')
            for i in range(6, 3000):
                with open(os.path.join(folder, f"{{i:06d}}.json"), "w") as f:
                    json.dump({{"kind": "display", "mime": "text/plain", "data": str(i)}}, f)
            with open(os.path.join(folder, "dropped.json"), "w") as f:
                f.write('{{"count": "many"}}')
    """, executor=PythonExecutor(outputs=OutputBounds(max_count=50, max_bytes=1 << 20)),
              env={"PATH": os.environ["PATH"], "RESULT_HINT": str(tmp_path / "work" / "result.json")},
              work_dir=tmp_path / "work", timeout=60.0)
    assert run.outcome.status is RunStatus.SUCCESS, run.outcome
    kept = run.outcome.outputs
    assert kept[0].data == b"'real'" and len(kept) == 51
    assert all(b"secret" not in o.data for o in kept) and all(o.mime_type != "text/javascript" for o in kept)
    note = kept[-1].data.decode()
    assert "output files beyond the first 50" in note
    assert "000002.json (not a regular file)" in note and "000003.json (not a regular file)" in note
    assert "000005.json (not an output)" in note


def test_an_outputs_folder_that_is_a_link_is_not_read(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "000001.json").write_text(json.dumps({"kind": "display", "mime": "text/plain", "data": "no"}))
    (tmp_path / "outputs").symlink_to(elsewhere)
    notes: list[str] = []
    assert read_outputs(tmp_path / "outputs", OutputBounds(), notes.append) == ()
    assert notes == ["the run's outputs were not read: outputs is not a folder"]


def test_outputs_of_a_run_cancelled_by_a_stopping_scheduler_are_kept(tmp_path: Path) -> None:
    cancel = threading.Event()

    def sink(line: str) -> None:
        if line.endswith(" shown"):  # the task printed it after its display(): stop the scheduler now
            cancel.set()

    job = make_job(tmp_path, """
        import time
        def main():
            display("kept")
            print("shown", flush=True)
            time.sleep(60)
    """, timeout=60.0)
    outcome = PythonExecutor().run(job, sink, cancel)
    assert outcome.status is RunStatus.ABANDONED
    assert [o.data for o in outcome.outputs] == [b"'kept'"]


@pytest.mark.slow
def test_matplotlib_finds_the_font_list_built_with_its_environment(tmp_path: Path) -> None:
    """A sandboxed run's HOME is new: without the list built ahead, matplotlib would scan the
    system's fonts in every run. The list names the environment's final paths, not the build's."""
    from peach_tasks.executors.environments import MATPLOTLIB_SEED, EnvironmentManager

    env, problem = EnvironmentManager(tmp_path / "state").ensure("acme", ("matplotlib",))
    assert problem is None and env is not None, problem
    [seeded] = list((env.path / MATPLOTLIB_SEED).glob("fontlist-*.json"))
    text = seeded.read_text()
    assert '"fname": ' in text and ".build-" not in text  # no path of the build's folder
    home = tmp_path / "home"
    home.mkdir()
    run = Run(tmp_path, """
        import os
        import matplotlib
        def main():
            cache = matplotlib.get_cachedir()
            before = sorted(n for n in os.listdir(cache) if n.startswith("fontlist"))
            from matplotlib import font_manager
            fonts = [f.fname for f in font_manager.fontManager.ttflist]
            return {"cache": cache, "before": before, "fonts": len(fonts),
                    "missing": [f for f in fonts if not os.path.exists(f)],
                    "ours": sum(f.startswith(os.path.realpath(os.sys.prefix)) or f.startswith(os.sys.prefix) for f in fonts)}
    """, interpreter=env.python, env={"PATH": os.environ["PATH"], "HOME": str(home)}, timeout=120.0)
    assert run.outcome.status is RunStatus.SUCCESS, run.log
    found = run.outcome.result
    assert found["cache"].startswith(str(home)) and found["before"] == [seeded.name]  # there before any scan
    assert found["fonts"] > 0 and found["missing"] == [] and found["ours"] > 0
