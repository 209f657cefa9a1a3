"""The task process's own files, compiled once per environment instead of at every run.

``bootstrap.py`` and the helpers it loads (``bootstrap_io.py``, ``bootstrap_start.py``,
``bootstrap_cells.py``, ``displays.py``, ``displays_figures.py``, ``displays_pretty.py``,
``notebook_shell.py``, ``notebook_shell_values.py``) are compiled by the task's interpreter at every start: a
script is never cached by Python, and the helpers are read where a sandboxed run cannot write a ``__pycache__``, by an
interpreter that may not be the scheduler's (a ``.pyc`` is for one Python version). That is
about a fifth of a small task's start (4 ms for bootstrap.py, 3 for the magics' shell on a
quiet machine).

So when an organisation's environment is built (``environments.py``), its own interpreter
compiles them into ``<env>/share/peach-tasks/bytecode/NAME.bin``: one marshalled tuple
(Python version, source path, source bytes, code). The task process uses a record only if
all three still match the file it is about to run, byte for byte, else it compiles the
file as before: a scheduler upgraded since (or one installed elsewhere) runs its own code,
only slower. Nothing of a run can write there (the environment is read-only in the sandbox),
and each organisation's environment holds its own.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

BOOTSTRAP = Path(os.path.abspath(Path(__file__).with_name("bootstrap.py")))  # as the command line names it
CACHE_DIR = Path("share") / "peach-tasks" / "bytecode"  # under the environment's prefix (sys.prefix)
# What the task process may load, by the paths it loads them by: bootstrap.py finds its
# helpers beside its own path.
FILES = (BOOTSTRAP, *(BOOTSTRAP.with_name(name) for name in (
    "bootstrap_io.py", "bootstrap_start.py", "bootstrap_cells.py", "displays.py", "displays_figures.py",
    "displays_pretty.py", "notebook_shell.py", "notebook_shell_values.py", "notebook_shell_names.py")))

# ``python -I -c LAUNCH bootstrap.py ARGS...`` runs bootstrap.py as ``python -I bootstrap.py
# ARGS...`` would (sys.argv, __file__, __name__), from its record when that matches.
LAUNCH = """\
import sys, marshal
p = sys.argv[1]
with open(p, "rb") as f:
    s = f.read()
try:
    with open(sys.prefix + "/share/peach-tasks/bytecode/" + p.rpartition("/")[2] + ".bin", "rb") as f:
        v, w, t, c = marshal.loads(f.read())
except (OSError, ValueError, EOFError, TypeError):
    v = w = t = None
if (v, w, t) != (sys.version, p, s):
    c = compile(s, p, "exec", dont_inherit=True)
del sys.argv[0], v, w, t, s, f
__file__ = p
del p
exec(c)
"""

# Run by the environment's interpreter: ``python -I -c COMPILE OUT FILE...``. Each record is
# written whole, then renamed: a run reading one meanwhile gets the old one or the new one.
COMPILE = """\
import marshal, os, sys
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
for path in sys.argv[2:]:
    with open(path, "rb") as f:
        source = f.read()
    record = marshal.dumps((sys.version, path, source, compile(source, path, "exec", dont_inherit=True)))
    name = os.path.join(out, os.path.basename(path) + ".bin")
    with open(name + ".tmp", "wb") as f:
        f.write(record)
    os.replace(name + ".tmp", name)
"""
# Beside the records: the digest of the sources they were made from (``sources_digest``),
# which the scheduler compares without reading another Python's bytecode.
DIGEST_FILE = CACHE_DIR / "sources.sha256"


def task_argv(interpreter: Path | str) -> list[str]:
    """The command line of a task process running bootstrap.py in ``interpreter``."""
    return [str(interpreter), "-I", "-c", LAUNCH, str(BOOTSTRAP)]


def compile_command(interpreter: Path | str, prefix: Path) -> list[str]:
    """The command that fills ``prefix``'s cache (``prefix``: the environment being built)."""
    return [str(interpreter), "-I", "-c", COMPILE, str(prefix / CACHE_DIR), *map(str, FILES)]


@functools.lru_cache(maxsize=1)
def sources_digest() -> str:
    """What the records of this scheduler's files must have been made from (paths and bytes)."""
    digest = hashlib.sha256()
    for path in FILES:
        digest.update(str(path).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()
