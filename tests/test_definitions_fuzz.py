"""Whatever a definition file holds, reading it never raises and never escapes the repository."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from peach_tasks.errors import Problem
from peach_tasks.model import TaskSpec
from peach_tasks.sources.definitions import load_definitions, parse_definition_text

REPO = "team/fuzz"
FILE = "peach.conf/fuzz.yaml"
TIMEOUTS = (3600.0, 300.0)
NOTEBOOK = json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with real notebooks, a directory and symlinks leading out of it."""
    base = tmp_path_factory.mktemp("fuzz")
    outside = base / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "secret.ipynb").write_text(NOTEBOOK)
    (outside / "dir" / "n.ipynb").write_text(NOTEBOOK)
    repo = base / "repo"
    (repo / "sub").mkdir(parents=True)
    (repo / "folder").mkdir()
    (repo / "nb.ipynb").write_text(NOTEBOOK)
    (repo / "sub" / "n.ipynb").write_text(NOTEBOOK)
    (repo / "script.py").write_text("def run():\n    pass\n")
    os.symlink(outside / "secret.ipynb", repo / "link.ipynb")
    os.symlink(outside / "dir", repo / "dirlink")
    os.symlink(repo / "sub", repo / "inside_link")
    return repo


def check(text: str, root: Path, tasks: list, deps: dict, problems: list) -> None:
    """The invariants every result must keep, whatever the input."""
    n_lines = len(text.splitlines())
    assert all(isinstance(p, Problem) for p in problems)
    for p in problems:
        assert p.kind == "config" and p.scope == REPO and p.file == FILE
        assert p.message
        assert p.line is None or 1 <= p.line <= n_lines, (p, n_lines)
    real_root = root.resolve()
    for spec in tasks:
        assert isinstance(spec, TaskSpec)
        target = (root / spec.notebook).resolve()
        assert target.is_relative_to(real_root) and target.is_file(), spec.notebook
        assert re.fullmatch(r"[a-z0-9_-]+", spec.codops) and spec.codops != "metadata"
        assert re.fullmatch(r"[A-Za-z0-9_.-]+", spec.name)
        assert spec.loop in (None, "metadata")
        assert spec.method is not None or spec.full_notebook
        if spec.timeout is not None:
            limit = TIMEOUTS[1] if spec.loop == "metadata" else TIMEOUTS[0]
            assert math.isfinite(spec.timeout) and 0 < spec.timeout <= limit
        assert spec.source_file == FILE and spec.repo == REPO
        assert spec.source_line is not None and 1 <= spec.source_line <= n_lines
        assert all(isinstance(d, str) for d in spec.dependencies)
    assert len({t.key for t in tasks}) == len(tasks)
    for codops, entries in deps.items():
        assert isinstance(codops, str) and all(isinstance(e, str) for e in entries)


# -- (a) arbitrary text ----------------------------------------------------------------

YAMLISH = st.text(alphabet=" \n\t:-[]{},&*!|>'\"#%@`?abcdeknopst0129.\\/", max_size=200)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=300), YAMLISH))
def test_arbitrary_text_never_raises(root: Path, text: str) -> None:
    tasks, deps, problems = parse_definition_text(text, FILE, root, REPO, None, TIMEOUTS)
    check(text, root, tasks, deps, problems)


# -- (b) structured documents ----------------------------------------------------------

PLAUSIBLE_KEYS = [
    "codops",
    "tasks",
    "notebook",
    "method",
    "executor",
    "loop",
    "timeout",
    "dependencies",
    "full_notebook",
]
PLAUSIBLE_STRINGS = [
    "default",
    "metadata",
    "Default",
    "",
    "2024-01-01",
    "nb.ipynb",
    "./sub/../nb.ipynb",
    "sub/n.ipynb",
    "inside_link/n.ipynb",
    "script.py",
    "folder",
    "missing.ipynb",
    "../outside/secret.ipynb",
    "sub/../../x.ipynb",
    "/etc/passwd",
    "link.ipynb",
    "dirlink/n.ipynb",
    "run",
    "1st",
    "class",
    "spark",
    "python",
    "yes",
    "120",
    "tabulate",
    "numpy>=1.26",
    "-e ./lib",
    "git+https://github.com/a/b",
    "x @ https://e.org/x.whl",
    "./pkg",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-10_000, max_value=10_000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(PLAUSIBLE_STRINGS),
    st.text(max_size=20),
)
keys = st.one_of(st.sampled_from(PLAUSIBLE_KEYS), st.sampled_from(PLAUSIBLE_STRINGS), scalars)
anything = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)
dependency_lists = st.lists(st.one_of(st.sampled_from(PLAUSIBLE_STRINGS), scalars), max_size=4)
notebooks = st.one_of(st.sampled_from(PLAUSIBLE_STRINGS), st.text(max_size=15))

