"""Code extraction from notebooks: real .ipynb files written with nbformat, then executed."""

from __future__ import annotations

import json
import sysconfig
import warnings
from pathlib import Path
from typing import Any

import nbformat
import pytest
from hypothesis import given
from hypothesis import strategies as st

from peach_tasks.errors import PeachError
from peach_tasks.sources.notebook import (
    ExtractedCode,
    NotebookError,
    extract_code,
    find_entry_cell,
    neutralise_magics,
    shows_last_expression,
    transform_cell,
)

v4 = nbformat.v4


def code(text: str) -> Any:
    return v4.new_code_cell(text)


def md(text: str) -> Any:
    return v4.new_markdown_cell(text)


def raw(text: str) -> Any:
    return v4.new_raw_cell(text)


def write_nb(tmp_path: Path, cells: list[Any], name: str = "nb.ipynb", split_lines: bool = True) -> Path:
    """A real notebook file; ``split_lines=False`` stores each source as one string."""
    path = tmp_path / name
    nbformat.write(v4.new_notebook(cells=cells), str(path), split_lines=split_lines)
    return path


def run(extracted: ExtractedCode, method: str | None = None, *args: Any) -> tuple[Any, dict[str, Any]]:
    """Exec the extracted source in a fresh namespace, then call ``method`` if given."""
    namespace: dict[str, Any] = {"__name__": "__peach_task__"}
    exec(compile(extracted.source, "<task>", "exec"), namespace)
    result = namespace[method](*args) if method else None
    return result, namespace


# --- cell-only versus full notebook -------------------------------------------------

HELPER_AND_ENTRY = [
    code("def helper(x):\n    return x * 10"),
    code("import math\n\ndef train(payload):\n    return helper(payload) + math.floor(1.5)"),
]


def test_cell_only_returns_just_the_entry_cell_so_other_cells_are_missing(tmp_path: Path) -> None:
    path = write_nb(tmp_path, HELPER_AND_ENTRY)
    extracted = extract_code(path, "train", full_notebook=False)
    assert extracted.cells == (1,)
    assert "def helper" not in extracted.source
    with pytest.raises(NameError, match="helper"):
        run(extracted, "train", 2)


def test_full_notebook_has_every_cell_so_helpers_work(tmp_path: Path) -> None:
    path = write_nb(tmp_path, HELPER_AND_ENTRY)
    extracted = extract_code(path, "train", full_notebook=True)
    assert extracted.cells == (0, 1)
    assert run(extracted, "train", 2)[0] == 21
    # Joined by exactly one blank line.
    assert extracted.source == ("def helper(x):\n    return x * 10\n\n"
                                "import math\n\ndef train(payload):\n    return helper(payload) + math.floor(1.5)")
    # What runs is the cells, one by one, each under its number.
    assert [cell.number for cell in extracted.program] == [1, 2]
    assert extracted.request()["cells"][1] == {"cell": 2, "code": extracted.program[1].code}
    assert extracted.request()["shell"] is False


def test_full_notebook_without_method_is_the_task_itself(tmp_path: Path) -> None:
    path = write_nb(tmp_path, [code("total = 0"), md("# add"), code("for i in range(4):\n    total += i")])
    extracted = extract_code(path, None, full_notebook=True)
    assert extracted.cells == (0, 2)
    assert run(extracted)[1]["total"] == 6


def test_cell_only_without_method_is_refused(tmp_path: Path) -> None:
    path = write_nb(tmp_path, [code("x = 1")])
    with pytest.raises(NotebookError, match=r"nb\.ipynb: .*needs a `method`.*full_notebook"):
        extract_code(path, None, full_notebook=False)


def test_last_definition_wins(tmp_path: Path) -> None:
    path = write_nb(
        tmp_path,
        [code("def train():\n    return 'first'"), code("x = 1"), code("def train():\n    return 'second'"), code("y = 2")],
    )
    extracted = extract_code(path, "train", full_notebook=False)
    assert extracted.cells == (2,)
    assert run(extracted, "train")[0] == "second"
    # Full mode runs both, in order, so the later one is the one left bound.
    assert run(extract_code(path, "train", full_notebook=True), "train")[0] == "second"


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("async def train():\n    return 'async'", "coroutine"),
        ("def make():\n    return lambda: 'made'\n\ntrain = make()", "made"),
        ("from os.path import basename as train", "basename"),
        ("from os.path import basename\ntrain: object = basename", "basename"),
        ("class train:\n    pass", "class"),
        ("try:\n    from nowhere_at_all import train\nexcept ImportError:\n    def train():\n        return 'fallback'", "fallback"),
        ("first, train = 1, (lambda: 'unpacked')", "unpacked"),
    ],
)
def test_every_top_level_binding_is_an_entry(tmp_path: Path, cell: str, expected: str) -> None:
    path = write_nb(tmp_path, [code("x = 1"), code(cell), code("y = 2")])
    extracted = extract_code(path, "train", full_notebook=False)
    assert extracted.cells == (1,)
    namespace = run(extracted)[1]
    train = namespace["train"]
    if expected == "coroutine":
        coroutine = train()
        assert coroutine.__class__.__name__ == "coroutine"
        coroutine.close()
    elif expected == "basename":
        assert train("/a/b.txt") == "b.txt"
    elif expected == "class":
        assert isinstance(train, type)
    else:
        assert train() == expected


