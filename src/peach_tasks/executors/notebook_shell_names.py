"""The magics about the notebook's names, for the task process's shell (``notebook_shell.py``):
``%who``, ``%whos``, ``names = %who_ls`` and ``%reset [-f]`` as IPython has them, and
python-dotenv's ``%dotenv`` once ``%load_ext dotenv`` loaded it. Each takes the shell (its
namespace, its cells). Standard library only; loaded beside ``notebook_shell.py`` by
``bootstrap.py``.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any


def load_extension(shell: Any, name: str) -> None:
    """``%load_ext dotenv``: the package is imported as IPython imports it (missing from the
    task's dependencies: the same ModuleNotFoundError), and its magic then works."""
    import importlib

    importlib.import_module(name)
    shell.extensions.add(name)


def dotenv(shell: Any, line: str) -> None:
    """python-dotenv's ``%dotenv [-o] [-v] [PATH]``: the ``.env`` file found from the
    working folder up (PATH, default ``.env``) loaded into the environment, through the
    package's own functions, as its IPython extension does."""
    if "dotenv" not in shell.extensions:
        raise shell.usage_error("Line magic function `%dotenv` not found (load it first: %load_ext dotenv).")
    import shlex

    import dotenv  # type: ignore[import-not-found]

    words = shlex.split(line)
    override = any(w in ("-o", "--override") for w in words)
    verbose = any(w in ("-v", "--verbose") for w in words)
    paths = [w for w in words if not w.startswith("-")]
    try:
        path = dotenv.find_dotenv(paths[0] if paths else ".env", True, True)
    except OSError:
        print("cannot find .env file")
        return
    dotenv.load_dotenv(path, verbose=verbose, override=override)


def reset(shell: Any, line: str) -> None:
    """``%reset -f``: every name the notebook made removed, as IPython's reset empties its
    namespace (a module's ``__name__`` and IPython's own names stay: ``In``, ``Out``,
    ``_ih``, ``_oh``, ``_dh``), the output history with it. ``%reset -f out``
    only empties the output history; ``array`` removes the numpy arrays; ``in`` and
    ``dhist`` change nothing a run keeps. Without ``-f`` IPython asks for a confirmation; a
    kernel without input (papermill's) takes it as given, and so does a run."""
    words = line.split()
    parts = [w for w in words if not w.startswith("-")]
    namespace = shell.user_ns
    hidden = getattr(shell.cells, "hidden", {})
    out = hidden.get("Out")
    if not parts or "out" in parts:
        if parts and isinstance(out, dict):
            print(f"Flushing output cache ({len(out)} entries)")
        if isinstance(out, dict):
            out.clear()
        shell.cells.unders = ("", "", "")
        namespace.update({"_": "", "__": "", "___": ""})
        for name in [n for n in namespace if n[:1] == "_" and n[1:].isdigit()]:  # _N: the outputs' names
            del namespace[name]
    if "array" in parts and "numpy" in sys.modules:
        ndarray = sys.modules["numpy"].ndarray
        for name in [n for n, value in namespace.items() if isinstance(value, ndarray)]:
            del namespace[name]
    if not parts:
        kept = {"_ih", "_oh", "_dh"}  # _, _i and the like come back with the next cell, as in IPython
        for name in [n for n, value in namespace.items() if not n.startswith("__") and n not in kept
                     and not (n in hidden and hidden[n] is value)]:
            del namespace[name]


def who_ls(shell: Any, line: str) -> list:
    """``%who_ls [TYPE ...]``: the notebook's names, as IPython lists them: sorted, none
    starting with ``_``, nor the run's own ``In``, ``Out``, ``exit`` and ``quit`` (IPython's
    hidden ones) unless the notebook rebound them; with types, only values of those type names."""
    hidden = getattr(shell.cells, "hidden", {})
    names = sorted(name for name, value in shell.user_ns.items()
                   if not name.startswith("_") and not (name in hidden and hidden[name] is value))
    kinds = set(line.split())
    return [name for name in names if type(shell.user_ns[name]).__name__ in kinds] if kinds else names


def who(shell: Any, line: str) -> None:
    """``%who [TYPE ...]``: those names printed nine to a line, as IPython prints them."""
    names = who_ls(shell, line)
    if not names:
        print("No variables match your requested type." if line.split() else "Interactive namespace is empty.")
        return
    for count, name in enumerate(names, start=1):
        print(name + "\t", end=" ")
        if count % 9 == 0:
            print()
    print()


def whos(shell: Any, line: str) -> None:
    """``%whos [TYPE ...]``: IPython's table of the names, their types and a short view of
    each value (a length for dicts, lists and tuples; shape, size and bytes of an array)."""
    names = who_ls(shell, line)
    if not names:
        who(shell, line)
        return
    values_ = [shell.user_ns[name] for name in names]
    kinds = [type(value).__name__ for value in values_]
    name_width = max(len("Variable"), *map(len, names)) + 3
    kind_width = max(len("Type"), *map(len, kinds)) + 3
    print("Variable".ljust(name_width) + "Type".ljust(kind_width) + " Data/Info")
    print("-" * (name_width + kind_width + len("Data/Info") + 1))
    numpy = sys.modules.get("numpy")
    for name, value, kind in zip(names, values_, kinds):
        print(f"{name:<{name_width}}{kind:<{kind_width}}", end=" ")
        if kind in ("dict", "list", "tuple"):
            print(f"n={len(value)}")
        elif numpy is not None and isinstance(value, numpy.ndarray):
            shape = str(value.shape).replace(",", "").replace(" ", "x")[1:-1]
            size = value.size * value.itemsize
            summary = f"{shape}: {value.size} elems, type `{value.dtype}`, {size} bytes"
            if size < 100000:
                print(summary)
            else:
                print(summary, f"({size / 1024} kb)" if size < 1048576 else f"({size / 1048576} Mb)")
        else:
            try:
                text = str(value)
            except Exception:
                text = f"<object with id {id(value)} (str() failed)>"
            text = text.replace("\n", "\\n")
            print(text if len(text) < 50 else text[:25] + "<...>" + text[-25:])
