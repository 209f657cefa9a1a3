"""Definition files (peach.yaml, peach.conf/*.yaml) and dependency strings, on real files."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from peach_tasks.errors import Problem
from peach_tasks.model import Executor, TaskSpec
from peach_tasks.sources.definitions import RepoDefinitions, definition_files, load_definitions, parse_definition_text
from peach_tasks.sources.requirements import normalise_requirements, requirement_problem

REPO = "team/notebooks"
NOTEBOOK = json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def notebook(root: Path, rel: str = "nb.ipynb") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(NOTEBOOK, encoding="utf-8")
    return path


def load(root: Path, **kwargs) -> RepoDefinitions:
    return load_definitions(root, REPO, **kwargs)


def names(defs: RepoDefinitions) -> list[str]:
    return [t.name for t in defs.tasks]


def where(problems) -> list[tuple[str, int | None]]:
    return [(p.file, p.line) for p in problems]


def only(problems) -> Problem:
    assert len(problems) == 1, [str(p) for p in problems]
    problem = problems[0]
    assert problem.kind == "config" and problem.scope == REPO
    return problem


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    notebook(root, "nb.ipynb")
    return root


GOOD = """\
codops: default
tasks:
  good:
    notebook: nb.ipynb
    method: run
"""


# -- layouts -------------------------------------------------------------------------


def test_peach_yaml_alone_gives_complete_task_specs(repo: Path) -> None:
    notebook(repo, "sub/tf.ipynb")
    write(
        repo,
        "peach.yaml",
        """\
        codops: default
        dependencies: [tabulate]
        tasks:
          tf_task:
            notebook: ./sub/../sub/tf.ipynb
            method: train_model
            executor: python
            loop: metadata
            dependencies: [six]
            timeout: 120
          whole:
            notebook: nb.ipynb
            full_notebook: true
        """,
    )
    defs = load(repo)
    assert defs.problems == ()
    assert defs.files == ("peach.yaml",)
    assert defs.org_dependencies == {"default": ("tabulate",)}
    assert defs.tasks == (
        TaskSpec(
            codops="default",
            name="tf_task",
            notebook="sub/tf.ipynb",
            method="train_model",
            full_notebook=False,
            executor=Executor.PYTHON,
            loop="metadata",
            dependencies=("six",),
            timeout=120.0,
            repo=REPO,
            source_file="peach.yaml",
            source_line=4,
        ),
        TaskSpec(
            codops="default",
            name="whole",
            notebook="nb.ipynb",
            method=None,
            full_notebook=True,
            executor=Executor.SPARK,
            loop=None,
            dependencies=(),
            timeout=None,
            repo=REPO,
            source_file="peach.yaml",
            source_line=11,
        ),
    )
    assert isinstance(defs.tasks[0].timeout, float)


def test_peach_conf_alone_reads_yaml_and_yml_not_recursive_not_hidden(repo: Path) -> None:
    write(repo, "peach.conf/b.yml", GOOD.replace("good", "from_b"))
    write(repo, "peach.conf/a.yaml", GOOD.replace("good", "from_a"))
    write(repo, "peach.conf/nested/c.yaml", GOOD.replace("good", "nested"))
    write(repo, "peach.conf/.hidden.yaml", GOOD.replace("good", "hidden"))
    write(repo, "peach.conf/notes.txt", "not yaml: [")
    defs = load(repo)
    assert defs.problems == ()
    assert defs.files == ("peach.conf/a.yaml", "peach.conf/b.yml")
    assert names(defs) == ["from_a", "from_b"]
    assert [t.source_file for t in defs.tasks] == ["peach.conf/a.yaml", "peach.conf/b.yml"]
    assert definition_files(repo) == [repo / "peach.conf/a.yaml", repo / "peach.conf/b.yml"]


def test_both_layouts_together_in_sorted_path_order(repo: Path) -> None:
    write(repo, "peach.yaml", GOOD.replace("good", "root_task"))
    write(repo, "peach.conf/z.yaml", GOOD.replace("good", "conf_task").replace("default", "other"))
    defs = load(repo)
    assert defs.problems == ()
    # "peach.conf/..." sorts before "peach.yaml".
    assert defs.files == ("peach.conf/z.yaml", "peach.yaml")
    assert [(t.codops, t.name) for t in defs.tasks] == [("other", "conf_task"), ("default", "root_task")]


def test_peach_yml_is_accepted(repo: Path) -> None:
    write(repo, "peach.yml", GOOD)
    defs = load(repo)
    assert defs.files == ("peach.yml",) and names(defs) == ["good"]


def test_no_definition_files(repo: Path) -> None:
    assert load(repo) == RepoDefinitions(tasks=(), org_dependencies={}, problems=(), files=())
    assert definition_files(repo / "missing") == []


def test_tasks_in_document_order(repo: Path) -> None:
    write(
        repo,
        "peach.yaml",
        """\
        codops: default
        tasks:
          zeta: {notebook: nb.ipynb, method: z}
          alpha: {notebook: nb.ipynb, method: a}
          mid: {notebook: nb.ipynb, method: m}
        """,
    )
    defs = load(repo)
    assert names(defs) == ["zeta", "alpha", "mid"]
    assert [t.source_line for t in defs.tasks] == [3, 4, 5]


def test_file_with_only_dependencies_or_empty_tasks_is_fine(repo: Path) -> None:
    write(repo, "peach.conf/deps.yaml", "codops: default\ndependencies:\n  - tabulate\n  - numpy>=1.26\n")
    write(repo, "peach.conf/empty_tasks.yaml", "codops: other\ntasks:\n")
    write(repo, "peach.yaml", "codops: default\ndependencies: [six, tabulate]\ntasks: {}\n")
    defs = load(repo)
    assert defs.problems == () and defs.tasks == ()
    # Gathered over the files in order, each entry once, as written.
    assert defs.org_dependencies == {"default": ("tabulate", "numpy>=1.26", "six")}


def test_dates_and_numbers_stay_strings(repo: Path) -> None:
    notebook(repo, "2024-01-01.ipynb")
    write(
        repo,
        "peach.yaml",
        """\
        codops: 2024-01-01
        tasks:
          2024-01-01:
            notebook: 2024-01-01.ipynb
            method: run
        """,
    )
    defs = load(repo)
    assert defs.problems == ()
    (task,) = defs.tasks
    assert (task.codops, task.name, task.notebook) == ("2024-01-01", "2024-01-01", "2024-01-01.ipynb")


# -- file-level problems -------------------------------------------------------------


def test_yaml_syntax_error_has_its_line_and_hides_nothing_else(repo: Path) -> None:
    write(repo, "peach.conf/bad.yaml", "codops: default\ntasks:\n  x: [unclosed\n  y: 1\n")
    write(repo, "peach.conf/good.yaml", GOOD)
    defs = load(repo)
    problem = only(defs.problems)
    assert problem.file == "peach.conf/bad.yaml"
    assert problem.line == 4
    assert "YAML syntax error" in problem.message
    assert names(defs) == ["good"]
    assert defs.files == ("peach.conf/bad.yaml", "peach.conf/good.yaml")


@pytest.mark.parametrize("text", ["", "# nothing but a comment\n", "---\n"])
def test_empty_file(repo: Path, text: str) -> None:
    write(repo, "peach.yaml", text)
    problem = only(load(repo).problems)
    assert (problem.file, problem.line) == ("peach.yaml", None)
    assert "no definitions" in problem.message


@pytest.mark.parametrize("text,kind", [("- a\n- b\n", "a list"), ("just text\n", "a string"), ("42\n", "a number")])
def test_top_level_not_a_mapping(repo: Path, text: str, kind: str) -> None:
    write(repo, "peach.yaml", text)
    problem = only(load(repo).problems)
    assert (problem.file, problem.line) == ("peach.yaml", 1)
    assert kind in problem.message


def test_missing_codops_drops_the_file(repo: Path) -> None:
    write(repo, "peach.yaml", "\ntasks:\n  good: {notebook: nb.ipynb, method: run}\n")
    defs = load(repo)
    problem = only(defs.problems)
    assert (problem.file, problem.line) == ("peach.yaml", 2)
    assert "missing key 'codops'" in problem.message
    assert defs.tasks == ()


@pytest.mark.parametrize(
    "value,fragment",
    [
        ("Default", "lowercase"),
        ("'my team'", "lowercase"),
        ("''", "empty"),
        ("12", "valid string"),
        ("[a]", "valid string"),
        ("null", "valid string"),
    ],
)
def test_invalid_codops_drops_the_files_tasks(repo: Path, value: str, fragment: str) -> None:
    write(repo, "peach.yaml", f"tasks:\n  good: {{notebook: nb.ipynb, method: run}}\ncodops: {value}\n")
    defs = load(repo)
    problem = only(defs.problems)
    assert (problem.file, problem.line) == ("peach.yaml", 3)
    assert fragment in problem.message
    assert defs.tasks == () and defs.org_dependencies == {}


def test_codops_metadata_is_reserved(repo: Path) -> None:
    write(repo, "peach.yaml", "codops: metadata\ntasks:\n  good: {notebook: nb.ipynb, method: run}\n")
    defs = load(repo)
    problem = only(defs.problems)
    assert (problem.file, problem.line) == ("peach.yaml", 1)
    assert "reserved" in problem.message
    assert defs.tasks == ()


def test_codops_not_allowed_for_this_repository(repo: Path) -> None:
    write(repo, "peach.conf/a.yaml", GOOD.replace("default", "x") + "dependencies: [six]\n")
    write(repo, "peach.conf/b.yaml", GOOD.replace("good", "fine").replace("default", "b"))
    defs = load(repo, allowed_codops={"b", "a"})
    problem = only(defs.problems)
    assert (problem.file, problem.line) == ("peach.conf/a.yaml", 1)
    assert problem.message == (
        "this repository may define tasks only for: a, b; "
        "ask the platform team to allow 'x' in scheduler.yaml or fix codops"
    )
    assert names(defs) == ["fine"]
    assert defs.org_dependencies == {}


def test_allowed_codops_none_allows_any(repo: Path) -> None:
    write(repo, "peach.yaml", GOOD.replace("default", "anything"))
    assert names(load(repo, allowed_codops=None)) == ["good"]
    assert load(repo, allowed_codops=[]).tasks == ()


def test_unknown_root_key_keeps_the_tasks(repo: Path) -> None:
    write(repo, "peach.yaml", GOOD + "shedule: daily\n")
    defs = load(repo)
    problem = only(defs.problems)
    assert (problem.file, problem.line) == ("peach.yaml", 6)
    assert "unknown key 'shedule'" in problem.message
    assert names(defs) == ["good"]


def test_tasks_not_a_mapping(repo: Path) -> None:
    write(repo, "peach.yaml", "codops: default\ntasks:\n  - notebook: nb.ipynb\n")
    defs = load(repo)
    problem = only(defs.problems)
    assert (problem.file, problem.line) == ("peach.yaml", 2)
    assert "'tasks'" in problem.message and "dictionary" in problem.message


def test_non_utf8_file_is_a_problem_with_its_line(repo: Path) -> None:
    (repo / "peach.conf").mkdir()
    (repo / "peach.conf/latin1.yaml").write_bytes(b"codops: default\n# caf\xe9\n")
    write(repo, "peach.conf/ok.yaml", GOOD)
    defs = load(repo)
    problem = only(defs.problems)
    assert (problem.file, problem.line) == ("peach.conf/latin1.yaml", 2)
    assert "UTF-8" in problem.message
    assert names(defs) == ["good"]


def test_definition_file_symlinked_from_outside_is_refused(repo: Path, tmp_path: Path) -> None:
    outside = write(tmp_path, "elsewhere.yaml", GOOD)
    (repo / "peach.conf").mkdir()
    os.symlink(outside, repo / "peach.conf/linked.yaml")
    defs = load(repo)
    problem = only(defs.problems)
    assert (problem.file, problem.line) == ("peach.conf/linked.yaml", None)
    assert "out of the repository" in problem.message
    assert defs.tasks == ()


def test_alias_bomb_is_refused_quickly(repo: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    write(repo, "peach.yaml", "\n".join(lines) + "\ncodops: default\n")
    problem = only(load(repo).problems)
    assert problem.file == "peach.yaml" and "aliases" in problem.message


# -- task-level problems -------------------------------------------------------------


def test_bad_task_beside_a_good_one(repo: Path) -> None:
    write(
        repo,
        "peach.yaml",
        """\
        codops: default
        tasks:
          good:
            notebook: nb.ipynb
            method: run
          bad:
            notebook: nb.ipynb
            method: run
            colour: blue
          also_good:
            notebook: nb.ipynb
            method: other
        """,
    )
    defs = load(repo)
    problem = only(defs.problems)
    assert (problem.file, problem.line) == ("peach.yaml", 9)
    assert problem.message == "unknown key 'tasks.bad.colour'; remove it or check its spelling"
    assert names(defs) == ["good", "also_good"]


@pytest.mark.parametrize(
    "line,fragment",
    [
        ("full_notebook: 'yes'", "'tasks.t.full_notebook'"),
        ("full_notebook: 1", "'tasks.t.full_notebook'"),
        ("timeout: '120'", "'tasks.t.timeout'"),
        ("timeout: true", "'tasks.t.timeout'"),
        ("method: 12", "'tasks.t.method'"),
        ("executor: [python]", "'tasks.t.executor'"),
        ("dependencies: six", "'tasks.t.dependencies'"),
        ("loop: 3", "'tasks.t.loop'"),
        ("notebook2: nb.ipynb", "unknown key 'tasks.t.notebook2'"),
    ],
)
def test_wrong_types_are_reported_on_their_line(repo: Path, line: str, fragment: str) -> None:
    write(repo, "peach.yaml", f"codops: default\ntasks:\n  t:\n    notebook: nb.ipynb\n    {line}\n")
    defs = load(repo)
    problem = only(defs.problems)
    assert (problem.file, problem.line) == ("peach.yaml", 5)
    assert fragment in problem.message
    assert defs.tasks == ()


def test_yaml_booleans_are_booleans(repo: Path) -> None:
    write(repo, "peach.yaml", "codops: default\ntasks:\n  t: {notebook: nb.ipynb, full_notebook: yes}\n")
    (task,) = load(repo).tasks
    assert task.full_notebook is True and task.method is None


@pytest.mark.parametrize(
    "line,fragment",
    [
        ("executor: docker", "executor 'docker' is unknown"),
        ("loop: nightly", "loop 'nightly' is not allowed"),
        ("method: 1st_step", "not a Python function name"),
        ("method: class", "not a Python function name"),
        ("method: a.b", "not a Python function name"),
    ],
)
def test_wrong_values_are_reported_on_their_line(repo: Path, line: str, fragment: str) -> None:
    method = "" if line.startswith("method") else "    method: run\n"
    write(repo, "peach.yaml", f"codops: default\ntasks:\n  t:\n    notebook: nb.ipynb\n    {line}\n{method}")
    defs = load(repo)
    problem = only(defs.problems)
    assert (problem.file, problem.line) == ("peach.yaml", 5)
    assert fragment in problem.message
    assert defs.tasks == ()


def test_method_required_unless_full_notebook(repo: Path) -> None:
    write(repo, "peach.yaml", "codops: default\ntasks:\n  t:\n    notebook: nb.ipynb\n    full_notebook: false\n")
    defs = load(repo)
    problem = only(defs.problems)
    assert (problem.file, problem.line) == ("peach.yaml", 3)
    assert "no `method`" in problem.message and "full_notebook: true" in problem.message


def test_missing_notebook(repo: Path) -> None:
    write(repo, "peach.yaml", "codops: default\ntasks:\n  t:\n    method: run\n")
    problem = only(load(repo).problems)
    assert (problem.file, problem.line) == ("peach.yaml", 3)
    assert problem.message == "missing key 'tasks.t.notebook'; add it"


@pytest.mark.parametrize("body", ["", " ~", " [nb.ipynb]", " nb.ipynb"])
def test_task_that_is_not_a_mapping(repo: Path, body: str) -> None:
    write(repo, "peach.yaml", f"codops: default\ntasks:\n  good: {{notebook: nb.ipynb, method: run}}\n  t:{body}\n")
    defs = load(repo)
    problem = only(defs.problems)
    assert (problem.file, problem.line) == ("peach.yaml", 4)
    assert "task 't' must be a mapping" in problem.message
    assert names(defs) == ["good"]


@pytest.mark.parametrize("name", ["'has space'", "'x/y'", "'..'", "'é'", "''"])
def test_invalid_task_names(repo: Path, name: str) -> None:
    write(repo, "peach.yaml", f"codops: default\ntasks:\n  {name}: {{notebook: nb.ipynb, method: run}}\n")
    defs = load(repo)
    problem = only(defs.problems)
    assert (problem.file, problem.line) == ("peach.yaml", 3)
    assert "task name" in problem.message
    assert defs.tasks == ()


@pytest.mark.parametrize("key", ["12", "true", "1.5", "null"])
def test_non_string_task_names(repo: Path, key: str) -> None:
    write(repo, "peach.yaml", f"codops: default\ntasks:\n  {key}: {{notebook: nb.ipynb, method: run}}\n")
    problem = only(load(repo).problems)
    assert (problem.file, problem.line) == ("peach.yaml", 3)
    assert "is not a string; quote it" in problem.message


def test_valid_task_name_characters(repo: Path) -> None:
    write(repo, "peach.yaml", "codops: default\ntasks:\n  A.b-C_9: {notebook: nb.ipynb, method: run}\n")
    assert names(load(repo)) == ["A.b-C_9"]


# -- duplicates ----------------------------------------------------------------------


def test_task_defined_twice_in_one_file_keeps_the_first(repo: Path) -> None:
    write(
        repo,
        "peach.yaml",
        """\
        codops: default
        tasks:
          x:
            notebook: nb.ipynb
            method: first
          x:
            notebook: nb.ipynb
            method: second
        """,
    )
    defs = load(repo)
    problem = only(defs.problems)
    assert (problem.file, problem.line) == ("peach.yaml", 6)
    assert problem.message == "task 'x' is defined twice in this file; the first definition is used, remove the other"
    (task,) = defs.tasks
    assert task.method == "first" and task.source_line == 3


def test_other_duplicate_keys(repo: Path) -> None:
    write(
        repo,
        "peach.yaml",
        """\
        codops: default
        tasks:
          x:
            notebook: nb.ipynb
            method: first
            method: second
        codops: other
        """,
    )
    defs = load(repo)
    assert where(defs.problems) == [("peach.yaml", 6), ("peach.yaml", 7)]
    assert "'tasks.x.method' is given twice" in defs.problems[0].message
    assert "'codops' is given twice" in defs.problems[1].message
    (task,) = defs.tasks
    assert (task.codops, task.method) == ("default", "first")


def test_same_task_in_two_files_of_the_repository(repo: Path) -> None:
    write(repo, "peach.conf/a.yaml", "codops: default\n\n\ntasks:\n  x: {notebook: nb.ipynb, method: first}\n")
    write(
        repo,
        "peach.conf/b.yaml",
        "codops: default\ntasks:\n  y: {notebook: nb.ipynb, method: y}\n  x: {notebook: nb.ipynb, method: second}\n",
    )
    write(repo, "peach.yaml", "codops: other\ntasks:\n  x: {notebook: nb.ipynb, method: other}\n")
    defs = load(repo)
    problem = only(defs.problems)
    assert (problem.file, problem.line) == ("peach.conf/b.yaml", 4)
    assert problem.message == "task 'default/x' is already defined in peach.conf/a.yaml:5; rename one of them"
    assert [(t.codops, t.name, t.method) for t in defs.tasks] == [
        ("default", "x", "first"),
        ("default", "y", "y"),
        ("other", "x", "other"),
    ]


# -- notebooks -----------------------------------------------------------------------


def task_with_notebook(root: Path, nb: str) -> RepoDefinitions:
    write(root, "peach.yaml", f"codops: default\ntasks:\n  t:\n    method: run\n    notebook: {json.dumps(nb)}\n")
    return load(root)


@pytest.mark.parametrize(
    "nb,expected",
    [
        ("./a/../nb.ipynb", "nb.ipynb"),
        ("sub//deep/./n.ipynb", "sub/deep/n.ipynb"),
        ("sub/deep/../deep/n.ipynb", "sub/deep/n.ipynb"),
        ("script.py", "script.py"),
    ],
)
def test_notebook_paths_are_normalised(repo: Path, nb: str, expected: str) -> None:
    notebook(repo, "sub/deep/n.ipynb")
    (repo / "script.py").write_text("def run():\n    pass\n")
    defs = task_with_notebook(repo, nb)
    assert defs.problems == ()
    assert defs.tasks[0].notebook == expected


@pytest.mark.parametrize("nb", ["../outside.ipynb", "sub/../../outside.ipynb", "..", "./../repo/nb.ipynb"])
def test_notebook_leaving_the_repository_with_dotdot(repo: Path, nb: str) -> None:
    notebook(repo.parent, "outside.ipynb")
    defs = task_with_notebook(repo, nb)
    problem = only(defs.problems)
    assert (problem.file, problem.line) == ("peach.yaml", 5)
    assert "leads out of the repository" in problem.message
    assert defs.tasks == ()


@pytest.mark.parametrize("nb", ["/etc/passwd", "/nb.ipynb", "C:\\nb.ipynb", "\\\\server\\nb.ipynb"])
def test_absolute_notebook_path(repo: Path, nb: str) -> None:
    problem = only(task_with_notebook(repo, nb).problems)
    assert (problem.file, problem.line) == ("peach.yaml", 5)
    assert "absolute path" in problem.message


def test_absolute_path_to_a_file_inside_the_repository_is_still_refused(repo: Path) -> None:
    problem = only(task_with_notebook(repo, str(repo / "nb.ipynb")).problems)
    assert "absolute path" in problem.message


def test_notebook_symlink_leading_outside(repo: Path, tmp_path: Path) -> None:
    outside = notebook(tmp_path, "secret.ipynb")
    os.symlink(outside, repo / "link.ipynb")
    defs = task_with_notebook(repo, "link.ipynb")
    problem = only(defs.problems)
    assert (problem.file, problem.line) == ("peach.yaml", 5)
    assert "symbolic link" in problem.message
    assert defs.tasks == ()


def test_symlinked_directory_along_the_path_leading_outside(repo: Path, tmp_path: Path) -> None:
    notebook(tmp_path, "elsewhere/n.ipynb")
    os.symlink(tmp_path / "elsewhere", repo / "dirlink")
    problem = only(task_with_notebook(repo, "dirlink/n.ipynb").problems)
    assert (problem.file, problem.line) == ("peach.yaml", 5)
    assert "symbolic link" in problem.message


def test_symlink_inside_the_repository_is_fine(repo: Path) -> None:
    notebook(repo, "real/n.ipynb")
    os.symlink(repo / "real", repo / "alias")
    defs = task_with_notebook(repo, "alias/n.ipynb")
    assert defs.problems == ()
    assert defs.tasks[0].notebook == "alias/n.ipynb"


def test_symlink_loop_is_a_problem(repo: Path) -> None:
    os.symlink(repo / "loop_b", repo / "loop_a")
    os.symlink(repo / "loop_a", repo / "loop_b")
    problem = only(task_with_notebook(repo, "loop_a").problems)
    assert (problem.file, problem.line) == ("peach.yaml", 5)


def test_missing_notebook_file(repo: Path) -> None:
    defs = task_with_notebook(repo, "x.ipynb")
    problem = only(defs.problems)
    assert (problem.file, problem.line) == ("peach.yaml", 5)
    assert problem.message == "notebook 'x.ipynb' does not exist in the repository; commit it or fix `notebook`"


@pytest.mark.parametrize("nb", ["sub", ".", "sub/"])
def test_notebook_that_is_a_directory(repo: Path, nb: str) -> None:
    (repo / "sub").mkdir()
    problem = only(task_with_notebook(repo, nb).problems)
    assert (problem.file, problem.line) == ("peach.yaml", 5)
    assert "is a directory" in problem.message


def test_empty_notebook_path(repo: Path) -> None:
    problem = only(task_with_notebook(repo, "").problems)
    assert (problem.file, problem.line) == ("peach.yaml", 5)
    assert "`notebook` is empty" in problem.message


# -- timeouts ------------------------------------------------------------------------


def timeout_task(root: Path, timeout: str, loop: str = "", **kwargs) -> RepoDefinitions:
    loop_line = f"    loop: {loop}\n" if loop else ""
    write(
        root,
        "peach.yaml",
        f"codops: default\ntasks:\n  t:\n    notebook: nb.ipynb\n    method: run\n{loop_line}    timeout: {timeout}\n",
    )
    return load(root, **kwargs)


def test_timeout_longer_than_the_organisation_loop(repo: Path) -> None:
    defs = timeout_task(repo, "3601")
    problem = only(defs.problems)
    assert (problem.file, problem.line) == ("peach.yaml", 6)
    assert "longer than the 3600 s limit of the organisation's loop" in problem.message
    assert defs.tasks == ()


def test_timeout_equal_to_the_limit_is_fine(repo: Path) -> None:
    assert timeout_task(repo, "3600").tasks[0].timeout == 3600.0
    assert timeout_task(repo, "0.5").tasks[0].timeout == 0.5


def test_metadata_loop_default_limit_is_300(repo: Path) -> None:
    assert timeout_task(repo, "300", loop="metadata").tasks[0].timeout == 300.0
    defs = timeout_task(repo, "301", loop="metadata")
    problem = only(defs.problems)
    assert (problem.file, problem.line) == ("peach.yaml", 7)
    assert "300 s limit of the 'metadata' loop" in problem.message


def test_limits_come_from_default_timeouts(repo: Path) -> None:
    assert timeout_task(repo, "100", default_timeouts=(90.0, 60.0)).tasks == ()
    assert timeout_task(repo, "80", default_timeouts=(90.0, 60.0)).tasks[0].timeout == 80.0
    assert timeout_task(repo, "80", loop="metadata", default_timeouts=(90.0, 60.0)).tasks == ()


@pytest.mark.parametrize("value", ["0", "-5", ".nan", ".inf", "-.inf"])
def test_timeout_must_be_positive_and_finite(repo: Path, value: str) -> None:
    defs = timeout_task(repo, value)
    problem = only(defs.problems)
    assert (problem.file, problem.line) == ("peach.yaml", 6)
    assert "positive number of seconds" in problem.message


# -- dependencies in definitions -----------------------------------------------------


def test_bad_requirement_entries_each_on_their_line_valid_ones_kept(repo: Path) -> None:
    write(
        repo,
        "peach.yaml",
        """\
        codops: default
        dependencies:
          - tabulate
          - -e ./lib
          - numpy>=1.26
          - ./pkg
        tasks:
          t:
            notebook: nb.ipynb
            method: run
            dependencies:
              - six
              - git+https://github.com/a/b
              - 3
        """,
    )
    defs = load(repo)
    assert where(defs.problems) == [("peach.yaml", 4), ("peach.yaml", 6), ("peach.yaml", 13), ("peach.yaml", 14)]
    assert defs.problems[0].message == (
        "'-e ./lib' is a pip option, not a requirement; "
        "list packages by name and version (PEP 508), e.g. 'tabulate==0.9.0'"
    )
    assert defs.org_dependencies == {"default": ("tabulate", "numpy>=1.26")}
    (task,) = defs.tasks
    assert task.dependencies == ("six",)


def test_dependencies_not_a_list(repo: Path) -> None:
    write(repo, "peach.yaml", GOOD + "dependencies: tabulate\n")
    defs = load(repo)
    problem = only(defs.problems)
    assert (problem.file, problem.line) == ("peach.yaml", 6)
    assert "'dependencies'" in problem.message
    assert names(defs) == ["good"] and defs.org_dependencies == {}


# -- requirement strings -------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "tabulate",
        "numpy>=1.26",
        "requests[socks]; python_version>='3.8'",
        "Foo.Bar[b,a] >=1,<2",
        "pandas==2.2.*",
        "  six  ",
        "zope.interface~=6.0",
    ],
)
def test_valid_requirements(text: str) -> None:
    assert requirement_problem(text) is None


@pytest.mark.parametrize(
    "text,fragment",
    [
        (3, "not a string"),
        (None, "not a string"),
        (["six"], "not a string"),
        ("", "empty"),
        ("   ", "empty"),
        ("--index-url https://example.org/simple", "is a pip option"),
        ("--extra-index-url https://example.org/simple", "is a pip option"),
        ("-e ./lib", "is a pip option"),
        ("-r requirements.txt", "is a pip option"),
        ("-c constraints.txt", "is a pip option"),
        ("./pkg", "is a local path"),
        ("../x", "is a local path"),
        ("/abs/path", "is a local path"),
        ("pkg.whl", "is a local path"),
        ("dist/pkg-1.0.tar.gz", "is a local path"),
        ("file:///tmp/pkg", "is a local path"),
        ("file:pkg", "is a local path"),
        ("C:\\pkg", "is a local path"),
        ("name @ file:///tmp/pkg", "local path"),
        ("name @ ./pkg", "local path"),
        ("name @ https://example.org/pkg.whl", "is a direct URL"),
        ("name@git+https://github.com/a/b", "is a direct URL"),
        ("git+https://github.com/a/b", "is a direct URL"),
        ("https://example.org/pkg.whl", "is a direct URL"),
        ("numpy>=>1", "is not a valid requirement (Expected"),
        ("two words", "is not a valid requirement"),
        ("six\nnumpy", "is not a valid requirement"),
    ],
)
def test_rejected_requirements(text: object, fragment: str) -> None:
    message = requirement_problem(text)
    assert message is not None and fragment in message
    assert "(PEP 508)" in message and "tabulate==0.9.0" in message


def test_pip_option_message_is_exact() -> None:
    assert requirement_problem("-e ./lib") == (
        "'-e ./lib' is a pip option, not a requirement; "
        "list packages by name and version (PEP 508), e.g. 'tabulate==0.9.0'"
    )


def test_normalise_requirements_sorts_dedups_and_canonicalises() -> None:
    assert normalise_requirements(
        ["Foo.Bar[b,a]>=1,<2", "six", "foo_bar[a,b]<2,>=1", "a>=1", "A-B", "six", " Tabulate "]
    ) == ("a>=1", "a-b", "foo-bar[a,b]<2,>=1", "six", "tabulate")
    assert normalise_requirements([]) == ()
    assert normalise_requirements(["requests; python_version>='3.8'"]) == ('requests; python_version >= "3.8"',)


# -- the core --------------------------------------------------------------------------


def test_parse_definition_text_directly(repo: Path) -> None:
    tasks, deps, problems = parse_definition_text(
        GOOD + "dependencies: [six]\n", "peach.conf/x.yaml", repo, REPO, None, (3600.0, 300.0)
    )
    assert problems == []
    assert deps == {"default": ["six"]}
    assert [(t.name, t.source_file, t.source_line, t.repo) for t in tasks] == [("good", "peach.conf/x.yaml", 3, REPO)]


def test_an_oversized_definition_file_or_notebook_is_refused_unread(repo: Path) -> None:
    """Found by the hostile pass: a 1.5 GiB notebook (2.4 MB once compressed in git) took the
    scheduler to 4.7 GB while it was parsed; nothing bounded a peach.yaml either. Both are
    measured before they are read, and refused with what to do; the other files still load.
    (Sparse files: the test does not write gigabytes.)"""
    from peach_tasks.sources.notebook import NotebookError, extract_code
    from peach_tasks.sources.notebook_files import MAX_NOTEBOOK_BYTES

    write(repo, "peach.conf/good.yaml", GOOD)
    big = write(repo, "peach.conf/big.yaml", GOOD.replace("good", "big"))
    os.truncate(big, (1 << 20) + 1)
    defs = load(repo)
    assert names(defs) == ["good"]
    problem = only(defs.problems)
    assert problem.file == "peach.conf/big.yaml" and "more than the 1 MiB a definition file may be" in problem.message
    heavy = notebook(repo, "heavy.ipynb")
    os.truncate(heavy, MAX_NOTEBOOK_BYTES + 1)
    with pytest.raises(NotebookError, match=r"heavy.ipynb is 64 MiB, more than the 64 MiB a notebook may be: its "
                                            r"outputs make it so; clear them"):
        extract_code(heavy, "run", full_notebook=False, display_name="heavy.ipynb")