@pytest.mark.parametrize(
    "cell",
    [
        "def outer():\n    def train():\n        pass",  # nested function
        "class Model:\n    def train(self):\n        pass",  # method
        "train_model = 1\ndef retrain():\n    pass",  # names that merely contain it
        "result = train()",  # used, not defined
        "# def train():\ns = 'def train(): pass'",  # comment and string
    ],
)
def test_names_not_bound_at_top_level_are_not_entries(tmp_path: Path, cell: str) -> None:
    path = write_nb(tmp_path, [code(cell)])
    with pytest.raises(NotebookError, match=r"defines no top-level function 'train'"):
        extract_code(path, "train", full_notebook=False)


def test_list_and_string_sources_give_the_same_code(tmp_path: Path) -> None:
    cells = [code("def train():\n    %matplotlib inline\n    return 'ok'\n")]
    as_list = write_nb(tmp_path, cells, "list.ipynb", split_lines=True)
    as_string = write_nb(tmp_path, cells, "string.ipynb", split_lines=False)
    assert isinstance(json.loads(as_list.read_text())["cells"][0]["source"], list)
    assert isinstance(json.loads(as_string.read_text())["cells"][0]["source"], str)
    from_list = extract_code(as_list, "train", full_notebook=False)
    from_string = extract_code(as_string, "train", full_notebook=False)
    assert from_list == from_string
    assert run(from_list, "train")[0] == "ok"


def test_markdown_and_raw_cells_are_ignored_but_counted_in_indexes(tmp_path: Path) -> None:
    path = write_nb(
        tmp_path,
        [md("def train():\n    return 'markdown'"), raw("%%bash\nrm -rf /"), code("def train():\n    return 'code'"), md("x")],
    )
    for full in (False, True):
        extracted = extract_code(path, "train", full_notebook=full)
        assert extracted.cells == (2,)
        assert extracted.notes == ()
        assert run(extracted, "train")[0] == "code"


# --- magics (what each becomes; tests/test_notebook_runs.py runs them) ------------------


def test_every_line_magic_form_becomes_python_with_the_same_line_count() -> None:
    cell = (
        "%matplotlib inline\n"  # 1 no effect in a run
        "!pip install nothing\n"  # 2 packages come from `dependencies`
        "files = !ls\n"  # 3 assignment from shell
        "here = %pwd\n"  # 4 assignment from magic
        "import os\n"  # 5
        "os.path.join?\n"  # 6 help
        "??os\n"  # 7 help, prefix form
        "os.getcwd??  # the source\n"  # 8 help with a comment
        "%cd data\n"  # 9 runs in the task process
        "!echo $HOME"  # 10 shell
    )
    out, notes = neutralise_magics(cell)
    lines = out.split("\n")
    assert len(lines) == len(cell.split("\n"))
    assert lines[0] == "pass  # peach-tasks: %matplotlib inline"
    assert lines[1] == "pass  # peach-tasks: !pip install nothing"
    assert lines[2] == "files = get_ipython().getoutput('ls')"
    assert lines[3] == "here = get_ipython().run_line_magic('pwd', '')"
    assert lines[4] == "import os"
    assert lines[5] == "pass  # peach-tasks: os.path.join?"
    assert lines[6] == "pass  # peach-tasks: ??os"
    assert lines[7] == "pass  # peach-tasks: os.getcwd??  # the source"
    assert lines[8] == "get_ipython().run_line_magic('cd', 'data')"
    assert lines[9] == "get_ipython().system('echo $HOME')"
    assert notes == [
        "line 1: '%matplotlib inline' skipped (no effect in a scheduled run)",
        "line 2: '!pip install nothing' skipped: a task's packages come from the `dependencies` of its "
        "definition, installed before it runs",
        "line 6: IPython help 'os.path.join?' skipped (it only shows help)",
        "line 7: IPython help '??os' skipped (it only shows help)",
        "line 8: IPython help 'os.getcwd??  # the source' skipped (it only shows help)",
    ]
    compile(out, "<cell>", "exec")


