"""Broken repositories for ``peach-tasks validate``: each case is a good repository with one fault.

A case lists the files to write over the good repository (``None`` removes one) and
where the fault must be reported: the file, the line (``None``: a problem about the
whole file) and words the message must contain. ``NB_MARK`` in a notebook's source
marks the line a syntax error must point at; the expected line is then found in the
written ``.ipynb`` file.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import nbformat

NB_MARK = "BROKEN-HERE"

GOOD_CELL = "import os\n\ndef main(payload=None):\n    return {'ok': True}\n"
GOOD_YAML = """\
codops: default
dependencies:
  - tabulate
tasks:
  good:
    executor: python
    notebook: nb.ipynb
    method: main
"""
# Line numbers in GOOD_YAML: codops 1, dependencies 2, its entry 3, tasks 4, good 5,
# executor 6, notebook 7, method 8.


def notebook_text(*cells: str, markdown_first: bool = True) -> str:
    """A notebook as Jupyter saves it: nbformat 4, each source as a list of lines."""
    nb = nbformat.v4.new_notebook()
    nb.cells = ([nbformat.v4.new_markdown_cell("# Notes")] if markdown_first else []) + \
        [nbformat.v4.new_code_cell(c) for c in cells]
    return nbformat.writes(nb)


def task_yaml(body: str, codops: str = "default", name: str = "good") -> str:
    return f"codops: {codops}\ntasks:\n  {name}:\n" + "".join(f"    {line}\n" for line in body.splitlines())


@dataclass
class Case:
    id: str
    files: dict[str, str | bytes | None]
    file: str  # where the problem must be reported
    line: int | None
    words: tuple[str, ...]
    codops: tuple[str, ...] = ()  # allowed organisations (--codops), if any
    setup: Callable[[Path], None] | None = None  # extra set-up (symlinks, untracked files)
    untracked: tuple[str, ...] = field(default_factory=tuple)


def build(root: Path, case: Case) -> None:
    """The good repository with the case's fault, every file added to git's index."""
    root.mkdir(parents=True)
    files: dict[str, str | bytes | None] = {"peach.yaml": GOOD_YAML, "nb.ipynb": notebook_text(GOOD_CELL)}
    files.update(case.files)
    for rel, text in files.items():
        if text is None:
            continue
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
    if case.setup:
        case.setup(root)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "-A", "--", "."] +
                   [f":(exclude){rel}" for rel in case.untracked], check=True)


def expected_line(root: Path, case: Case) -> int | None:
    if case.line != -1:
        return case.line
    text = (root / case.file).read_text(encoding="utf-8")
    return next(i for i, line in enumerate(text.splitlines(), 1) if NB_MARK in line)


def _outside_link(target: str, link: str) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        outside = root.parent / f"{root.name}-outside"
        outside.mkdir(exist_ok=True)
        (outside / "x.ipynb").write_text(notebook_text(GOOD_CELL))
        (outside / "x.yaml").write_text(GOOD_YAML)
        (root / link).parent.mkdir(parents=True, exist_ok=True)
        (root / link).symlink_to(outside / target)
    return setup


def _mkdir(rel: str) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        (root / rel).mkdir(parents=True)
        (root / rel / "keep").write_text("")
    return setup


NB = "nb.ipynb"
PY = "executor: python\nnotebook: nb.ipynb\n"
CASES = [
    # --- YAML syntax
    Case("yaml-unclosed-flow", {"peach.yaml": "codops: default\ntasks: [\n"}, "peach.yaml", 2, ("YAML syntax",)),
    Case("yaml-tab", {"peach.yaml": None, "peach.conf/a.yaml": "codops: default\ntasks:\n\tgood: {}\n"},
         "peach.conf/a.yaml", 3, ("YAML syntax",)),
    Case("yaml-duplicate-key", {"peach.yaml": GOOD_YAML.replace("tasks:\n", "codops: other\ntasks:\n")},
         "peach.yaml", 4, ("given twice",)),
    Case("yaml-double-colon", {"peach.yaml": "codops: default\ntasks:\n  good: notebook: nb.ipynb\n"},
         "peach.yaml", 3, ("YAML syntax",)),
    Case("yaml-unterminated-quote", {"peach.yaml": "codops: \"default\ntasks: {}\n"}, "peach.yaml", 2,
         ("YAML syntax",)),
    # --- wrong types
    Case("type-timeout-string", {"peach.yaml": task_yaml(PY + "method: main\ntimeout: '120'\n")},
         "peach.yaml", 7, ("timeout",)),
    Case("type-full-notebook-string", {"peach.yaml": task_yaml(PY + "method: main\nfull_notebook: 'yes'\n")},
         "peach.yaml", 7, ("full_notebook",)),
    Case("type-tasks-list", {"peach.yaml": "codops: default\ntasks:\n  - good\n"}, "peach.yaml", 2, ("tasks",)),
    Case("type-dependencies-string", {"peach.yaml": GOOD_YAML.replace("dependencies:\n  - tabulate\n",
                                                                       "dependencies: tabulate\n")},
         "peach.yaml", 2, ("dependencies",)),
    Case("type-codops-number", {"peach.yaml": GOOD_YAML.replace("codops: default", "codops: 123")},
         "peach.yaml", 1, ("codops",)),
    Case("type-method-number", {"peach.yaml": task_yaml(PY + "method: 5\n")}, "peach.yaml", 6, ("method",)),
    Case("type-task-body-string", {"peach.yaml": "codops: default\ntasks:\n  good: nb.ipynb\n"}, "peach.yaml", 3,
         ("must be a mapping",)),
    Case("type-notebook-list", {"peach.yaml": task_yaml("notebook: [a.ipynb, b.ipynb]\nmethod: main\n")},
         "peach.yaml", 4, ("notebook",)),
    # --- unknown keys
    Case("unknown-top-key", {"peach.yaml": GOOD_YAML + "schedule: daily\n"}, "peach.yaml", 9, ("unknown key",)),
    Case("unknown-task-key", {"peach.yaml": task_yaml(PY + "metod: main\n")}, "peach.yaml", 6, ("metod",)),
    Case("unknown-executor", {"peach.yaml": task_yaml("executor: pyhton\nnotebook: nb.ipynb\nmethod: main\n")},
         "peach.yaml", 4, ("pyhton",)),
    Case("unknown-loop", {"peach.yaml": task_yaml(PY + "method: main\nloop: metdata\n")}, "peach.yaml", 7,
         ("metdata",)),
    # --- missing notebook
    Case("missing-notebook", {"peach.yaml": task_yaml("executor: python\nnotebook: missing.ipynb\nmethod: main\n")},
         "peach.yaml", 5, ("does not exist",)),
    Case("missing-notebook-subdir", {"peach.yaml": task_yaml("notebook: sub/dir/x.ipynb\nmethod: main\n")},
         "peach.yaml", 4, ("does not exist",)),
    Case("notebook-is-directory", {"peach.yaml": task_yaml("notebook: notebooks\nmethod: main\n")},
         "peach.yaml", 4, ("directory",), setup=_mkdir("notebooks")),
    Case("notebook-empty-path", {"peach.yaml": task_yaml("notebook: ''\nmethod: main\n")}, "peach.yaml", 4,
         ("empty",)),
    # --- path escapes
    Case("escape-dotdot", {"peach.yaml": task_yaml("notebook: ../other/nb.ipynb\nmethod: main\n")},
         "peach.yaml", 4, ("leads out",)),
    Case("escape-absolute", {"peach.yaml": task_yaml("notebook: /etc/nb.ipynb\nmethod: main\n")},
         "peach.yaml", 4, ("absolute",)),
    Case("escape-symlink-notebook", {"peach.yaml": task_yaml("notebook: link.ipynb\nmethod: main\n")},
         "peach.yaml", 4, ("symbolic link",), setup=_outside_link("x.ipynb", "link.ipynb")),
    Case("escape-symlink-definition", {}, "peach.conf/x.yaml", None, ("symbolic link",),
         setup=_outside_link("x.yaml", "peach.conf/x.yaml")),
    # --- entry method
    Case("method-missing", {"peach.yaml": GOOD_YAML.replace("method: main", "method: train")}, "peach.yaml", 8,
         ("no top-level function 'train'",)),
    Case("method-nested-only", {NB: notebook_text("def outer():\n    def main():\n        pass\n")},
         "peach.yaml", 8, ("no top-level function 'main'",)),
    Case("method-not-identifier", {"peach.yaml": GOOD_YAML.replace("method: main", "method: not-a-name")},
         "peach.yaml", 8, ("not a Python function name",)),
    Case("method-absent", {"peach.yaml": task_yaml("notebook: nb.ipynb\n")}, "peach.yaml", 3, ("no `method`",)),
    Case("method-missing-full-notebook",
         {"peach.yaml": task_yaml(PY + "method: train\nfull_notebook: true\n")}, "peach.yaml", 6,
         ("no top-level function 'train'",)),
    # --- syntax errors in cells (line -1: the NB_MARK line of the written notebook)
    Case("syntax-entry-cell", {NB: notebook_text(f"def main():\n    x = = 1  # {NB_MARK}\n    return x\n")},
         NB, -1, ("cell 2 line 2", "SyntaxError")),
    Case("syntax-full-notebook-second-cell",
         {"peach.yaml": task_yaml(PY + "method: main\nfull_notebook: true\n"),
          NB: notebook_text("A = 1\n", f"def main():\n    return A\nprint(A))  # {NB_MARK}\n")},
         NB, -1, ("cell 3 line 3",)),
    Case("syntax-unclosed-bracket", {NB: notebook_text(f"def main():\n    return (1,  # {NB_MARK}\n")},
         NB, -1, ("never closed",)),
    Case("syntax-indentation", {NB: notebook_text(f"def main():\nreturn 1  # {NB_MARK}\n")}, NB, -1,
         ("IndentationError",)),
    Case("notebook-broken-json", {NB: notebook_text(GOOD_CELL).replace('"cells": [', '"cells": [\n<<<<<<< HEAD', 1)},
         NB, 3, ("not valid notebook JSON",)),
    Case("notebook-not-a-notebook", {NB: '{"metadata": {}}\n'}, NB, None, ("not a Jupyter notebook",)),
    # --- issue 12: entry signature, unsupported magics, refusals named as what they are, .py notebooks
    Case("entry-needs-arguments", {NB: notebook_text(f"def main(date, region):  # {NB_MARK}\n    return date\n")},
         NB, -1, ("cell 2 line 1", "'date', 'region' have no default", "main(payload)")),
    Case("entry-keyword-only", {NB: notebook_text(f"x = 1\n\ndef main(*, day):  # {NB_MARK}\n    return day\n")},
         NB, -1, ("cell 2 line 3", "'day' has no default")),
    Case("magic-unsupported", {NB: notebook_text(f"%load_ext sql  # {NB_MARK}\n" + GOOD_CELL)},
         NB, -1, ("cell 2 line 1", "'sql' is not loaded by peach-tasks")),
    Case("magic-cell-unsupported", {"peach.yaml": task_yaml(PY + "method: main\nfull_notebook: true\n"),
                                    NB: notebook_text(f"%%sql  # {NB_MARK}\nSELECT 1\n", GOOD_CELL)},
         NB, -1, ("cell 2 line 1", "cell magic '%%sql  # BROKEN-HERE' is not supported")),
    Case("notebook-empty", {NB: ""}, NB, None, ("empty file",)),
    Case("notebook-lfs-pointer", {NB: "version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 9\n"},
         NB, None, ("Git LFS pointer",)),
    Case("notebook-merge-conflict",
         {NB: notebook_text(GOOD_CELL).replace('"cells": [', '"cells": [\n<<<<<<< HEAD\n=======\n>>>>>>> b', 1)},
         NB, 3, ("merge-conflict markers",)),
    Case("notebook-other-language",
         {NB: json.dumps({**json.loads(notebook_text(GOOD_CELL)),
                          "metadata": {"kernelspec": {"name": "ir", "display_name": "R", "language": "R"}}})},
         NB, None, ("is a R notebook", "Python notebooks only")),
    Case("percent-py-syntax", {"peach.yaml": task_yaml("notebook: nb.py\nmethod: main\n"),
                               "nb.py": f"# %% [markdown]\n# title\n\n# %%\ndef main():\n    x = = 1  # {NB_MARK}\n"},
         "nb.py", -1, ("cell 2 line 2", "SyntaxError")),
    # --- requirements
    Case("req-pip-option", {"peach.yaml": GOOD_YAML.replace("  - tabulate\n", "  - -e ./lib\n")}, "peach.yaml", 3,
         ("pip option",)),
    Case("req-vcs-url", {"peach.yaml": GOOD_YAML.replace("  - tabulate\n", "  - git+https://host/x.git\n")},
         "peach.yaml", 3, ("direct URL",)),
    Case("req-local-path", {"peach.yaml": GOOD_YAML.replace("  - tabulate\n", "  - ./libs/mine\n")},
         "peach.yaml", 3, ("local path",)),
    Case("req-bad-specifier", {"peach.yaml": GOOD_YAML.replace("  - tabulate\n", "  - numpy>=>1\n")},
         "peach.yaml", 3, ("not a valid requirement",)),
    Case("req-number", {"peach.yaml": GOOD_YAML.replace("  - tabulate\n", "  - 5\n")}, "peach.yaml", 3,
         ("not a string",)),
    Case("req-task-level", {"peach.yaml": task_yaml(PY + "method: main\ndependencies:\n  - six\n  - ../x.whl\n")},
         "peach.yaml", 9, ("local path",)),
    # --- duplicates
    Case("duplicate-across-files", {"peach.conf/more.yaml": task_yaml(PY + "method: main\n")},
         "peach.yaml", 5, ("already defined in peach.conf/more.yaml",)),
    Case("duplicate-in-file", {"peach.yaml": GOOD_YAML + "  good:\n    notebook: nb.ipynb\n"}, "peach.yaml", 9,
         ("defined twice",)),
    # --- codops
    Case("codops-uppercase", {"peach.yaml": GOOD_YAML.replace("codops: default", "codops: Default")},
         "peach.yaml", 1, ("lowercase",)),
    Case("codops-reserved", {"peach.yaml": GOOD_YAML.replace("codops: default", "codops: metadata")},
         "peach.yaml", 1, ("reserved",)),
    Case("codops-empty", {"peach.yaml": GOOD_YAML.replace("codops: default", "codops: ''")}, "peach.yaml", 1,
         ("empty",)),
    Case("codops-not-allowed", {}, "peach.yaml", 1, ("may define tasks only for: chrts",), codops=("chrts",)),
    Case("codops-missing", {"peach.yaml": GOOD_YAML.replace("codops: default\n", "")}, "peach.yaml", 1,
         ("missing key 'codops'",)),
    # --- other faults
    Case("timeout-over-limit", {"peach.yaml": task_yaml(PY + "method: main\nloop: metadata\ntimeout: 600\n")},
         "peach.yaml", 8, ("longer than the 300 s limit",)),
    Case("timeout-negative", {"peach.yaml": task_yaml(PY + "method: main\ntimeout: -1\n")}, "peach.yaml", 7,
         ("positive",)),
    Case("task-name-invalid", {"peach.yaml": task_yaml(PY + "method: main\n", name="'bad name!'")},
         "peach.yaml", 3, ("may contain only",)),
    Case("definition-not-utf8", {"peach.yaml": b"codops: default\ntasks: {}\n# caf\xe9\n"}, "peach.yaml", 3,
         ("not UTF-8",)),
    Case("notebook-untracked", {}, "peach.yaml", 5, ("not tracked by git",), untracked=(NB,)),
    Case("definition-untracked", {"peach.conf/new.yaml": task_yaml(PY + "method: main\n", name="other")},
         "peach.conf/new.yaml", None, ("not tracked by git",), untracked=("peach.conf/new.yaml",)),
    Case("no-definitions", {"peach.yaml": None}, "peach.yaml", None, ("no peach.yaml",)),
]