task_body = st.fixed_dictionaries(
    {},
    optional={
        "notebook": st.one_of(notebooks, anything),
        "method": st.one_of(st.sampled_from(["run", "train_model", "1st", "class", "a.b"]), anything),
        "full_notebook": st.one_of(st.booleans(), anything),
        "executor": st.one_of(st.sampled_from(["spark", "python", "docker"]), anything),
        "loop": st.one_of(st.sampled_from(["metadata", "nightly"]), anything),
        "dependencies": st.one_of(dependency_lists, anything),
        "timeout": st.one_of(st.floats(min_value=-10, max_value=5000), st.integers(-10, 5000), anything),
        "colour": anything,
    },
)
# Mostly well-formed tasks, so that the invariants on returned tasks are exercised.
NOTEBOOK_PATHS = [
    "nb.ipynb",
    "./sub/../nb.ipynb",
    "sub/n.ipynb",
    "inside_link/n.ipynb",
    "script.py",
    "folder",
    "missing.ipynb",
    "../outside/secret.ipynb",
    "sub/../../outside/secret.ipynb",
    "/etc/passwd",
    "link.ipynb",
    "dirlink/n.ipynb",
    "dirlink/../nb.ipynb",
]
plausible_task = st.fixed_dictionaries(
    {"notebook": st.sampled_from(NOTEBOOK_PATHS)},
    optional={
        "method": st.sampled_from(["run", "train_model", "class"]),
        "full_notebook": st.booleans(),
        "executor": st.sampled_from(["spark", "python"]),
        "loop": st.sampled_from(["metadata", None]),
        "timeout": st.one_of(st.floats(min_value=-1, max_value=4000), st.integers(0, 4000), st.none()),
        "dependencies": st.lists(st.sampled_from(["six", "tabulate==0.9.0", "-e ./lib", "./pkg", 3]), max_size=3),
    },
)
task_names = st.one_of(st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True), keys)
plausible_document = st.fixed_dictionaries(
    {
        "codops": st.sampled_from(["default", "team-a", "x"]),
        "tasks": st.dictionaries(
            st.from_regex(r"[A-Za-z0-9_-]{1,8}", fullmatch=True),
            st.one_of(plausible_task, plausible_task, task_body),
            max_size=5,
        ),
    },
    optional={"dependencies": dependency_lists},
)
documents = st.one_of(
    plausible_document,
    st.fixed_dictionaries(
        {},
        optional={
            "codops": st.one_of(st.sampled_from(["default", "team-a", "metadata", "Bad", ""]), anything),
            "dependencies": st.one_of(dependency_lists, anything),
            "tasks": st.one_of(st.dictionaries(task_names, st.one_of(task_body, anything), max_size=5), anything),
            "extra": anything,
        },
    ),
    anything,
)


@settings(max_examples=300, deadline=None)
@given(doc=documents, allowed=st.one_of(st.none(), st.just(["default", "team-a"])))
def test_structured_documents_never_raise_or_escape(root: Path, doc: object, allowed: list[str] | None) -> None:
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    tasks, deps, problems = parse_definition_text(text, FILE, root, REPO, allowed, TIMEOUTS)
    check(text, root, tasks, deps, problems)
    if allowed is not None:
        assert all(t.codops in allowed for t in tasks)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_on_disk_never_raise(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    repo = tmp_path_factory.mktemp("bytes")
    (repo / "peach.yaml").write_bytes(data)
    defs = load_definitions(repo, REPO)
    assert defs.files == ("peach.yaml",)
    assert all(isinstance(p, Problem) and p.file == "peach.yaml" for p in defs.problems)