def test_magic_inside_an_indented_block_keeps_the_block_valid(tmp_path: Path) -> None:
    cell = (
        "def train(flag=True):\n"
        "    if flag:\n"
        "        !nvidia-smi\n"
        "    else:\n"
        "        %load_ext autoreload\n"
        "    for i in range(2):\n"
        "        %time x = i * 2\n"
        "    return x\n"
    )
    path = write_nb(tmp_path, [code(cell)])
    extracted = extract_code(path, "train", full_notebook=False)
    lines = extracted.source.split("\n")
    assert lines[2] == "        get_ipython().system('nvidia-smi')"
    assert lines[4] == "        pass  # peach-tasks: %load_ext autoreload"
    # %time keeps its statement (run once, timed in the block), so `x` exists afterwards.
    assert lines[6] == "        with get_ipython().timing(): x = i * 2"
    assert extracted.shell
    assert [note.split(":")[0] for note in extracted.notes] == ["cell 1 line 5"]


def test_tab_indentation_is_kept() -> None:
    out, _ = neutralise_magics("if True:\n\t%xmode\n\t!ls")
    assert out == "if True:\n\tpass  # peach-tasks: %xmode\n\tget_ipython().system('ls')"
    compile(out, "<cell>", "exec")


def test_help_line_followed_by_magic_both_go() -> None:
    out, notes = neutralise_magics("df.head?\n%matplotlib inline\nx = 1")
    assert out.split("\n") == ["pass  # peach-tasks: df.head?", "pass  # peach-tasks: %matplotlib inline", "x = 1"]
    assert len(notes) == 2


def test_timeit_options_are_dropped_and_the_statement_kept() -> None:
    out, notes = neutralise_magics("%timeit -n 10 -r3 -q value = sorted([3, 1, 2])")
    assert out == "value = sorted([3, 1, 2])"
    namespace: dict[str, Any] = {}
    exec(out, namespace)
    assert namespace["value"] == [1, 2, 3]
    assert len(notes) == 1


def test_time_with_a_backslash_continuation_keeps_the_whole_statement() -> None:
    """Failure 5 of issue #12: the continued statement was lost."""
    out, notes = neutralise_magics("base = 2\n%time doubled = base \\\n    * 3\nafter = doubled + 1")
    assert out == "base = 2\ndoubled = base \\\n    * 3\nafter = doubled + 1"
    namespace: dict[str, Any] = {}
    exec(out, namespace)
    assert namespace["after"] == 7


def test_cell_timeit_keeps_its_setup_statement() -> None:
    """Failure 4 of issue #12: the setup on the %%timeit line was dropped."""
    out, notes = neutralise_magics("%%timeit -n 3 numbers = list(range(10))\ntotal = sum(numbers)")
    assert out == "numbers = list(range(10))\ntotal = sum(numbers)"
    namespace: dict[str, Any] = {}
    exec(out, namespace)
    assert namespace["total"] == 45
    assert notes == ["line 1: '%%timeit -n 3 numbers = list(range(10))': the cell runs once, untimed, "
                     "after its setup statement, in the notebook's namespace (IPython runs it many times, in a "
                     "function)"]


def test_magics_inside_triple_quoted_strings_are_untouched(tmp_path: Path) -> None:
    cell = (
        'QUERY = """\n'
        "%not a magic\n"
        "!not a shell\n"
        "help?\n"
        '"""\n'
        "OTHER = \'\'\'\n"
        '  %%bash "quoted"\n'
        "\'\'\'\n"
        'RAW = rb"""\n'
        '!\\"""\n'  # an escaped quote does not end the string
        '"""\n'
        "%matplotlib inline\n"  # after the strings: a real magic
        "def train():\n"
        "    return QUERY, OTHER, RAW"
    )
    path = write_nb(tmp_path, [code(cell)])
    extracted = extract_code(path, "train", full_notebook=False)
    query, other, raw_bytes = run(extracted, "train")[1]["train"]()
    assert query == "\n%not a magic\n!not a shell\nhelp?\n"
    assert other == '\n  %%bash "quoted"\n'
    assert raw_bytes == b'\n!\\"""\n'
    assert extracted.notes == ("cell 1 line 12: '%matplotlib inline' skipped (no effect in a scheduled run)",)


