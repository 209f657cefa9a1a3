"""A notebook file's code cells: Jupyter's ``.ipynb`` (nbformat 4, and 3 upgraded on read)
or a jupytext percent-format ``.py`` file (``# %%`` cells).

What is not a Python notebook is refused as what it is (an empty file, a Git LFS pointer,
a file with merge-conflict markers, a notebook of another language), with what to do.
This runs before every task, so it reads the JSON with :mod:`json` directly (nbformat
alone costs more than the whole extraction).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import PeachError

LFS_POINTER = b"version https://git-lfs.github.com/spec/"
_CONFLICT = re.compile(r"^<<<<<<<(?: |$)", re.MULTILINE)
_CONFLICT_END = re.compile(r"^>>>>>>>(?: |$)", re.MULTILINE)
# jupytext percent format: '# %%' starts a cell; '[markdown]', '[md]' or '[raw]' make it text.
_PERCENT_CELL = re.compile(r"^# ?%%(?:[ \t]|$)")
_PERCENT_TEXT = re.compile(r"\[(markdown|md|raw)\]")
# jupytext comments magics out in .py files ('# %matplotlib inline', '# !ls'); Jupyter
# opening the file runs them, so they are magics again (jupytext's own rule, simplified).
_COMMENTED_MAGIC = re.compile(r"^([ \t]*)# ?((?:%%?|!)[A-Za-z])")
_NAMES = {"julia": "Julia", "r": "R", "scala": "Scala", "javascript": "JavaScript", "typescript": "TypeScript",
          "sql": "SQL", "bash": "Bash", "c++": "C++", "c++17": "C++", "go": "Go", "rust": "Rust",
          "ruby": "Ruby", "java": "Java", "powershell": "PowerShell", "sas": "SAS", "matlab": "MATLAB",
          "octave": "Octave", "wolfram language": "Wolfram Language", "haskell": "Haskell", "kotlin": "Kotlin"}


class NotebookError(PeachError):
    """A notebook that cannot give runnable code; the message names the file and the fix.

    ``kind`` says what is wrong: ``read`` (missing, unreadable, not a notebook),
    ``method`` (the entry method is missing or not defined), ``syntax``, ``magic`` (a
    magic peach-tasks cannot run as Jupyter does) or ``signature`` (an entry function
    that cannot be called without arguments). ``cell`` (1-based, every cell counted) and
    ``line`` (1-based in that cell) say where, when known; ``file_line`` is the line of
    the notebook file itself (broken JSON, a ``.py`` notebook), so that
    ``peach-tasks validate`` can point an editor at it. ``also`` holds the notebook's
    further problems of the same pass (other cells' magics and syntax), for ``validate``.
    """

    def __init__(self, message: str, *, kind: str = "read", cell: int | None = None,
                 line: int | None = None, file_line: int | None = None) -> None:
        super().__init__(message)
        self.kind, self.cell, self.line, self.file_line = kind, cell, line, file_line
        self.also: list[NotebookError] = []


@dataclass(frozen=True)
class CodeCells:
    """The code cells of a notebook: 0-based indexes among all its cells, their sources,
    (``.py`` notebooks) the file line where each source starts, and the positions (in these
    lists) of the cells tagged ``raises-exception``, whose error nbclient shows and runs past."""

    indexes: list[int]
    sources: list[str]
    file_lines: list[int] | None = None
    raising: frozenset[int] = frozenset()
    skipped: dict[int, str] = field(default_factory=dict)  # index -> source of a cell tagged skip-execution

    def file_line(self, position: int, line: int) -> int | None:
        """The file line of line ``line`` (1-based) of the ``position``-th code cell, if known."""
        return None if self.file_lines is None else self.file_lines[position] + line - 1


# What a notebook may weigh: its code is a small part of it (outputs, embedded images); a
# larger file is refused before it is read, as parsing JSON takes a few times its size in
# memory (a 1.5 GiB notebook took the scheduler to 4.7 GB: the hostile pass).
MAX_NOTEBOOK_BYTES = 64 << 20


def read_code_cells(path: Path, name: str) -> CodeCells:
    """The notebook's code cells; raises :class:`NotebookError` for anything else."""
    try:
        size = path.stat().st_size
        if size > MAX_NOTEBOOK_BYTES:
            raise NotebookError(f"{name} is {size / (1 << 20):.0f} MiB, more than the {MAX_NOTEBOOK_BYTES >> 20} MiB "
                                "a notebook may be: its outputs make it so; clear them (Jupyter: Edit > Clear "
                                f"Outputs of All Cells, or jupyter nbconvert --clear-output --inplace {path.name}) "
                                "and commit")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NotebookError(f"{name} does not exist; check the task's `notebook` path in the repository") from None
    except OSError as exc:
        raise NotebookError(
            f"{name} cannot be read ({exc.strerror or exc}); check that it is a readable file"
        ) from None
    if not raw.strip():
        raise NotebookError(f"{name} is an empty file ({len(raw)} bytes), not a notebook; "
                            "save the notebook from Jupyter and commit it")
    if raw.startswith(LFS_POINTER):
        raise NotebookError(f"{name} is a Git LFS pointer, not the notebook: the scheduler's checkout does not "
                            "fetch LFS files; keep notebooks in git itself (`git lfs untrack` the pattern, "
                            "`git add --renormalize`) and commit")
    try:
        text = raw.decode("utf-8-sig")  # Windows editors may add a BOM
    except UnicodeDecodeError:
        raise NotebookError(f"{name} is not UTF-8 text; re-save the notebook from Jupyter") from None
    conflict = _CONFLICT.search(text)
    if conflict and _CONFLICT_END.search(text, conflict.end()):
        line = text.count("\n", 0, conflict.start()) + 1
        raise NotebookError(f"{name} has unresolved merge-conflict markers (line {line}: '<<<<<<<'); "
                            "resolve the conflict, then commit", file_line=line)
    if path.suffix == ".py":
        return _percent_cells(text)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NotebookError(
            f"{name} is not valid notebook JSON (line {exc.lineno}): {exc.msg}; "
            "fix the file or re-save it from Jupyter",
            file_line=exc.lineno,
        ) from None
    except RecursionError:
        raise NotebookError(f"{name} is JSON nested too deeply to be a notebook; re-save it from Jupyter") from None
    if not isinstance(data, dict):
        data = {}
    _check_language(data, name)
    cells = data.get("cells")
    if data.get("nbformat") == 3 and cells is None and isinstance(data.get("worksheets"), list):
        cells = _v3_cells(data["worksheets"])
    if not isinstance(cells, list):
        version = data.get("nbformat")
        raise NotebookError(
            f"{name} is JSON but not a Jupyter notebook (no `cells` list"
            + (f"; nbformat {version} is not read, only 3 and 4" if isinstance(version, int) else "")
            + "); point the task at an .ipynb file, or re-save the notebook with a current Jupyter"
        )
    indexes: list[int] = []
    sources: list[str] = []
    raising: set[int] = set()
    skipped: dict[int, str] = {}
    for index, cell in enumerate(cells):
        if not isinstance(cell, dict):
            raise NotebookError(f"{name} cell {index + 1} is not a JSON object; re-save the notebook from Jupyter",
                                cell=index + 1)
        if cell.get("cell_type") != "code":
            continue
        text = cell.get("source", "")
        # nbformat allows a string or a list of lines that already end with '\n'.
        if isinstance(text, list) and all(isinstance(part, str) for part in text):
            text = "".join(text)
        elif not isinstance(text, str):
            raise NotebookError(
                f"{name} cell {index + 1} has a `source` that is neither text nor a list of lines; "
                "re-save the notebook from Jupyter",
                cell=index + 1,
            )
        metadata = cell.get("metadata")
        tags = metadata.get("tags") if isinstance(metadata, dict) else None
        if isinstance(tags, list) and "skip-execution" in tags:
            skipped[index] = text  # nbclient (papermill's engine) never runs it
            continue
        if isinstance(tags, list) and "raises-exception" in tags:
            raising.add(len(sources))
        indexes.append(index)
        sources.append(text)
    return CodeCells(indexes, sources, raising=frozenset(raising), skipped=skipped)


def _check_language(data: dict, name: str) -> None:
    """Refuse a notebook whose kernel is not Python, naming its language."""
    metadata = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    spec = metadata.get("kernelspec") if isinstance(metadata.get("kernelspec"), dict) else {}
    info = metadata.get("language_info") if isinstance(metadata.get("language_info"), dict) else {}
    language = spec.get("language") or info.get("name") or metadata.get("language")  # nbformat 3: metadata.language
    if not isinstance(language, str) or not language.strip() or language.strip().lower() == "python":
        return
    shown = _NAMES.get(language.strip().lower(), language.strip())
    kernel = spec.get("display_name") or spec.get("name")
    refused = f"{name} is a {shown} notebook" + (f" (kernel '{kernel}')" if isinstance(kernel, str) else "")
    raise NotebookError(f"{refused}; peach-tasks runs Python notebooks only: port the task to Python "
                        "or run it elsewhere")


def _v3_cells(worksheets: list) -> list:
    """nbformat 3's cells, upgraded as nbformat does: worksheets joined, a code cell's
    ``input`` is its source, heading cells are text."""
    cells: list = []
    for sheet in worksheets:
        for cell in (sheet.get("cells") if isinstance(sheet, dict) else None) or []:
            if isinstance(cell, dict) and cell.get("cell_type") == "code":
                cell = {"cell_type": "code", "source": cell.get("input", "")}
            elif isinstance(cell, dict):
                cell = {"cell_type": "markdown", "source": ""}
            cells.append(cell)
    return cells


def _percent_cells(text: str) -> CodeCells:
    """The code cells of a jupytext percent-format file. Text before the first ``# %%``
    (but a jupytext header, ``# ---`` to ``# ---``) is a cell of its own, as jupytext reads it."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    start = 0
    if lines and lines[0].rstrip() == "# ---":
        end = next((i for i in range(1, len(lines)) if lines[i].rstrip() == "# ---"), None)
        if end is not None:
            start = end + 1
    cells: list[tuple[bool, int, list[str]]] = []  # (is code, first file line, lines)
    current: tuple[bool, int, list[str]] = (True, start + 1, [])
    before_first = True  # text before the first marker is a cell only when it is not blank
    for number in range(start, len(lines)):
        line = lines[number]
        if _PERCENT_CELL.match(line):
            if not before_first or any(part.strip() for part in current[2]):
                cells.append(current)
            before_first = False
            current = (_PERCENT_TEXT.search(line) is None, number + 2, [])
            continue
        current[2].append(line)
    if not before_first or any(part.strip() for part in current[2]):
        cells.append(current)
    indexes, sources, file_lines = [], [], []
    for index, (is_code, first, body) in enumerate(cells):
        if not is_code:
            continue
        while body and not body[-1].strip():
            body = body[:-1]  # jupytext's blank lines between cells belong to no cell
        indexes.append(index)
        sources.append("\n".join(_COMMENTED_MAGIC.sub(r"\1\2", part) for part in body))
        file_lines.append(first)
    return CodeCells(indexes, sources, file_lines)