def test_percent_and_bang_that_are_python_are_untouched() -> None:
    cell = (
        "x = (7\n"
        "%3)\n"  # modulo on a continuation line
        "y = 10 \\\n"
        "%4\n"  # modulo after a backslash continuation
        "z = x != 1\n"
        "s = 'what?'  # a question?\n"
        "# is this a help line?\n"
        "t = '%d' % 5\n"
        "u = f'{x!r}'\n"
        "w = 'it''s'\n"
    )
    out, notes = neutralise_magics(cell)
    assert out == cell
    assert notes == []
    namespace: dict[str, Any] = {}
    exec(out, namespace)
    assert (namespace["x"], namespace["y"], namespace["t"]) == (1, 2, "5")


@pytest.mark.parametrize(("line", "skipped"), [
    ("!{sys.executable} -m pip install -q tqdm", True),  # pip's own advice for notebooks (found by the 8th pass)
    ("!python3 -m pip install tqdm", True),
    ("!/opt/env/bin/python3.11 -m pip install tqdm", True),
    ("!$sys.executable -m pip install tqdm", True),
    ("!uv pip install tqdm", True),
    ("!python -m pytest -q", False),
    ("!python train.py --pip", False),
])
def test_a_package_install_through_python_is_skipped_as_pip_is(line: str, skipped: bool) -> None:
    """``!pip install`` was skipped (a run installs nothing) but ``!{sys.executable} -m pip
    install`` ran pip inside the task; every spelling of pip is skipped alike."""
    out, notes = neutralise_magics(line)
    assert out.startswith("pass  # peach-tasks: ") is skipped, out
    assert bool(notes) is skipped and all("packages come from the `dependencies`" in note for note in notes)


def test_multi_line_magic_with_backslash_is_joined_as_ipython_joins_it() -> None:
    out, notes = neutralise_magics("%env GREETING=hello \\\n    world\nx = 1")
    assert out.split("\n") == ["get_ipython().run_line_magic('env', 'GREETING=hello      world')", "", "x = 1"]
    out, notes = neutralise_magics("!pip install \\\n    numpy \\\n    pandas\nx = 1")
    assert out.split("\n") == ["pass  # peach-tasks: !pip install \\", "", "", "x = 1"]
    assert len(notes) == 1


@pytest.mark.parametrize(("magic", "name"), [
    ("%%capture captured", "capture"), ("%%writefile out.txt", "writefile"), ("%%file out.txt", "writefile"),
    ("%%bash", "script"), ("%%sh", "script"), ("%%html", "display"), ("%%markdown", "display"),
])
def test_cell_magics_the_task_process_runs_are_marked_on_the_cell(tmp_path: Path, magic: str, name: str) -> None:
    body = "x = 1" if name == "capture" else "echo 'unbalanced"  # not Python: data for the process
    path = write_nb(tmp_path, [code("a = 1"), code(f"{magic}\n{body}"), code("b = a + 1")])
    extracted = extract_code(path, None, full_notebook=True)
    cell = extracted.program[1]
    assert cell.magic is not None and cell.magic["name"] == name
    assert extracted.shell
    if name != "capture":  # the body is data: no Python left in the cell
        assert cell.code.strip() == "" and cell.magic["body"] == "echo 'unbalanced"


@pytest.mark.parametrize("magic", ["%%sql", "%%script python", "%%perl", "%%timeit_extra"])
def test_unsupported_cell_magics_are_a_problem_at_their_line(tmp_path: Path, magic: str) -> None:
    path = write_nb(tmp_path, [code("a = 1"), md("m"), code(f"\n{magic}\nSELECT 1")])
    with pytest.raises(NotebookError) as info:
        extract_code(path, None, full_notebook=True)
    assert info.value.kind == "magic" and (info.value.cell, info.value.line) == (3, 2)
    assert str(info.value).startswith(f"nb.ipynb cell 3 line 2: cell magic '{magic}' is not supported by peach-tasks")


@pytest.mark.parametrize(("line", "said"), [
    ("%store data", "line magic %store is not supported"),
    ("%load_ext sql", "the IPython extension 'sql' is not loaded"),
    ("%pylab inline", "line magic %pylab is not supported"),
    ("t = %timeit -o sum([1])", "the value of %timeit is its timing"),
    ("v = %matplotlib", "the value of %matplotlib is not computed"),
    ("x = 1\n%%capture late", "a cell magic must be the first line of its cell"),
    ("%%time print(1)\nx = 1", "%%time takes no statement on its line"),
    ("%%capture --bogus out", "peach-tasks runs %%capture"),
    ("%run -m module", "option -m is not supported"),
    ("%run missing.py", "missing.py is not in the repository next to the notebook"),
    ("%run data", "neither data nor data.py is in the repository next to the notebook"),
    ("%run ../outside.py", "is not a file inside the repository"),
    ("%cd sub\n%run helper.py", "comes after %cd"),
])
def test_unsupported_magics_are_a_problem_naming_cell_line_and_magic(tmp_path: Path, line: str, said: str) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (tmp_path / "outside.py").write_text("x = 1\n")
    (repo / "helper.py").write_text("y = 2\n")
    path = write_nb(repo, [md("m"), code(line if line.startswith("%%") else "import os\n" + line)])
    with pytest.raises(NotebookError) as info:
        extract_code(path, None, full_notebook=True)
    assert info.value.kind == "magic" and info.value.cell == 2
    assert str(info.value).startswith(f"nb.ipynb cell 2 line {info.value.line}: ")
    assert said in str(info.value)
    expected = 1 if line.startswith("%%") else 3 if "\n" in line else 2
    assert info.value.line == expected


def test_only_the_entry_cell_magics_matter_in_cell_only_mode(tmp_path: Path) -> None:
    path = write_nb(tmp_path, [code("%pylab inline"), code("def train():\n    return 1")])
    assert extract_code(path, "train", full_notebook=False).program[0].number == 2
    with pytest.raises(NotebookError, match="cell 1 line 1: '%pylab inline'"):
        extract_code(path, "train", full_notebook=True)


def test_notes_only_cover_the_cells_used(tmp_path: Path) -> None:
    path = write_nb(tmp_path, [code("%matplotlib inline"), md("m"), code("!pip install x\ndef train():\n    return 1")])
    pip = ("cell 3 line 1: '!pip install x' skipped: a task's packages come from the `dependencies` of its "
           "definition, installed before it runs")
    assert extract_code(path, "train", full_notebook=False).notes == (pip,)
    assert extract_code(path, "train", full_notebook=True).notes == (
        "cell 1 line 1: '%matplotlib inline' skipped (no effect in a scheduled run)", pip,
    )


def test_long_magics_are_shortened_in_notes_but_kept_whole_in_the_code() -> None:
    magic = "!pip install " + "x" * 300
    out, notes = neutralise_magics(magic)
    assert out.endswith(magic)
    assert len(notes[0]) < 250 and "..." in notes[0]


def test_find_entry_cell_neutralises_before_parsing() -> None:
    sources = ["def train():\n    return 1", "%matplotlib inline\ndef train():\n    !ls\n    return 2", "x = ("]
    assert find_entry_cell(sources, "train") == 1
    assert find_entry_cell(sources, "predict") is None
    assert find_entry_cell([], "train") is None


def test_unicode_identifiers_are_matched_as_python_does(tmp_path: Path) -> None:
    # Python NFKC-normalises identifiers: the fullwidth 'ｔ' defines plain 'train'.
    path = write_nb(tmp_path, [code("def \uff54rain():\n    return 'wide'")])
    assert run(extract_code(path, "train", full_notebook=False), "train")[0] == "wide"


def test_valid_python_is_left_exactly_as_it_is() -> None:
    """Real-world Python never contains a magic, so the standard library must come back unchanged."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = ["argparse.py", "tokenize.py", "textwrap.py", "string.py", "dataclasses.py", "inspect.py", "pydoc.py"]
    for name in files:
        text = (stdlib / name).read_text(encoding="utf-8")
        out, notes = neutralise_magics(text)
        assert notes == [], name
        assert out == text, name


@given(st.text(alphabet=st.sampled_from(list("%!?=x1 \t\n'\"#\\()")), max_size=80))
def test_line_count_never_changes_and_python_is_never_touched(text: str) -> None:
    out, notes = neutralise_magics(text)
    assert out.count("\n") == text.count("\n")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # random text trips escape and literal warnings
            compile(text, "<cell>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return
    assert (out, notes) == (text, [])


# --- errors -------------------------------------------------------------------------


def test_missing_method_names_the_notebook_and_the_fix(tmp_path: Path) -> None:
    path = write_nb(tmp_path, [code("def train():\n    pass")])
    for full in (False, True):
        with pytest.raises(NotebookError) as info:
            extract_code(path, "train_model", full_notebook=full, display_name="jobs/daily.ipynb")
        assert str(info.value) == (
            "jobs/daily.ipynb defines no top-level function 'train_model' in any code cell; "
            "add it or fix `method` in the task definition"
        )


def test_syntax_error_is_mapped_to_cell_and_line_in_full_mode(tmp_path: Path) -> None:
    cells = [code("a = 1"), md("# title"), code("b = 2\nc = 3"), code("%matplotlib inline\nd = 4\ne = = 5\nf = 6")]
    path = write_nb(tmp_path, cells)
    with pytest.raises(NotebookError) as info:
        extract_code(path, None, full_notebook=True, display_name="repo/nb.ipynb")
    assert str(info.value) == "repo/nb.ipynb cell 4 line 3: SyntaxError: invalid syntax; fix the cell"


def test_syntax_error_in_the_entry_cell_is_reported_not_hidden(tmp_path: Path) -> None:
    path = write_nb(tmp_path, [code("x = 1"), code("!ls\ndef train():\n    return (1,\n\nprint('x')")])
    with pytest.raises(NotebookError, match=r"^nb\.ipynb cell 2 line 3: SyntaxError: .*; fix the cell$"):
        extract_code(path, "train", full_notebook=False)


def test_indentation_error_and_unclosed_bracket_at_the_end_of_a_cell(tmp_path: Path) -> None:
    path = write_nb(tmp_path, [code("if True:\nx = 1")])
    with pytest.raises(NotebookError, match=r"cell 1 line 2: IndentationError: "):
        extract_code(path, None, full_notebook=True)
    path = write_nb(tmp_path, [code("a = 1"), code("b = [1,\n2"), code("c = 3")])
    with pytest.raises(NotebookError, match=r"cell 2 line [12]: SyntaxError: "):
        extract_code(path, None, full_notebook=True)


def test_compile_stage_errors_are_reported_too(tmp_path: Path) -> None:
    # `return` outside a function parses, and only fails when compiled.
    path = write_nb(tmp_path, [code("x = 1"), code("y = 2\nreturn y")])
    with pytest.raises(NotebookError, match=r"cell 2 line 2: SyntaxError: 'return' outside function"):
        extract_code(path, None, full_notebook=True)


def test_broken_non_entry_cell_does_not_matter_in_cell_only_mode(tmp_path: Path) -> None:
    path = write_nb(tmp_path, [code("def train(:\n  oops"), code("def train():\n    return 'good'"), code("x = = 1")])
    extracted = extract_code(path, "train", full_notebook=False)
    assert extracted.cells == (1,)
    assert run(extracted, "train")[0] == "good"
    # The same notebook in full mode fails on the first broken cell.
    with pytest.raises(NotebookError, match=r"cell 1 line 1: SyntaxError"):
        extract_code(path, "train", full_notebook=True)


def test_missing_method_mentions_cells_that_could_not_be_read(tmp_path: Path) -> None:
    # Only cells that mention the name could define it, so only they are listed.
    path = write_nb(tmp_path, [code("x = = 1"), code("train(x = = 1)"), code("y = 2")])
    with pytest.raises(NotebookError) as info:
        extract_code(path, "train", full_notebook=False)
    assert "in any code cell (cell 2 mentions it but has a syntax error); add it" in str(info.value)
    path = write_nb(tmp_path, [code("train(("), code("train(x = = 1)"), code("y = 2")])
    with pytest.raises(NotebookError, match=r"\(cells 1, 2 mention it but have syntax errors\); add it"):
        extract_code(path, "train", full_notebook=False)


def test_invalid_json_gives_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.ipynb"
    path.write_text('{\n "cells": [\n<<<<<<< HEAD\n]}\n')
    with pytest.raises(NotebookError, match=r"^broken\.ipynb is not valid notebook JSON \(line 3\): "):
        extract_code(path, "train", full_notebook=False)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NotebookError, match=r"^notebooks/gone\.ipynb does not exist; check the task's `notebook`"):
        extract_code(tmp_path / "gone.ipynb", "train", full_notebook=False, display_name="notebooks/gone.ipynb")


def test_a_directory_is_not_readable(tmp_path: Path) -> None:
    (tmp_path / "dir.ipynb").mkdir()
    with pytest.raises(NotebookError, match=r"^dir\.ipynb cannot be read"):
        extract_code(tmp_path / "dir.ipynb", "train", full_notebook=False)


@pytest.mark.parametrize("content", ['[1, 2]', '{"worksheets": []}', '{"cells": {}}', '"text"'])
def test_json_that_is_not_a_notebook(tmp_path: Path, content: str) -> None:
    path = tmp_path / "data.ipynb"
    path.write_text(content)
    with pytest.raises(NotebookError, match=r"^data\.ipynb is JSON but not a Jupyter notebook \(no `cells` list"):
        extract_code(path, None, full_notebook=True)


def test_malformed_cells_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "odd.ipynb"
    path.write_text(json.dumps({"cells": [{"cell_type": "code", "source": 42}]}))
    with pytest.raises(NotebookError, match=r"odd\.ipynb cell 1 has a `source`"):
        extract_code(path, None, full_notebook=True)


def test_byte_order_mark_and_windows_line_endings_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "win.ipynb"
    cell = {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
            "source": ["%matplotlib inline\r\n", "def train():\r\n", "    return 'crlf'"]}
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"cells": [cell], "nbformat": 4}).encode())
    extracted = extract_code(path, "train", full_notebook=False)
    assert "\r" not in extracted.source
    assert run(extracted, "train")[0] == "crlf"


def test_non_utf8_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "latin.ipynb"
    path.write_bytes('{"cells": [], "x": "caf\u00e9"}'.encode("latin-1"))
    with pytest.raises(NotebookError, match=r"^latin\.ipynb is not UTF-8 text; re-save"):
        extract_code(path, None, full_notebook=True)


def test_notebook_error_is_a_peach_error() -> None:
    assert issubclass(NotebookError, PeachError)


# --- a large notebook (speed is measured in bench/, never asserted here) ---------------


def test_fifty_cell_notebook_with_magics_in_every_cell(tmp_path: Path) -> None:
    cells = []
    for i in range(50):
        cells.append(md(f"## step {i}"))
        body = f"import math\n%matplotlib inline\ndef step_{i}(x):\n    '''doc\n    %keep'''\n"
        body += "".join(f"    x = math.sqrt(x + {j})  # work\n" for j in range(4))
        cells.append(code(body + "    return x\n"))
    cells.append(code("def train():\n    return step_49(1)"))
    path = write_nb(tmp_path, cells)
    extracted = extract_code(path, "train", full_notebook=True)
    assert run(extracted, "train")[0] > 0
    assert len(extracted.notes) == 50
    assert "    %keep" in extracted.source  # inside a docstring: untouched


# --- a cell's result (Out[n]) ---------------------------------------------------------------


@pytest.mark.parametrize("cell", [
    "x = 1\nx + 1",
    "df.groupby('a')\\\n    .sum()  # note",
    "s = 'é'\n'é' * 2",
    "await job()",
    "x = 1; x",
    "X.shape, y.shape",
])
def test_a_cell_ending_with_an_expression_shows_its_value(cell: str) -> None:
    assert shows_last_expression(cell)


def shown_values(cell: str) -> list[object]:
    """What the task process hands to ``sys.displayhook`` running ``cell`` as a cell whose
    result is shown (bootstrap_cells.shown), in a fresh namespace."""
    import sys

    from peach_tasks.executors.bootstrap_cells import shown

    values: list[object] = []
    namespace: dict[str, object] = {}
    hook, sys.displayhook = sys.displayhook, values.append
    try:
        for compiled in shown(cell, "<cell>", [0], 0, 0):
            exec(compiled, namespace)
    finally:
        sys.displayhook = hook
    return values


@pytest.mark.parametrize(("cell", "value"), [
    ("x = 3\nx, x + 1", (3, 4)),  # a bare tuple is one value, as in IPython
    ("rest = [1, 2]\n*rest, 3", (1, 2, 3)),
    ("x = 3\nx, \\\n  x * 2  # end", (3, 6)),
    ("(lambda: 5)()", 5),
    ("x = 2\nx if x else 0", 2),
    ("x = 1; x + 1", 2),
])
def test_the_value_shown_is_the_one_jupyter_shows(cell: str, value: object) -> None:
    assert shows_last_expression(cell)
    assert shown_values(cell) == [value]


@pytest.mark.parametrize("cell", ["x = 1", "x;", "x ;  # quiet", "def f():\n    return 1", "for i in []:\n    i", ""])
def test_statements_and_a_final_semicolon_show_nothing(cell: str) -> None:
    assert not shows_last_expression(cell)


def test_only_the_notebook_own_cells_show_their_result(tmp_path: Path) -> None:
    (tmp_path / "other.ipynb").write_text(nbformat.writes(v4.new_notebook(cells=[code("41")])))
    path = write_nb(tmp_path, [code("%run other.ipynb\n1 + 1")])
    extracted = extract_code(path, None, full_notebook=True)
    assert extracted.program[0].show and extracted.request()["cells"][0]["show"] is True
    assert extracted.program[0].code.endswith("\n1 + 1")  # the cell as written: the task process shows it
    other = extracted.runs["other.ipynb"]["cells"][0]
    assert other["code"] == "41" and "show" not in other  # %run is silent in IPython


def test_run_cycles_links_out_and_huge_files_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import peach_tasks.sources.notebook as notebook

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "b.ipynb").write_text(nbformat.writes(v4.new_notebook(cells=[code("%run a.ipynb")])))
    a = write_nb(repo, [code("x = 1"), code("%run b.ipynb")], name="a.ipynb")
    with pytest.raises(NotebookError, match=r"^a\.ipynb cell 2 line 1: %run b\.ipynb: b\.ipynb cell 1 line 1: "
                                            r"%run a\.ipynb: a\.ipynb runs itself again \(a cycle of %run\)"):
        extract_code(a, None, full_notebook=True)

    (tmp_path / "secret.py").write_text("TOKEN = 1\n")
    (repo / "link.py").symlink_to(tmp_path / "secret.py")
    linked = write_nb(repo, [code("%run link.py")], name="linked.ipynb")
    with pytest.raises(NotebookError, match="link.py is not a file inside the repository"):
        extract_code(linked, None, full_notebook=True)

    for index in range(3):
        (repo / f"big{index}.py").write_text("x = 1\n" * 100)
    many = write_nb(repo, [code("%run big0.py\n%run big1.py\n%run big2.py")], name="many.ipynb")
    assert len(extract_code(many, None, full_notebook=True).runs) == 3
    monkeypatch.setattr(notebook, "MAX_RUN_TOTAL_BYTES", 1000)
    with pytest.raises(NotebookError, match="cell 1 line 2: %run big1.py: the files this notebook runs hold more than"):
        extract_code(many, None, full_notebook=True)


@pytest.mark.parametrize(("line", "hint"), [
    ("cd data", "Jupyter runs this line as the magic %cd (automagic); write '%cd data'"),
    ("pip install requests", "write '%pip install requests'"),
    ("mkdir out", "write '%mkdir out'"),
])
def test_automagic_lines_are_refused_with_the_percent_to_add(tmp_path: Path, line: str, hint: str) -> None:
    path = write_nb(tmp_path, [code(f"x = 1\n{line}")])
    with pytest.raises(NotebookError, match="SyntaxError") as info:
        extract_code(path, None, full_notebook=True)
    assert str(info.value).startswith("nb.ipynb cell 1 line 2: SyntaxError: ") and str(info.value).endswith(hint)


def test_other_syntax_errors_keep_the_plain_advice(tmp_path: Path) -> None:
    path = write_nb(tmp_path, [code("print 'hello'")])  # Python 2: not an automagic
    with pytest.raises(NotebookError, match=r"; fix the cell$"):
        extract_code(path, None, full_notebook=True)


@pytest.mark.parametrize("line", [
    "%config InlineBackend.figure_format = 'svg'",
    "%config InlineBackend.figure_formats = {'retina', 'png'}",
    "%config InlineBackend.print_figure_kwargs = {'bbox_inches': None}",
    "%config InlineBackend.figure_format='retina'",
])
def test_config_of_the_inline_figures_goes_to_the_shell_which_follows_it(line: str) -> None:
    """Jupyter shows the figures as SVG after ``%config InlineBackend.figure_format = 'svg'``:
    the line is handed to the task process's shell (displays_figures follows it), not skipped."""
    code, notes = neutralise_magics(line)
    assert code == f"get_ipython().run_line_magic('config', {line[len('%config '):]!r})" and not notes, (code, notes)


@pytest.mark.parametrize(("line", "unknown"), [
    ("%config InlineBackend.figure_format = 'svgz'", "'svgz'"),
    ("%config InlineBackend.figure_formats = ['png', 'tiff', 'gif']", "'gif', 'tiff'"),
])
def test_an_unknown_figure_format_is_a_problem_before_the_run(line: str, unknown: str) -> None:
    """IPython refuses a format it does not know (the cell fails): so does validate, naming it."""
    result = transform_cell(line)
    assert result.problems == [(1, f"'{line}': unknown figure format {unknown}: Jupyter's are png, png2x, retina, "
                                   "jpg, jpeg, svg, pdf; fix the format")], result.problems


def test_the_figure_formats_are_those_the_task_process_knows() -> None:
    from peach_tasks.executors import displays_figures
    from peach_tasks.sources import magics

    assert magics.FIGURE_FORMATS == displays_figures.FORMATS


def test_other_config_lines_are_skipped_with_a_note() -> None:
    _, notes = neutralise_magics("%config Completer.use_jedi = False")
    assert len(notes) == 1 and notes[0].endswith("skipped (no effect in a scheduled run)"), notes
